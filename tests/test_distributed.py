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

NOISE = ("Failed to load CPU gemm_4bit_forward", "Setting accelerator to CPU", "is_gradient_checkpointing",
         "torch.distributed.all_gather_into_tensor` is deprecated", "Tokenizing train dataset", "Loading weights",
         "TRLExperimentalWarning")


@pytest.mark.parametrize("yaml, mode", [("deepspeed_zero2.yaml", "lora"), ("deepspeed_zero3.yaml", "full")])
def test_dpo_runs_on_two_ranks_and_saves_a_loadable_model(yaml, mode, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(16))
    out = tmp_path / "out"
    done = launch_two_ranks(yaml, base_flags(tiny_model_dir, data, out, "--train_mode", mode, "--max_steps", "2",
                                             "--eval_split_size", "0"))
    assert done.returncode == 0, done.stderr[-3000:]

    assert json.load(open(out / "run_config.json"))["world_size"] == 2  # both ranks joined the process group
    output = done.stdout + done.stderr
    for noise in NOISE:  # known-harmless library messages are filtered (rlhfkit/log.py)
        assert noise not in output, noise
    own = [line for line in done.stdout.splitlines() if line.startswith(("[data]", "[DPO]", "[run health]"))]
    assert own and len(own) == len(set(own)), own  # the toolkit's own lines come from rank 0 only
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


def test_two_machines_on_localhost_train_one_model(tiny_model_dir, tmp_path):
    """Two `accelerate launch` processes, machine_rank 0 and 1, one process each, under the multi-node ZeRO-3 file
    with the standard launcher (what script/slurm_multinode.sh starts on each node) train one DPO model together.
    """
    import os
    import socket
    import subprocess
    import sys

    from conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(16))
    out = tmp_path / "out"
    flags = base_flags(tiny_model_dir, data, out, "--max_steps", "2", "--eval_split_size", "0")
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    machines = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         os.path.join("ds_config", "deepspeed_zero3_multinode.yaml"), "--num_machines", "2", "--num_processes", "2",
         "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
         "train_rlhf.py", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    results = [m.communicate(timeout=600) for m in machines]
    for machine, (_, err) in zip(machines, results):
        assert machine.returncode == 0, err[-3000:]

    assert json.load(open(out / "run_config.json"))["world_size"] == 2
    assert [e["step"] for e in json.load(open(out / "trainer_state.json"))["log_history"] if "loss" in e] == [1, 2]
    from peft import PeftModel

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.slow
def test_zero3_runs_back_to_back_all_exit_cleanly(tiny_model_dir, tmp_path):
    """Five ZeRO-3 runs in a row, the condition under which a rank once aborted at exit (`terminate called without an
    active exception`, exit -6): every launch must exit 0 with no abort message, and every run must save its model.
    """
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(16))
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        done = launch_two_ranks("deepspeed_zero3.yaml", base_flags(
            tiny_model_dir, data, out, "--train_mode", "full", "--max_steps", "2", "--eval_split_size", "0"))
        assert done.returncode == 0, (attempt, done.stderr[-3000:])
        assert "terminate called" not in done.stderr, attempt
        assert (out / "model.safetensors").exists(), attempt
