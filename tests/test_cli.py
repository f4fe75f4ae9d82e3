"""What a user sees before any training: flag parsing, precision defaults, refusals and early data errors."""

import os
import time

import pytest
import torch
from conftest import ROOT, base_flags, write_jsonl

import reward_model
import train_rlhf
from common_args import CommonArgs
from rlhf_args.dpo_config import DPOConfig
from rlhfkit.args import parse_args
from rlhfkit.errors import ConfigError

ROW = {"prompt": "q", "chosen": "good", "rejected": "bad"}


def test_flags_override_config_defaults():
    args, config = parse_args((CommonArgs, DPOConfig), ["--beta", "0.2", "--lora_r", "4", "--output_dir", "x"])
    assert config.beta == 0.2 and args.lora_r == 4
    assert DPOConfig(output_dir="x").beta == 0.1  # the default in rlhf_args/dpo_config.py
    assert config.report_to == ["tensorboard"]  # the default, when --report_to is not given


def test_unknown_flag_is_an_error_that_names_it():
    with pytest.raises(ConfigError, match=r"unknown flag\(s\): --betta 0.2"):
        parse_args((CommonArgs, DPOConfig), ["--betta", "0.2"])


def test_unknown_method_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown --rlhf_type 'PPX'; choose one of: DPO"):
        train_rlhf.main(["--rlhf_type", "PPX"])


def test_precision_is_fp32_on_cpu_and_follows_the_gpu(monkeypatch):
    config = DPOConfig(output_dir="x")
    assert (config.bf16, config.fp16, config.activation_checkpointing) == (False, False, False)
    assert DPOConfig(output_dir="x", activation_checkpointing=True).activation_checkpointing is True

    from rlhf_args.base_config import resolve_device_defaults

    class Fake:  # the fields resolve_device_defaults reads, as a GPU run would have them
        def __init__(self, **kw):
            self.bf16, self.fp16, self.use_cpu = None, None, False
            self.activation_checkpointing = self.gradient_checkpointing = None
            self.__dict__.update(kw)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16_ok, expected in ((True, (True, False)), (False, (False, True))):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda ok=bf16_ok: ok)
        fake = Fake()
        resolve_device_defaults(fake)
        assert (fake.bf16, fake.fp16, fake.activation_checkpointing) == (*expected, True)
    fake = Fake(bf16=False, fp16=False)  # the user's choice wins
    resolve_device_defaults(fake)
    assert (fake.bf16, fake.fp16) == (False, False)
    fake = Fake(use_cpu=True)
    resolve_device_defaults(fake)
    assert (fake.bf16, fake.fp16, fake.activation_checkpointing) == (False, False, False)


@pytest.mark.parametrize("script", [train_rlhf, reward_model])
def test_bad_data_stops_before_any_model_is_loaded(script, tiny_model_dir, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "d.jsonl", [ROW, ROW, '{"prompt": "q", "chosen": ', ROW])
    where = "rlhfkit.methods.offline" if script is train_rlhf else "reward_model"  # the module that loads the policy
    monkeypatch.setattr(f"{where}.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "out"
    start = time.time()
    with pytest.raises(ValueError, match=r"d.jsonl:3: field '\(row\)': malformed JSON"):
        script.main(base_flags(tiny_model_dir, data, out))
    assert time.time() - start < 10
    assert not out.exists() or not os.listdir(out)


def test_non_empty_output_dir_is_never_overwritten(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint true"):
        train_rlhf.main(base_flags(tiny_model_dir, write_jsonl(tmp_path / "d.jsonl", [ROW]), out))
    assert (out / "precious.txt").read_text() == "keep me"


def test_qlora_with_zero3_is_refused_naming_zero2(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    from rlhfkit.model_folders import check_train_mode

    args, config = parse_args((CommonArgs, DPOConfig), ["--train_mode", "qlora", "--output_dir", "x"])
    with pytest.raises(ValueError, match="deepspeed_zero2.yaml"):
        check_train_mode(args, config)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    check_train_mode(args, config)  # ZeRO-2 is fine


def test_missing_demo_model_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ folder here
    data = write_jsonl(tmp_path / "d.jsonl", [ROW])
    with pytest.raises(FileNotFoundError, match="python -m rlhfkit.demo_model"):
        train_rlhf.main(["--train_data_path", data, "--output_dir", str(tmp_path / "out")])


def test_help_shows_the_config_files_comments(capsys):
    with pytest.raises(SystemExit):
        parse_args((CommonArgs, DPOConfig), ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "KL strength: higher keeps the policy closer to the reference" in text
    assert "LoRA rank (default: 16)" in text


def test_adapter_folder_as_model_is_refused_and_merge_makes_a_model(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.merge_adapter import merge_adapter
    from rlhfkit.model_folders import check_model_path

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    with pytest.raises(ValueError, match=f"python -m rlhfkit.merge_adapter {adapter} {adapter}_merged"):
        check_model_path(str(adapter))
    merged = merge_adapter(str(adapter), str(tmp_path / "merged"))
    check_model_path(merged)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = model.eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)


def test_importing_the_log_module_changes_nothing():
    """rlhfkit.log filters the libraries' known-harmless messages only when `quiet_libraries()` is called (every entry
    script calls it before its other imports); importing the module installs no filter and loads no library.
    """
    import subprocess
    import sys

    code = ("import logging, os, sys, warnings\n"
            "before = list(warnings.filters)\n"
            "import rlhfkit.log\n"
            "assert warnings.filters == before, 'a warnings filter'\n"
            "assert 'TRL_EXPERIMENTAL_SILENCE' not in os.environ, 'an environment variable'\n"
            "assert not logging.getLogger('DeepSpeed').filters, 'a logging filter'\n"
            "assert not {'datasets', 'transformers', 'torch'} & set(sys.modules), 'a library loaded'\n"
            "rlhfkit.log.quiet_libraries()\n"
            "assert os.environ['TRL_EXPERIMENTAL_SILENCE'] == '1' and logging.getLogger('DeepSpeed').filters\n"
            "assert any(f[1] and 'is_gradient_checkpointing' in f[1].pattern for f in warnings.filters)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRL_EXPERIMENTAL_SILENCE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
