"""Two processes on CPU under the repo's own accelerate + DeepSpeed yaml files (ZeRO-2 and ZeRO-3).

Only the process count is overridden on the command line; the yaml files leave precision to the training
config, which picks fp32 on CPU. (`accelerate launch --cpu --num_processes 2` would silently run ONE process,
so the DeepSpeed yaml is what makes this distributed.)
"""

import json

import pytest
import torch
from conftest import base_flags, easy_pairs, launch_two_ranks, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


@pytest.mark.parametrize("yaml, mode", [("deepspeed_zero2.yaml", "lora"), ("deepspeed_zero3.yaml", "full")])
def test_dpo_runs_on_two_ranks_and_saves_a_loadable_model(yaml, mode, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(16))
    out = tmp_path / "out"
    done = launch_two_ranks(yaml, base_flags(tiny_model_dir, data, out, "--train_mode", mode, "--max_steps", "2",
                                             "--eval_split_size", "0"))
    assert done.returncode == 0, done.stderr[-3000:]

    assert json.load(open(out / "run_config.json"))["world_size"] == 2  # both ranks joined the process group
    assert [e["step"] for e in json.load(open(out / "trainer_state.json"))["log_history"] if "loss" in e] == [1, 2]
    if mode == "full":  # ZeRO-3 shards the weights; the save must gather them back whole
        model = AutoModelForCausalLM.from_pretrained(out)
        assert model.model.embed_tokens.weight.shape == (model.config.vocab_size, 64)
    else:
        from peft import PeftModel

        adapter = load_file(out / "adapter_model.safetensors")
        assert adapter and all(t.numel() > 0 for t in adapter.values())
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
