"""Checkpoint integrity: which `checkpoint-N/` folders a run can resume from, and a guard against saving NaN weights.

`transformers.Trainer` writes a checkpoint file by file: the weights (and, for PPO, `ppo_trainable.safetensors` and
`ppo_state.json`), `training_args.bin`, `optimizer.pt`, `scheduler.pt`, `rng_state.pth`, and `trainer_state.json`
last. A kill -9 in between leaves a torn folder. `scan_checkpoints` tells the complete ones from the torn ones by
reading the files' own structure, never the weights:

- `trainer_state.json` is there; every `*.json` parses (trainer state, configs, tokenizer, PPO state);
- a weights file is there (`model.safetensors`, `adapter_model.safetensors`, a sharded index or a `.bin`), and
  every `*.safetensors` file has a parsable header and is as long as that header says (8-byte length + JSON);
- every `*.pt` / `*.pth` / `*.bin` (optimizer, scheduler, scaler, RNG states, training args) is a complete zip
  archive: `torch.save` writes zip files whose central directory comes last, so a cut file has none;
- DeepSpeed: the `latest` file names a `global_step*/` folder whose `*.pt` files are complete zip archives.

`NonFiniteLossGuard` is the `TrainerCallback` every script adds: it stops the run at the first NaN / inf loss, before
a checkpoint of the diverged weights is written, so the newest checkpoint stays the last good one.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from typing import NamedTuple

from transformers import TrainerCallback

from rlhfkit.errors import TrainingDivergedError

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_model.bin", "pytorch_model.bin.index.json")
ZIP_SUFFIXES = (".pt", ".pth", ".bin")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format caps its JSON header at 100 MB


class CheckpointScan(NamedTuple):
    newest: str | None  # the newest complete checkpoint-N/ folder, None if there is none
    torn: list[tuple[str, str]]  # (folder, one-line reason) of every incomplete one, newest first


def checkpoint_step(path: str) -> int | None:
    """The N of a `checkpoint-N` folder path, or None if its name is not of that form."""
    match = CHECKPOINT_DIR.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str) -> list[str]:
    """The `checkpoint-N/` folders in `output_dir`, highest N first (empty if `output_dir` does not exist)."""
    if not os.path.isdir(output_dir):
        return []
    found = [os.path.join(output_dir, name) for name in os.listdir(output_dir)
             if CHECKPOINT_DIR.match(name) and os.path.isdir(os.path.join(output_dir, name))]
    return sorted(found, key=checkpoint_step, reverse=True)


def json_problem(path: str) -> str | None:
    """Why the JSON file at `path` cannot be read (one line), or None if it parses."""
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{os.path.basename(path)} does not parse as JSON (cut short?)"
    return None


def zip_problem(path: str) -> str | None:
    """Why the `torch.save` file at `path` is not a complete zip archive (one line), or None if it is one.

    Reads only the end-of-archive record and the central directory, never the tensors.
    """
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        return f"{os.path.basename(path)} is cut short (not a complete zip archive)"


def read_safetensors_header(path: str) -> tuple[dict | None, str | None]:
    """`(header, None)`: the JSON header of the safetensors file at `path` ({tensor name: {"dtype", "shape",
    "data_offsets"}}, plus "__metadata__"), read without the tensors; `(None, why)` with a one-line reason when the
    header does not parse or the file is shorter than the header says (the last tensor's end offset).

    Layout: an 8-byte little-endian header length, the JSON header, then the tensor bytes.
    """
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None, f"{name} is cut short (no safetensors header)"
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER:
                return None, f"{name} is not a safetensors file (header length {length})"
            if size < 8 + length:
                return None, f"{name} is cut short (its safetensors header is incomplete)"
            header = json.loads(f.read(length))
        data_end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                       default=0)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError,
            ValueError):
        return None, f"{name} has no valid safetensors header"
    if size < 8 + length + data_end:
        return None, f"{name} is cut short ({size} of {8 + length + data_end} bytes)"
    return header, None


def file_problem(path: str) -> str | None:
    """Why one file of a checkpoint is incomplete, judged by its suffix (JSON, safetensors, zip), or None."""
    if path.endswith(".json"):
        return json_problem(path)
    if path.endswith(".safetensors"):
        return read_safetensors_header(path)[1]
    if path.endswith(ZIP_SUFFIXES):
        return zip_problem(path)
    return None


def deepspeed_problem(path: str, names: list[str]) -> str | None:
    """Why the DeepSpeed state in checkpoint folder `path` is incomplete (one line), or None (also when it has none).

    DeepSpeed writes its `global_step*/` shards first and the `latest` file naming them last.
    """
    if not any(name.startswith("global_step") for name in names):
        return None
    try:
        with open(os.path.join(path, "latest")) as f:
            tag = f.read().strip()
    except OSError:
        return "no DeepSpeed 'latest' file (the DeepSpeed save did not finish)"
    folder = os.path.join(path, tag)
    if not tag or not os.path.isdir(folder):
        return f"DeepSpeed 'latest' names {tag!r}, which is not a folder here"
    for name in sorted(os.listdir(folder)):
        if name.endswith(ZIP_SUFFIXES) and (problem := zip_problem(os.path.join(folder, name))):
            return f"{tag}/{problem}"
    return None


def checkpoint_problem(path: str) -> str | None:
    """Why `path` is not a complete checkpoint folder, as one line (e.g. "no trainer_state.json"), or None.

    A cut or unreadable file is named first, then a missing `trainer_state.json`, then missing weights. Reads file
    headers and zip directories only, never the weights. An unreadable file is a reason; raises `OSError` only if
    a folder cannot be listed.
    """
    if not os.path.isdir(path):
        return "not a folder"
    names = sorted(os.listdir(path))
    if not names:
        return "empty folder"
    for name in names:
        file = os.path.join(path, name)
        if os.path.isfile(file) and (problem := file_problem(file)):
            return problem
    if (problem := deepspeed_problem(path, names)) is not None:
        return problem
    if TRAINER_STATE not in names:
        return f"no {TRAINER_STATE} (the save stopped before its last file)"
    if not any(name in names for name in WEIGHT_FILES):
        return "no model weights (no model.safetensors or adapter_model.safetensors)"
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            with open(os.path.join(path, index)) as f:
                weight_map = json.load(f)
            weight_map = weight_map.get("weight_map", {}) if isinstance(weight_map, dict) else {}
            shards = sorted(set(weight_map.values()))
            missing = [shard for shard in shards if shard not in names]
            if missing:
                return f"{index} lists {missing[0]}, which is missing"
    return None


def scan_checkpoints(output_dir: str) -> CheckpointScan:
    """Sort the `checkpoint-N/` folders of `output_dir` into the newest complete one and the torn ones.

    Returns a `CheckpointScan`: `newest` is the complete checkpoint with the highest N (None if there is none, or
    no `output_dir`); `torn` lists `(folder, reason)` for every incomplete checkpoint, highest N first. A file that
    cannot be read makes its checkpoint torn; raises `OSError` only if a folder cannot be listed.
    """
    newest, torn = None, []
    for path in list_checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is not None:
            torn.append((path, problem))
        elif newest is None:
            newest = path
    return CheckpointScan(newest, torn)


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
        newest = scan_checkpoints(args.output_dir).newest
        where = (f"the last good checkpoint is {newest}: resume from it with a lower --learning_rate "
                 f"(--resume_from_checkpoint {newest})" if newest else
                 f"no checkpoint was saved before it in {args.output_dir}")
        previous = next((entry["step"] for entry in reversed(state.log_history[:-1]) if "loss" in entry), 0)
        since = (f" (it was finite when last logged, at step {previous})"
                 if state.global_step - previous > 1 and "loss" in bad else "")
        raise TrainingDivergedError(f"training diverged at step {state.global_step}: {values}{since}; nothing was "
                                    f"saved after it, and {where}")
