"""Benchmark PPO (not a test): seconds per rollout and peak memory of the "separate", "adapters", "shared" layouts.

    python script/benchmark_ppo.py --reward_model_path output/reward_model
    python script/benchmark_ppo.py --reward_model_path output/reward_model --layouts separate shared
    python script/benchmark_ppo.py --reward_model_path output/reward_model --rollouts 4 --prompts 8 \\
        --response_length 32 -- --num_ppo_epochs 2          # flags after "--" go to train_rlhf.py

Each layout runs `train_rlhf.py --rlhf_type PPO --train_mode lora` in its own process (so that peak memory is per
layout) on the prompts of `--train_data_path`, for a fixed number of rollouts, with no evaluation and no
checkpoints (outputs under /tmp). A rollout's time covers generation, the no-grad forwards, scoring and its
num_mini_batches x num_ppo_epochs optimizer steps. Weights: the bytes of every tensor of the policy, value, reference
and reward models, shared ones counted once. Peak memory: the process's peak RSS on CPU,
`torch.cuda.max_memory_allocated()` on GPU. With a LoRA reward model trained on the same base (reward_model.py's
default), the adapters layout holds one copy of the base weights; the separate layout holds three (policy +
reference via the disabled adapter, value model, reward model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(layout: str, options: argparse.Namespace, passthrough: list[str]) -> dict:
    """Run PPO in this process and return the measurements."""
    import resource

    import torch

    sys.path.insert(0, ROOT)
    import train_rlhf
    from utils.ppo_trainer import PPOTrainer

    starts = []
    make_rollout = PPOTrainer._make_rollout

    def timed(self, rows):
        starts.append(time.perf_counter())
        return make_rollout(self, rows)

    train, ends = PPOTrainer.train, []

    def timed_train(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        ends.append(time.perf_counter())  # before saving
        return result

    PPOTrainer._make_rollout, PPOTrainer.train = timed, timed_train
    out = tempfile.mkdtemp(prefix=f"ppo_bench_{layout}_")
    flags = ["--rlhf_type", "PPO", "--train_mode", "lora", "--model_mode", layout,
             "--model_name_or_path", options.model_name_or_path, "--reward_model_path", options.reward_model_path,
             "--train_data_path", options.train_data_path, "--output_dir", out,
             "--per_device_train_batch_size", str(options.prompts), "--response_length", str(options.response_length),
             "--eval_split_size", "0", "--eval_on_start", "false", "--save_strategy", "no", "--report_to", "none",
             "--disable_tqdm", "true", "--logging_steps", "1", *passthrough]
    from common_args import CommonArgs
    from rlhf_args.ppo_config import PPOConfig
    from utils.args import parse_args

    steps = parse_args((CommonArgs, PPOConfig), flags)[1].optimizer_steps_per_rollout  # M x E
    trainer = train_rlhf.main(flags + ["--max_steps", str(options.rollouts * steps)])
    bounds = starts + ends
    per_rollout = [b - a for a, b in zip(bounds, bounds[1:])]
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
    storages = {}  # weights held by all the models (policy, value, reference, reward), shared tensors counted once
    for module in (trainer.model, trainer.ref_model, trainer.reward_model):
        for t in list(module.parameters()) + list(module.buffers()) if module is not None else []:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return {"layout": layout, "rollouts": len(per_rollout), "optimizer_steps_per_rollout": steps,
            "seconds_per_rollout": per_rollout, "peak_bytes": peak,
            "memory_kind": "cuda max_memory_allocated" if torch.cuda.is_available() else "peak RSS",
            "weight_bytes": sum(storages.values()),
            "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "scores": scores, "device": "cuda" if torch.cuda.is_available() else "cpu", "output_dir": out}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--reward_model_path", default="output/reward_model")
    parser.add_argument("--train_data_path", default="data_example/data.jsonl")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts per layout")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout (per_device_train_batch_size)")
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--layouts", nargs="+", default=["separate", "adapters", "shared"],
                        help="layouts to time, space- or comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print("BENCH " + json.dumps(child(options.child, options, passthrough)), flush=True)
        return
    results = []
    for layout in [name for arg in options.layouts for name in arg.split(",") if name]:
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", layout, "--", *passthrough]
        print(f"[benchmark] {layout}: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
        if done.returncode or not lines:
            sys.exit(f"[benchmark] {layout} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(lines[-1][6:]))
    print(f"\nPPO benchmark: {options.model_name_or_path}, LoRA, {options.prompts} prompts x "
          f"{options.response_length} new tokens per rollout, device {results[0]['device']}")
    print(f"{'layout':<10} {'rollouts':>8} {'opt steps/rollout':>17} {'s/rollout (all)':>16} "
          f"{'s/rollout (2nd+)':>16} {'weights':>9} {'peak memory':>12}  scores per rollout")
    for r in results:
        times = r["seconds_per_rollout"]
        later = times[1:] or times
        print(f"{r['layout']:<10} {r['rollouts']:>8} {r['optimizer_steps_per_rollout']:>17} "
              f"{sum(times) / len(times):>16.1f} {sum(later) / len(later):>16.1f} "
              f"{r['weight_bytes'] / 2**30:>5.2f} GiB {r['peak_bytes'] / 2**30:>8.2f} GiB  "
              f"{', '.join(f'{s:.2f}' for s in r['scores'])}")
    print(f"(weights = bytes of all model tensors, shared ones once; peak memory = {results[0]['memory_kind']}, "
          f"which adds activations, logits over the vocabulary and the libraries; curves: "
          f"{', '.join(r['output_dir'] + '/online_curves.png' for r in results)})")


if __name__ == "__main__":
    main()
