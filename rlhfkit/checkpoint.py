"""Checkpoint integrity: which `checkpoint-N/` folder a run resumes from (`resume_point`) and which ones are torn
(imported only when a run resumes or must stop).

`transformers.Trainer` writes a checkpoint file by file: the weights (and, for PPO, `ppo_trainable.safetensors` and
`ppo_state.json`), `training_args.bin`, `optimizer.pt`, `scheduler.pt`, `rng_state.pth`, and `trainer_state.json`
last. A kill -9 in between leaves a torn folder. `scan_checkpoints` tells the complete ones from the torn ones by
reading the files' own structure, never the weights:

- `trainer_state.json` is there; every `*.json` parses and every `*.safetensors` file is complete
  (`rlhfkit.model_folders.file_problem`: its header parses and the file is as long as the header says);
- a weights file is there (`model.safetensors`, `adapter_model.safetensors`, a sharded index or a `.bin`);
- every `*.pt` / `*.pth` / `*.bin` (optimizer, scheduler, scaler, RNG states, training args) is a complete zip
  archive: `torch.save` writes zip files whose central directory comes last, so a cut file has none;
- DeepSpeed: the `latest` file names a `global_step*/` folder whose `*.pt` files are complete zip archives.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from typing import NamedTuple

from rlhfkit.errors import ConfigError, PathNotFoundError
from rlhfkit.log import info_rank0
from rlhfkit.model_folders import file_problem

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_model.bin", "pytorch_model.bin.index.json")
ZIP_SUFFIXES = (".pt", ".pth", ".bin")


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


def zip_problem(path: str) -> str | None:
    """Why the `torch.save` file at `path` (`*.pt`, `*.pth`, `*.bin`) is not a complete zip archive (one line), or
    None.

    Reads only the end-of-archive record and the central directory, never the tensors; other files are not judged.
    """
    if not path.endswith(ZIP_SUFFIXES):
        return None
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        return f"{os.path.basename(path)} is cut short (not a complete zip archive)"


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
        if os.path.isfile(file) and (problem := file_problem(file) or zip_problem(file)):
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


def resume_point(output_dir: str, resume: str) -> str:
    """The checkpoint `--resume_from_checkpoint` names: `true` (or `last`) picks the newest complete `checkpoint-N/`
    in `output_dir` and prints one `[resume] skipping ...: <reason>` line per newer, torn one (a save cut by a kill;
    the folder is kept); any other value is a checkpoint path.

    Raises `PathNotFoundError` if there is no such checkpoint or none is complete, `ConfigError` if the named one is
    torn.
    """
    if resume in ("true", "True", "last"):
        scan = scan_checkpoints(output_dir)
        if scan.newest is None and not scan.torn:
            raise PathNotFoundError(f"--resume_from_checkpoint: no checkpoint-N/ folder in {output_dir}")
        newest_step = checkpoint_step(scan.newest) if scan.newest else -1
        for path, reason in scan.torn:
            if checkpoint_step(path) > newest_step:
                info_rank0(f"[resume] skipping {path}: {reason}")
        if scan.newest is None:
            raise PathNotFoundError(f"--resume_from_checkpoint: no complete checkpoint in {output_dir}: all "
                                    f"{len(scan.torn)} checkpoint-N/ folders are torn (listed above); start afresh "
                                    f"with another --output_dir")
        return scan.newest
    if not os.path.isdir(resume):
        raise PathNotFoundError(f"--resume_from_checkpoint: no such checkpoint: {resume}")
    if problem := checkpoint_problem(resume):
        newest = scan_checkpoints(os.path.dirname(os.path.normpath(resume))).newest
        instead = f"; the newest complete one next to it is {newest}" if newest else ""
        raise ConfigError(f"--resume_from_checkpoint: {resume} is incomplete ({problem}), so it cannot be resumed "
                          f"from{instead}")
    return resume
