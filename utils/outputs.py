"""What every script writes to `output_dir`, and the guard that keeps it from overwriting earlier work.

`output_dir/` after a run:
    adapter_model.safetensors + adapter_config.json   (LoRA / QLoRA), or model.safetensors + config.json (full)
    tokenizer files, run_config.json (every resolved setting), trainer_state.json (the log history),
    training_curves.png (one panel per logged metric), checkpoint-N/ (for --resume_from_checkpoint)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from transformers.trainer_utils import get_last_checkpoint

# Log-history keys that are run summaries or counters, not curves worth a panel.
NOT_CURVES = {"epoch", "step", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
              "train_steps_per_second", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
              "num_tokens", "eval_num_tokens"}


def prepare_output_dir(config) -> str | bool | None:
    """Check `output_dir` before any work, and resolve `--resume_from_checkpoint`.

    Returns what `Trainer.train(resume_from_checkpoint=...)` takes: None for a fresh run, or a checkpoint path.
    `--resume_from_checkpoint true` (or `last`) picks the newest `checkpoint-N/` in `output_dir`.
    Raises `FileExistsError` if `output_dir` holds files and no resume was asked for (nothing is ever overwritten
    silently), `FileNotFoundError` if a resume was asked for but there is no checkpoint.
    """
    out, resume = config.output_dir, config.resume_from_checkpoint
    if resume in ("true", "True", "last"):
        resume = get_last_checkpoint(out) if os.path.isdir(out) else None
        if resume is None:
            raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint-N/ folder in {out}")
    elif resume and not os.path.isdir(resume):
        raise FileNotFoundError(f"--resume_from_checkpoint: no such checkpoint: {resume}")
    elif not resume and os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"output_dir {out} is not empty; nothing is overwritten. Use another --output_dir, "
                              f"delete it, or continue the run with --resume_from_checkpoint true")
    return resume or None


def save_outputs(trainer, arg_objects: dict) -> None:
    """Save the final model or adapter + tokenizer, the trainer state, the resolved config and the curves.

    Call it on every process (ZeRO-3 gathers the weights on save); only the main process writes files.
    `arg_objects` maps a name to a dataclass of settings, e.g. `{"model": model_args, "training": config}`.
    """
    out = trainer.args.output_dir
    trainer.save_model(out)
    if not trainer.is_world_process_zero():
        return
    trainer.save_state()
    settings = {name: (obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
                for name, obj in arg_objects.items()}
    settings["world_size"] = trainer.args.world_size  # processes; effective batch = this x per-device x accumulation
    with open(os.path.join(out, "run_config.json"), "w") as f:
        json.dump(settings, f, indent=2, default=str)
    plot_log_history(trainer.state.log_history, os.path.join(out, "training_curves.png"))


def plot_log_history(log_history: list[dict], path: str, title: str | None = None) -> list[str]:
    """Draw one panel per logged metric (train as a line, eval as dots) and save a PNG.

    `log_history` is `trainer.state.log_history`: a list of dicts with a `step` and metric values; eval metrics
    carry an `eval_` prefix and share a panel with their train twin. Returns the panel names, in order
    (nothing is written if there is nothing to plot).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key in NOT_CURVES or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            split = "eval" if key.startswith("eval_") else "train"
            name = key.removeprefix("eval_")
            series.setdefault(name, {}).setdefault(split, []).append((entry.get("step", 0), value))
    names = list(series)
    if not names:
        return []
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split, points in series[name].items():
            steps, values = zip(*points)
            ax.plot(steps, values, "o" if split == "eval" or len(points) == 1 else "-", label=split, markersize=4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series[name]) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return names
