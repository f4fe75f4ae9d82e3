"""The one train/eval split: a separate eval file, or rows held out from the training files with the run's seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from utils.data.loader import LoadedFile, load_file, load_sources
from utils.errors import ConfigError
from utils.log import info_rank0


def split_train_eval(rows: list, eval_split_size: float, seed: int) -> tuple[list, list]:
    """Hold out rows for evaluation, deterministically for a given seed.

    `eval_split_size` < 1 is a fraction of the rows, >= 1 a number of rows, 0 means no eval split.
    Returns `(train_rows, eval_rows)`. Raises `ConfigError` if nothing would be left to train on.
    """
    if eval_split_size < 0:
        raise ConfigError(f"eval_split_size must be >= 0, got {eval_split_size}")
    n_eval = int(round(eval_split_size * len(rows))) if eval_split_size < 1 else int(eval_split_size)
    if eval_split_size > 0:
        n_eval = max(n_eval, 1)
    if n_eval >= len(rows):
        raise ConfigError(f"--eval_split_size {eval_split_size} leaves no training rows out of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


@dataclass
class Splits:
    """What `load_splits` returns: train and eval groups, and the loaded training files (for reports)."""

    train: list[list]
    eval: list[list]
    files: list[LoadedFile]
    held_out: bool  # True when eval rows were held out of the training files (not read from eval_data_path)

    def flat(self) -> tuple[list, list]:
        """`(train_rows, eval_rows)` with the groups flattened."""
        return [r for g in self.train for r in g], [r for g in self.eval for r in g]


def load_splits(model_args, seed: int, convert, summary=None, log=info_rank0, eval_convert=None,
                prepare=None) -> Splits:
    """Train and eval groups from `train_data_path` (one or several files, with `train_data_ratios`) and
    `eval_data_path`, or `eval_split_size` rows held out of the training rows (`split_train_eval`, the run's seed).

    The split is drawn over input rows (groups), so a row's converted rows stay on one side and a preference file
    holds out the same pairs whichever method reads it. `eval_convert` converts the eval file if it differs from
    `convert`. Raises `DataFormatError`, `PathNotFoundError` or `ConfigError` (nothing left to train on).
    """
    drop = getattr(model_args, "drop_bad_rows", False)
    files = load_sources(model_args.train_data_path, getattr(model_args, "train_data_ratios", None), seed, convert,
                         drop, summary, log, prepare)
    groups = [g for f in files for g in f.groups]
    if model_args.eval_data_path:
        held = load_file(model_args.eval_data_path, eval_convert or convert, drop, summary, log, prepare).groups
        return Splits(groups, held, files, False)
    train, held = split_train_eval(groups, model_args.eval_split_size, seed)
    if held:
        log(f"[data] held out {len(held)} of {len(groups)} rows for evaluation (eval_split_size)")
    return Splits(train, held, files, True)
