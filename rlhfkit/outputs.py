"""What every script writes to `output_dir`, and the guards that keep it from overwriting earlier work
(`prepare_output_dir`) and from saving diverged weights (`NonFiniteLossGuard`).

`output_dir/` after a run:
    adapter_model.safetensors + adapter_config.json   (LoRA / QLoRA), or model.safetensors + config.json (full)
    tokenizer files, run_config.json (every resolved setting), trainer_state.json (the log history),
    training_curves.png (one panel per logged metric), checkpoint-N/ (for --resume_from_checkpoint),
    and, written by the run-health step that follows, report.html (rlhfkit/report/run_health.py)
"""

from __future__ import annotations

import json
import math
import os
import re

from transformers import TrainerCallback

from rlhfkit.args import run_config
from rlhfkit.errors import OutputExistsError, TrainingDivergedError

# Log-history keys that are run summaries or counters, not curves worth a panel.
NOT_CURVES = {"epoch", "step", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
              "train_steps_per_second", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
              "num_tokens", "eval_num_tokens"}


def check_can_write(path: str, flag: str = "--output_dir") -> None:
    """Raise `OutputExistsError` naming `flag` if `path` cannot be (or become) a folder to write in: it is a file, an
    ancestor is a file, or the nearest existing ancestor is not writable. Run before any work.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"{flag} {path} is a file, not a folder; nothing is overwritten. Use another {flag}")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputExistsError(f"{flag} {path}: {parent} is a file, so no folder can be made there; use another "
                                f"{flag}")
    if not os.access(parent, os.W_OK):
        raise OutputExistsError(f"{flag} {path}: {parent} is not writable; use another {flag}")


def prepare_output_dir(config) -> str | None:
    """Check `output_dir` before any work, and resolve `--resume_from_checkpoint` (`checkpoint.resume_point`).

    Returns what `Trainer.train(resume_from_checkpoint=...)` takes: None for a fresh run, or a checkpoint path.
    Raises `OutputExistsError` if `output_dir` holds files and no resume was asked for (nothing is ever overwritten
    silently) or cannot be written (`check_can_write`); a resume raises as `resume_point` does.
    """
    out, resume = config.output_dir, config.resume_from_checkpoint
    check_can_write(out)
    if resume:
        from rlhfkit.checkpoint import resume_point  # here: a fresh run loads no checkpoint code

        return resume_point(out, resume)
    if os.path.isdir(out) and os.listdir(out):
        raise OutputExistsError(f"output_dir {out} is not empty; nothing is overwritten. Use another --output_dir, "
                                f"delete it, or continue the run with --resume_from_checkpoint true")
    return None


def save_outputs(trainer, method: str, args, config) -> None:
    """Save the final model or adapter + tokenizer, the trainer state, the resolved config and the curves.

    Call it on every process (ZeRO-3 gathers the weights on save); only the main process writes files. `method` is
    what run_config.json records as the method ("DPO", "reward model", "GKD"); `args` is the script's own settings
    dataclass, `config` the trainer's.
    """
    out = trainer.args.output_dir
    trainer.save_model(out)
    if not trainer.is_world_process_zero():
        return
    trainer.save_state()
    with open(os.path.join(out, "run_config.json"), "w") as f:  # `--config` this file to repeat the run
        json.dump(run_config(method, args, config, trainer.args.world_size), f, indent=2, default=str)
    plot_log_history(trainer.state.log_history, os.path.join(out, "training_curves.png"))


def plot_log_history(log_history: list[dict], path: str, title: str | None = None) -> list[str]:
    """Draw one panel per logged metric (train as a line, eval as dots) and save a PNG.

    `log_history` is `trainer.state.log_history`: a list of dicts with a `step` and metric values; eval metrics
    carry an `eval_` prefix and share a panel with their train twin. Returns the panel names, in order
    (nothing is written if there is nothing to plot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib loads only when a plot is drawn
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(4.5 * cols, 3 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
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
    return names


def non_finite_values(logs: dict, include_grad_norm: bool = True) -> dict[str, float]:
    """The loss values in one `Trainer.log` dict that are NaN or +-inf, by key.

    A loss value is any key with "loss" as a `/`- or `_`-separated word: `loss`, `eval_loss`, `train_loss`,
    `nll_loss`, PPO's `loss/policy_avg` and `loss/value_avg`. With `include_grad_norm`, `grad_norm` too: a
    non-finite gradient norm means the optimizer step just wrote NaN weights, even if this step's loss was finite.
    """
    bad = {}
    for key, value in (logs or {}).items():
        words = re.split(r"[/_]", key)
        watched = "loss" in words or (include_grad_norm and key == "grad_norm")
        if watched and isinstance(value, (int, float)) and not math.isfinite(value):
            bad[key] = value
    return bad


class NonFiniteLossGuard(TrainerCallback):
    """Stop training at the first logged NaN / inf loss, before the diverged weights are saved.

    `Trainer` logs, then evaluates, then saves, within one step (`_maybe_log_save_evaluate`), so `on_log` sees the
    loss before `_save_checkpoint` runs. Every step that is about to be saved is also logged (`on_step_end` /
    `on_epoch_end` set `should_log`), so a NaN between two `logging_steps` is still caught before the save.
    The gradient norm is watched too, except with fp16, whose loss scaler skips steps with inf gradients on purpose.

    Raises `TrainingDivergedError` from `on_log`, naming the step and the newest complete checkpoint.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = non_finite_values(logs, include_grad_norm=not args.fp16)
        if not bad:
            return control
        control.should_save = False
        control.should_training_stop = True
        values = ", ".join(f"{key} = {value}" for key, value in bad.items())
        from rlhfkit.checkpoint import scan_checkpoints  # here: checkpoints are scanned only when a run must stop

        newest = scan_checkpoints(args.output_dir).newest
        where = (f"the last good checkpoint is {newest}: resume from it with a lower --learning_rate "
                 f"(--resume_from_checkpoint {newest})" if newest else
                 f"no checkpoint was saved before it in {args.output_dir}")
        previous = next((entry["step"] for entry in reversed(state.log_history[:-1]) if "loss" in entry), 0)
        since = (f" (it was finite when last logged, at step {previous})"
                 if state.global_step - previous > 1 and "loss" in bad else "")
        raise TrainingDivergedError(f"training diverged at step {state.global_step}: {values}{since}; nothing was "
                                    f"saved after it, and {where}")
