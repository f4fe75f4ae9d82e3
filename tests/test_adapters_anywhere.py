"""Outputs a user can take anywhere: adapters record an absolute base path and load from any folder; a moved base
gives one clear error that `python -m rlhfkit.rebase_adapter` fixes; `rlhfkit.merge_adapter` checks each merge (policy,
reward model, DoRA, PPO value adapter) and refuses a wrong one. Also `check_lora_targets` and the PPO value model
under `--value_train_mode full`.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, base_flags

import reward_model
import train_rlhf
from rlhfkit.errors import ConfigError, PathNotFoundError, run_cli
from rlhfkit.model_folders import check_lora_targets, resolve_checkpoint
from rlhfkit.rebase_adapter import rebase_adapter

FAST = ("--max_steps", "2", "--eval_split_size", "0", "--per_device_train_batch_size", "2", "--learning_rate", "2e-2",
        "--lora_r", "4", "--lora_alpha", "8")


@pytest.fixture(scope="module")
def runs(tiny_model_dir, easy_data, tmp_path_factory):
    """A DPO LoRA adapter, a DPO DoRA adapter and a LoRA reward model, each trained for 2 steps with the base given as
    the relative path `models/tiny` (the working directory is the run's folder during training).
    """
    root = tmp_path_factory.mktemp("anywhere")
    shutil.copytree(tiny_model_dir, root / "models" / "tiny")
    train, _ = easy_data
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        train_rlhf.main(base_flags("models/tiny", train, "dpo", "--rlhf_type", "DPO", *FAST))
        train_rlhf.main(base_flags("models/tiny", train, "dora", "--rlhf_type", "DPO", "--use_dora", "true", *FAST))
        reward_model.main(base_flags("models/tiny", train, "rm", *FAST, "--degenerate_negatives_ratio", "0",
                                     "--probe_prompts", "0"))
    return {"root": root, "base": str(root / "models" / "tiny"), "dpo": str(root / "dpo"), "dora": str(root / "dora"),
            "rm": str(root / "rm")}


def recorded_base(adapter_dir):
    return json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["base_model_name_or_path"]


def test_adapters_record_an_absolute_base_and_load_from_another_folder(runs, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    for name in ("dpo", "rm"):
        assert recorded_base(runs[name]) == runs["base"]
        settings = json.load(open(os.path.join(runs[name], "run_config.json")))
        assert settings["args"]["model_name_or_path"] == runs["base"]
    monkeypatch.chdir(tmp_path)  # the folder the runs were trained in is not the working directory any more
    policy = AutoPeftModelForCausalLM.from_pretrained(runs["dpo"])
    assert torch.isfinite(policy(torch.tensor([[1, 2, 3]])).logits).all()
    scorer = AutoPeftModelForSequenceClassification.from_pretrained(runs["rm"], num_labels=1)
    assert scorer(torch.tensor([[1, 2, 3]])).logits.shape == (1, 1)
    assert resolve_checkpoint(runs["rm"]) == (runs["base"], runs["rm"], "SEQ_CLS")
    assert resolve_checkpoint(runs["base"]) == (runs["base"], None, "CAUSAL_LM")


def test_relative_base_of_older_outputs_still_resolves(runs, tmp_path, monkeypatch):
    adapter = tmp_path / "old"
    shutil.copytree(runs["dpo"], adapter)
    config = json.load(open(adapter / "adapter_config.json"))
    config["base_model_name_or_path"] = "models/tiny"  # relative to the folder training ran in
    json.dump(config, open(adapter / "adapter_config.json", "w"))
    monkeypatch.chdir(runs["root"])
    assert resolve_checkpoint(str(adapter)).base == runs["base"]
    config["base_model_name_or_path"] = os.path.relpath(runs["base"], adapter)  # relative to the adapter's folder
    json.dump(config, open(adapter / "adapter_config.json", "w"))
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(str(adapter)).base == runs["base"]


def test_moved_base_gives_the_documented_error_and_rebase_fixes_it(runs, tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM

    from rlhfkit import merge_adapter

    adapter, old_base, new_base = tmp_path / "adapter", tmp_path / "base", tmp_path / "base_moved"
    shutil.copytree(runs["dpo"], adapter)
    shutil.copytree(runs["base"], old_base)
    config = json.load(open(adapter / "adapter_config.json"))
    json.dump({**config, "base_model_name_or_path": str(old_base)}, open(adapter / "adapter_config.json", "w"))
    original = (adapter / "adapter_config.json").read_text()
    os.rename(old_base, new_base)

    with pytest.raises(PathNotFoundError) as error:
        resolve_checkpoint(str(adapter))
    message = str(error.value)
    assert f"the LoRA adapter {adapter} was trained on the base model '{old_base}'" in message
    assert f"python -m rlhfkit.rebase_adapter {adapter} NEW_BASE_DIR" in message and "--base_model_path" in message
    assert "\n" not in message  # one line
    with pytest.raises(SystemExit) as exit_status:  # the CLI prints it as one error line, no Hub error
        run_cli(merge_adapter.main, [str(adapter), str(tmp_path / "merged")])
    assert exit_status.value.code == 2
    assert "error: the LoRA adapter" in capsys.readouterr().err and not (tmp_path / "merged").exists()

    done = subprocess.run([sys.executable, "-m", "rlhfkit.rebase_adapter", str(adapter),
                           os.path.relpath(new_base, ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert recorded_base(adapter) == str(new_base)  # made absolute
    assert (adapter / "adapter_config.json.bak").read_text() == original  # what training recorded is kept
    assert torch.isfinite(AutoPeftModelForCausalLM.from_pretrained(str(adapter))(torch.tensor([[1, 2]])).logits).all()
    with pytest.raises(PathNotFoundError, match="not a model folder"):
        rebase_adapter(str(adapter), str(tmp_path / "nowhere"))


def adapter_changes_outputs(adapter_dir):
    """Largest |adapter model - base model| output on the merge examples: the check below is only meaningful if the
    trained adapter moves the outputs by far more than the tolerance.
    """
    from transformers import AutoTokenizer

    from rlhfkit.merge_adapter import example_inputs, model_outputs
    from rlhfkit.model import load_checkpoint

    checkpoint = resolve_checkpoint(adapter_dir)
    inputs = example_inputs(AutoTokenizer.from_pretrained(adapter_dir))
    model = load_checkpoint(checkpoint)
    with_adapter = model_outputs(model, inputs)
    with model.disable_adapter():
        without = model_outputs(model, inputs)
    return max((a - b).abs().max().item() for a, b in zip(with_adapter, without))


@pytest.mark.parametrize("name", ["dpo", "dora", "rm"])
def test_merge_equals_the_adapter_model(runs, tmp_path, capsys, name):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.merge_adapter import example_inputs, merge_adapter, model_outputs
    from rlhfkit.merge_adapter import main as merge_main
    from rlhfkit.model import load_checkpoint

    assert adapter_changes_outputs(runs[name]) > 1e-2  # the adapter matters: a merge that lost it would be refused
    out = merge_adapter(runs[name], str(tmp_path / "merged"))
    said = capsys.readouterr().out
    assert f"[merge] check: max |{'score' if name == 'rm' else 'logit'} difference|" in said
    assert re.search(r"difference\| \S+ on 4 examples \(tolerance \S+, fp32\): ok", said)
    assert os.path.isfile(os.path.join(out, "model.safetensors")) and not os.path.exists(f"{out}/adapter_config.json")
    assert AutoTokenizer.from_pretrained(out).chat_template  # tokenizer and chat template saved with it
    model_cls = AutoModelForSequenceClassification if name == "rm" else AutoModelForCausalLM
    merged = model_cls.from_pretrained(out, **({"num_labels": 1} if name == "rm" else {})).eval()
    inputs = example_inputs(AutoTokenizer.from_pretrained(out))
    expected = model_outputs(load_checkpoint(resolve_checkpoint(runs[name])), inputs)
    for got, want in zip(model_outputs(merged, inputs), expected):
        assert torch.allclose(got, want, atol=1e-4)
    if name == "dpo":  # bf16 weights: the fp32 merge is checked, then the cast weights with bf16's tolerance
        from safetensors import safe_open

        out = merge_main([runs[name], str(tmp_path / "bf16"), "--dtype", "bf16"])
        said = capsys.readouterr().out
        assert re.search(r"fp32\): ok\n.*check: max \|logit difference\| \S+ on 4 examples \(tolerance \S+, bf16\): ok",
                         said)
        with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
            assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16


def test_a_merge_that_does_not_match_is_refused_and_nothing_is_written(runs, tmp_path, monkeypatch):
    from rlhfkit import merge_adapter

    original = merge_adapter.merge_weights

    def tampered(model):
        merged = original(model)
        with torch.no_grad():
            merged.model.layers[0].self_attn.q_proj.weight.add_(0.5)
        return merged

    monkeypatch.setattr(merge_adapter, "merge_weights", tampered)
    with pytest.raises(ConfigError, match="differ from the adapter model's .* nothing was written"):
        merge_adapter.merge_adapter(runs["dpo"], str(tmp_path / "merged"))
    assert os.listdir(tmp_path) == []  # no output folder, no half-written staging folder


def test_ppo_value_adapter_merges_into_a_scorer_with_its_value_head(tiny_model_dir, tmp_path):
    """PPO's adapters layout saves output_dir/value/: a causal-LM LoRA adapter + value_head.safetensors."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.merge_adapter import merge_adapter

    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                       task_type="CAUSAL_LM"))
    value_dir = tmp_path / "value"
    policy.save_pretrained(str(value_dir))
    head = torch.randn(1, policy.config.hidden_size)
    save_file({"weight": head}, str(value_dir / "value_head.safetensors"))
    assert resolve_checkpoint(str(value_dir)).task_type == "SEQ_CLS"

    out = merge_adapter(str(value_dir), str(tmp_path / "merged"))
    merged = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():  # PPO's value of the last token: value_head(backbone with the value adapter)
        hidden = policy.eval().get_base_model().model(input_ids=ids).last_hidden_state
        assert torch.allclose(merged(input_ids=ids).logits, hidden[:, -1] @ head.T, atol=1e-5)


def test_value_model_trains_every_weight_with_value_train_mode_full(runs, tmp_path):
    """`--value_train_mode full` with a LoRA reward model: the merged value model must train as a whole."""
    from common_args import CommonArgs
    from rlhf_args.ppo_config import PPOConfig
    from rlhfkit.args import parse_args
    from rlhfkit.model import load_tokenizer, load_value_model

    args, config = parse_args((CommonArgs, PPOConfig), base_flags(runs["base"], "unused.jsonl", tmp_path / "o",
                                                                   "--rlhf_type", "PPO", "--value_train_mode", "full"))
    tokenizer = load_tokenizer(args.model_name_or_path)
    value = load_value_model(runs["rm"], args, config, tokenizer, "full")
    value(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.sum().backward()
    frozen = [n for n, p in value.named_parameters() if not p.requires_grad or p.grad is None]
    assert not frozen and len(list(value.parameters())) > 10


def test_check_lora_targets_reads_the_safetensors_headers(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    check_lora_targets(tiny_model_dir, "all-linear")
    check_lora_targets(tiny_model_dir, "q_proj, v_proj,self_attn.o_proj")
    with pytest.raises(ConfigError) as error:
        check_lora_targets(tiny_model_dir, "q_proj,qkv_proj,c_attn")
    message = str(error.value)
    assert "qkv_proj, c_attn names no module" in message and "q_proj" not in message.split("names")[0]
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in message.split("names")[1]

    sharded = tmp_path / "sharded"  # a sharded checkpoint: the index names the files
    sharded.mkdir()
    for part, name in enumerate(("attn.c_attn", "mlp.c_fc"), 1):
        shard = str(sharded / f"model-0000{part}-of-00002.safetensors")
        save_file({f"transformer.h.0.{name}.weight": torch.zeros(2, 2)}, shard)
    json.dump({"weight_map": {"transformer.h.0.attn.c_attn.weight": "model-00001-of-00002.safetensors",
                              "transformer.h.0.mlp.c_fc.weight": "model-00002-of-00002.safetensors"}},
              open(sharded / "model.safetensors.index.json", "w"))
    check_lora_targets(str(sharded), "c_attn,c_fc")
    with pytest.raises(ConfigError, match="q_proj names no module .* c_attn, c_fc"):
        check_lora_targets(str(sharded), "q_proj")
