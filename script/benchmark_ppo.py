r"""Benchmark PPO (not a test): seconds per rollout and peak memory of the "separate", "adapters", "shared" layouts.

    python script/benchmark_ppo.py --reward_model_path output/reward_model
    python script/benchmark_ppo.py --reward_model_path output/reward_model --layouts separate shared
    python script/benchmark_ppo.py --reward_model_path output/reward_model --rollouts 4 --prompts 8 \\
        --response_length 32 -- --num_ppo_epochs 2          # flags after "--" go to train_rlhf.py
    # side by side with TRL 0.29.1's PPOTrainer (its own virtualenv), the same prompts, 3 runs each in turn:
    python script/benchmark_ppo.py --reward_model_path output/reward_model --rollouts 4 --repeats 3 \\
        --trl_baseline ../shared/bench/trl029_ppo.py --trl_python /path/to/trl029-venv/bin/python \\
        --hh_data ../shared/data/hh-rlhf-harmless-base-test.first1000.jsonl \\
        -- --num_ppo_epochs 1 --lora_r 8 --lora_alpha 16

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
import statistics
import sys
import tempfile
import time

from benchmark import check_paths, run_json, split_flags, spread  # script/benchmark.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(layout: str, options: argparse.Namespace, passthrough: list[str]) -> dict:
    """Run PPO in this process and return the measurements."""
    import resource

    import torch

    sys.path.insert(0, ROOT)
    import train_rlhf
    from rlhfkit.ppo.trainer import PPOTrainer

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
    from rlhfkit.args import parse_args

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


def hh_prompt_file(hh_path: str, folder: str) -> str:
    """The prompts the TRL baseline trains on (the first human turn of the first 64 rows of an hh-rlhf jsonl), as a
    prompt file for `train_rlhf.py`; returns its path.
    """
    rows = []
    with open(hh_path) as f:
        for line in list(f)[:64]:
            first_turn = json.loads(line)["chosen"].split("\n\nHuman: ")[1].split("\n\nAssistant:")[0]
            rows.append({"prompt": [{"role": "user", "content": first_turn}]})
    path = os.path.join(folder, "prompts.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def run_layout(layout: str, argv: list[str], passthrough: list[str]) -> dict:
    return run_json([sys.executable, os.path.abspath(__file__), *argv, "--child", layout, "--", *passthrough], layout)


def run_trl(options: argparse.Namespace) -> dict:
    """One run of the TRL baseline script in its own virtualenv; it prints one JSON line."""
    cmd = [options.trl_python, options.trl_baseline, options.model_name_or_path, str(options.rollouts), "lora",
           options.hh_data]
    r = run_json(cmd, "the TRL baseline", prefix="")
    return {"layout": "TRL", "seconds_per_rollout": [r["s_per_rollout"]] * r["rollouts"],
            "peak_bytes": r["peak_rss_mb"] * 2**20, "memory_kind": "peak RSS", "device": "cpu"}


def main(argv=None):
    argv, passthrough = split_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--reward_model_path", default="output/reward_model")
    parser.add_argument("--train_data_path", default="data_example/data.jsonl")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts per layout")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout (per_device_train_batch_size)")
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--layouts", nargs="+", default=["separate", "adapters", "shared"],
                        help="layouts to time, space- or comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each layout, in turn (median and min-max)")
    parser.add_argument("--trl_baseline", help="also run this TRL PPO script in turn with the layouts "
                        "(../shared/bench/trl029_ppo.py: TRL 0.29.1, LoRA r8); needs --hh_data and --trl_python")
    parser.add_argument("--trl_python", default=sys.executable, help="the python of the baseline's own virtualenv")
    parser.add_argument("--hh_data", help="hh-rlhf jsonl; the first human turn of its first 64 rows are the prompts "
                        "of every run (as in the baseline), in place of --train_data_path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print("BENCH " + json.dumps(child(options.child, options, passthrough)), flush=True)
        return
    if options.trl_baseline and not options.hh_data:
        parser.error("--trl_baseline needs --hh_data (the baseline's prompts)")
    check_paths(parser, options, ["model_name_or_path", "reward_model_path", "train_data_path", "trl_baseline",
                                  "trl_python", "hh_data"])
    layouts = [name for arg in options.layouts for name in arg.split(",") if name]
    results = []
    with tempfile.TemporaryDirectory(prefix="ppo_bench_") as folder:
        if options.hh_data:
            prompts = hh_prompt_file(options.hh_data, folder)
            argv = [*argv, "--train_data_path", prompts]
        for repeat in range(options.repeats):
            for layout in (["TRL"] if options.trl_baseline else []) + layouts:
                print(f"[benchmark] run {repeat + 1}/{options.repeats}: {layout}", flush=True)
                results.append(run_trl(options) if layout == "TRL" else run_layout(layout, argv, passthrough))
    print(f"\nPPO benchmark: {options.model_name_or_path}, LoRA, {options.prompts} prompts x "
          f"{options.response_length} new tokens per rollout, {options.rollouts} rollouts per run, "
          f"{options.repeats} run(s) per row in turn, device {results[0]['device']}")
    names = list(dict.fromkeys(r["layout"] for r in results))
    base = {}
    print("| layout | s/rollout, median (min-max) | peak memory, GiB | vs TRL (time, memory) | model weights, GiB |")
    print("|---|---|---|---|---|")
    for name in names:
        runs = [r for r in results if r["layout"] == name]
        times = [sum(r["seconds_per_rollout"]) / len(r["seconds_per_rollout"]) for r in runs]
        peaks = [r["peak_bytes"] / 2**30 for r in runs]
        if name == "TRL":
            base = {"time": statistics.median(times), "peak": statistics.median(peaks)}
        ratio = (f"{statistics.median(times) / base['time']:.2f}x, {statistics.median(peaks) / base['peak']:.2f}x"
                 if base else "")
        weights = f"{runs[0]['weight_bytes'] / 2**30:.2f}" if "weight_bytes" in runs[0] else ""
        print(f"| {name} | {spread(times)} | {spread(peaks)} | {ratio} | {weights} |")
    print(f"(s/rollout: all rollouts of a run, the first included; peak memory = {results[0]['memory_kind']}; "
          f"training scores per rollout: "
          + "; ".join(f"{r['layout']} " + " ".join(f"{s:.2f}" for s in r.get("scores", [])) for r in results
                      if r["layout"] != "TRL")[:2000] + ")")


if __name__ == "__main__":
    main()
