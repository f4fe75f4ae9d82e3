"""Benchmark every method (not a test): seconds per optimizer step and peak memory, one process per row.

    python script/benchmark.py                                   # every row below, on the demo model
    python script/benchmark.py --methods DPO PPO --train_modes lora qlora
    python script/benchmark.py --model_name_or_path MODEL --steps 6 -- --bf16 true   # flags after "--" go to every row

A row runs the method's own entry point (reward_model.py, train_rlhf.py, train_gkd.py) with its default data and
settings, except: `--max_steps`, batch size, no evaluation, no checkpoints, outputs under /tmp (deleted). PPO runs 1
PPO epoch and 1 mini-batch, so that each of its optimizer steps is one rollout (generation, scoring, the no-grad
forwards and the update); RLOO and GRPO generate on every step too (TRL's defaults). GKD's teacher is the student's
own starting model. Online methods score with `--reward_model_path`, or with a LoRA reward model this script trains
for one step first (a timing fixture, not a useful judge). Times: the median of the steps after the first (the
first pays for warm-up), each step measured from the end of the previous one, so it includes data loading and, for
the online methods, generation. Memory: the process's peak RSS on CPU (which includes loading the weights and the
libraries, and freed memory the allocator keeps), `torch.cuda.max_memory_allocated()` on GPU. Prints a Markdown
table; `--json FILE` also writes every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_MODES = ("full", "lora", "qlora")
# method -> (script, flags, train modes, layouts); layouts are PPO's --model_mode values (None: not PPO)
ROWS = {
    "reward model": ("reward_model.py", ["--probe_prompts", "0"], ALL_MODES, [None]),
    "DPO": ("train_rlhf.py", ["--rlhf_type", "DPO"], ALL_MODES, [None]),
    "SimPO": ("train_rlhf.py", ["--rlhf_type", "SimPO"], ALL_MODES, [None]),
    "KTO": ("train_rlhf.py", ["--rlhf_type", "KTO"], ALL_MODES, [None]),
    "SFT": ("train_rlhf.py", ["--rlhf_type", "SFT"], ALL_MODES, [None]),
    "PPO": ("train_rlhf.py", ["--rlhf_type", "PPO", "--num_ppo_epochs", "1", "--num_mini_batches", "1"], ALL_MODES,
            ["separate", "adapters", "shared"]),
    "RLOO": ("train_rlhf.py", ["--rlhf_type", "RLOO"], ALL_MODES, [None]),
    "GRPO": ("train_rlhf.py", ["--rlhf_type", "GRPO"], ALL_MODES, [None]),
    "GKD": ("train_gkd.py", [], ALL_MODES, [None]),
}
ONLINE = {"PPO", "RLOO", "GRPO"}


def rows(methods: list[str], modes: list[str]) -> list[tuple[str, str, str | None]]:
    """The (method, train mode, PPO layout) rows to run; `shared` and `adapters` need LoRA / QLoRA."""
    chosen = []
    for method in methods:
        for mode in (m for m in ROWS[method][2] if m in modes):
            for layout in ROWS[method][3]:
                if layout in ("adapters", "shared") and mode == "full":
                    continue
                chosen.append((method, mode, layout))
    return chosen


def child(options: argparse.Namespace, flags: list[str]) -> dict:
    """Run one row in this process; return its step times (s) and peak memory (bytes)."""
    import resource

    import torch
    import transformers

    sys.path.insert(0, ROOT)
    step_ends = []

    class StepClock(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    train = transformers.Trainer.train

    def clocked_train(self, *args, **kwargs):
        self.add_callback(StepClock())
        return train(self, *args, **kwargs)

    transformers.Trainer.train = clocked_train
    script = __import__(os.path.splitext(options.child)[0])
    trainer = script.main(flags)
    times = [b - a for a, b in zip(step_ends, step_ends[1:])]
    on_gpu = torch.cuda.is_available()
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {"step_seconds": times,
            "peak_bytes": torch.cuda.max_memory_allocated() if on_gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_kind": "max_memory_allocated" if on_gpu else "peak RSS", "device": "cuda" if on_gpu else "cpu",
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "batch_size": trainer.args.per_device_train_batch_size}


def run_row(row, options, reward_model_path: str | None, passthrough: list[str]) -> dict:
    """Run one row in its own process (so that its peak memory is its own) and return its measurements."""
    method, mode, layout = row
    script, flags, _, _ = ROWS[method]
    out = tempfile.mkdtemp(prefix="bench_")
    flags = [*flags, "--train_mode", mode, "--model_name_or_path", options.model_name_or_path,
             "--output_dir", os.path.join(out, "run"), "--max_steps", str(options.steps),
             "--per_device_train_batch_size", str(options.batch_size), "--gradient_accumulation_steps", "1",
             "--eval_split_size", "0", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
             "--logging_steps", "1"]
    if layout:
        flags += ["--model_mode", layout]
    if method in ONLINE:
        flags += ["--reward_model_path", reward_model_path]
    if method == "GKD":
        flags += ["--teacher_model_name_or_path", options.model_name_or_path]
    cmd = [sys.executable, os.path.abspath(__file__), "--child", script, "--", *flags, *passthrough]
    try:
        measured = run_json(cmd, f"{method} {mode} {layout or ''}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "train_mode": mode, "layout": layout, **measured}


def check_paths(parser: argparse.ArgumentParser, options: argparse.Namespace, names: list[str]) -> None:
    """Stop with argparse's one error line (exit 2) for the first option among `names` that is set to a path that
    does not exist, before any run starts.
    """
    for name in names:
        path = getattr(options, name)
        if path and not os.path.exists(path):
            parser.error(f"--{name} {path}: no such file or folder")


def run_json(cmd: list[str], label: str, prefix: str = "BENCH ") -> dict:
    """Run a benchmark process and return the JSON object of its last stdout line of the form `<prefix>{...}`; exit
    with its stderr's tail if it fails or prints no such line.
    """
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [line[len(prefix):] for line in done.stdout.splitlines() if line.startswith(prefix + "{")]
    if done.returncode or not lines:
        sys.exit(f"[benchmark] {label} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def train_reward_fixture(options, folder: str) -> str:
    """A LoRA reward model trained for one step, for the online rows' scoring; returns its folder."""
    cmd = [sys.executable, "reward_model.py", "--train_mode", "lora", "--model_name_or_path",
           options.model_name_or_path, "--output_dir", folder, "--max_steps", "1", "--probe_prompts", "0",
           "--eval_split_size", "0", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"[benchmark] the reward model for the online rows failed:\n{done.stderr[-3000:]}")
    return folder


def table(results: list[dict]) -> str:
    """The Markdown table: one line per row, median s/step with the min-max of the timed steps."""
    lines = ["| method | train mode | PPO layout | batch | s/step (median, min-max) | peak memory | trainable params |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        timed = r["step_seconds"][1:] or r["step_seconds"]
        lines.append(f"| {r['method']} | {r['train_mode']} | {r['layout'] or ''} | {r['batch_size']} | "
                     f"{spread(timed)} | "
                     f"{r['peak_bytes'] / 2**30:.2f} GiB | {r['trainable_parameters'] / 1e6:.2f} M |")
    return "\n".join(lines)


def split_flags(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(this script's flags, the flags after `--` that go to every run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])


def spread(values: list[float]) -> str:
    """`median (min-max)` of measurements, two decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv=None):
    argv, passthrough = split_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--methods", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="METHOD",
                        help=f"rows to run, of: {', '.join(ROWS)}")
    parser.add_argument("--train_modes", nargs="+", default=list(ALL_MODES), choices=ALL_MODES)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per row (the first is not timed)")
    parser.add_argument("--batch_size", type=int, default=4, help="per_device_train_batch_size of every row")
    parser.add_argument("--reward_model_path", help="reward model for PPO/RLOO/GRPO (default: a one-step fixture)")
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print("BENCH " + json.dumps(child(options, passthrough)), flush=True)
        return
    if options.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    check_paths(parser, options, ["model_name_or_path", "reward_model_path"])
    chosen = rows(options.methods, options.train_modes)
    with tempfile.TemporaryDirectory(prefix="bench_rm_") as fixture:
        reward_model_path = options.reward_model_path
        if reward_model_path is None and any(method in ONLINE for method, _, _ in chosen):
            reward_model_path = train_reward_fixture(options, fixture)
        results = []
        for row in chosen:
            print(f"[benchmark] {' '.join(part for part in row if part)}", flush=True)
            results.append(run_row(row, options, reward_model_path, passthrough))
    print(f"\n{options.model_name_or_path}, {options.steps} steps per row (the first not timed), "
          f"device {results[0]['device']}, peak memory = {results[0]['memory_kind']}\n")
    print(table(results))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
