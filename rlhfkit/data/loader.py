"""The one loading loop every data loader uses: read -> convert each row -> collect problems -> stop or drop -> split.

A row may convert to several rows (a ranked row to several pairs, a conversation to one SFT row per assistant
turn): they stay together as a *group*, so that ratios and the train/eval split never separate them.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rlhfkit.data.messages import RowError
from rlhfkit.data.reader import (
    MAX_LISTED,
    DataFile,
    DataFormatError,
    Problem,
    not_empty,
    read_bytes,
    read_json_bytes,
    read_jsonl_bytes,
)
from rlhfkit.errors import ConfigError, PathNotFoundError
from rlhfkit.log import info_rank0

NOT_READ = (".tsv", ".xlsx", ".xls")  # table formats no reader parses
TABLES = (".csv", ".parquet", ".arrow")  # read by rlhfkit/data/tables.py


def read_file(path: str) -> DataFile:
    """Read a data file (type from the extension; anything but .json/.csv/.parquet/.arrow is read as JSON Lines) or a
    folder written by `datasets.Dataset.save_to_disk`.

    Returns a `DataFile`. Raises `PathNotFoundError` if the path is missing or is a folder that is not a saved
    dataset, and `DataFormatError` if the whole file is unreadable: compressed, an unsupported table format, empty,
    not valid JSON (.json), rows wrapped in an object (`{"data": [...]}`), or a Parquet / Arrow file that does not
    open.
    """
    if not os.path.exists(path):
        raise PathNotFoundError(f"data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in NOT_READ:
        raise DataFormatError([Problem(path, 1, "(row)", f"{ext} files are not read; convert the file to JSON Lines, "
                                                         f"JSON, CSV or Parquet")])
    if os.path.isdir(path) or ext in TABLES:
        from rlhfkit.data import tables  # here: the datasets library is loaded for table files only

        return tables.read_table_file(path, ext)
    return not_empty({".json": read_json_bytes}.get(ext, read_jsonl_bytes)(path, read_bytes(path)))


@dataclass
class LoadedFile:
    """The converted rows of one file."""

    path: str
    groups: list[list]  # one list of converted rows per good input row, in file order
    shapes: Counter = field(default_factory=Counter)  # input rows per detected shape name
    dropped: list[Problem] = field(default_factory=list)  # bad rows skipped with --drop_bad_rows
    n_read: int = 0  # input rows read (good + bad)
    n_total: int = 0  # good input rows before a ratio took its share

    @property
    def rows(self) -> list:
        """The converted rows, flattened."""
        return [row for group in self.groups for row in group]


def summarise(loaded: LoadedFile, what: str, notes=(), after: str = "") -> str:
    """`"N <what><after> (<count> <shape>, ... rows); note; ..."`: the converted rows, the input rows per shape and
    `notes` (e.g. `shapes.shape_notes(loaded.shapes)`).
    """
    detected = ", ".join(f"{n} {shape}" for shape, n in loaded.shapes.items())
    return f"{len(loaded.rows)} {what}{after} ({detected} rows)" + "".join(f"; {note}" for note in notes)


def settle_problems(problems: list[Problem], n_good: int, drop_bad_rows: bool) -> None:
    """Sort `problems` by position; raise `DataFormatError` listing them unless `drop_bad_rows` is True and `n_good`
    rows are left (with none left it raises anyway, without the --drop_bad_rows hint).
    """
    problems.sort(key=lambda p: p.line)
    if problems and (not drop_bad_rows or not n_good):
        raise DataFormatError(problems, "\nFix these rows, or pass --drop_bad_rows true to skip them."
                              if n_good else "")


def log_dropped(problems: list[Problem], n_lines: int, log=info_rank0) -> None:
    """With `--drop_bad_rows`: print how many of the file's `n_lines` rows were dropped, and the first few why."""
    if problems:
        log(f"[data] dropped {len(problems)} bad row(s) of {n_lines}, e.g.:")
        for p in problems[:MAX_LISTED]:
            log(f"  {p}")


def load_file(path: str, convert: Callable[[dict], tuple[str, list]], drop_bad_rows: bool = False,
              summary: Callable[[LoadedFile], str] | None = None, log=info_rank0,
              prepare: Callable[[list[dict]], Callable] | None = None) -> LoadedFile:
    """Read `path` (`read_file`) and convert every row with `convert(row) -> (shape name, rows)`.

    `prepare(all rows) -> convert`, if given, builds the converter from the whole file first (for rules that hold per
    file, e.g. KTO labels given as 0/1). Prints `[data] PATH: <summary(loaded)>`, then, with `drop_bad_rows`, the
    dropped rows. Returns a `LoadedFile`. Raises `DataFormatError` listing up to 10 problems (`FILE:LINE: field
    'NAME': ...`, or `FILE:row N: ...` for Parquet / Arrow / saved datasets) unless `drop_bad_rows` is True, or if no
    good row is left; `PathNotFoundError` if the path is missing.
    """
    data = read_file(path)
    if prepare is not None:
        convert = prepare([row for _, row in data.rows])
    problems, loaded = list(data.problems), LoadedFile(path, [])
    for position, row in data.rows:
        try:
            shape, rows = convert(row)
        except RowError as e:
            problems.append(Problem(path, position, e.field, str(e), data.unit))
            continue
        loaded.groups.append(rows)
        loaded.shapes[shape] += 1
    settle_problems(problems, len(loaded.groups), drop_bad_rows)
    loaded.dropped, loaded.n_read = problems, len(problems) + len(loaded.groups)
    loaded.n_total = len(loaded.groups)
    if summary is not None:
        log(f"[data] {path}: {summary(loaded)}")
    log_dropped(problems, loaded.n_read, log)
    return loaded


def take_share(groups: list, ratio: float, seed: int) -> list:
    """`ratio` (0, 1] of `groups`: `max(1, int(ratio * len(groups)))` of them drawn with `seed`, in file order."""
    if ratio >= 1:
        return groups
    n = max(1, int(ratio * len(groups)))
    keep = set(random.Random(seed).sample(range(len(groups)), n))
    return [g for i, g in enumerate(groups) if i in keep]


def as_paths(value) -> list[str]:
    """`--train_data_path` as a list: one path (a string) or several."""
    return [value] if isinstance(value, str) else list(value)


def load_sources(paths, ratios: list[float] | None, seed: int, convert, drop_bad_rows: bool = False,
                 summary=None, log=info_rank0, prepare=None) -> list[LoadedFile]:
    """Load each of `paths` (`load_file`) and keep its share (`ratios[i]`, default 1: all rows; `take_share`).

    Prints the rows taken from each file when there are several files or a ratio below 1. Returns one `LoadedFile`
    per path, in order. Raises as `load_file` does.
    """
    paths = as_paths(paths)
    ratios = list(ratios) if ratios else [1.0] * len(paths)
    files = []
    for i, (path, ratio) in enumerate(zip(paths, ratios)):
        loaded = load_file(path, convert, drop_bad_rows, summary, log, prepare)
        loaded.groups = take_share(loaded.groups, ratio, seed + i)
        files.append(loaded)
    if len(files) > 1 or any(r < 1 for r in ratios):
        taken = ", ".join(f"{f.path} {len(f.groups)} of {f.n_total} (ratio {r:g})" for f, r in zip(files, ratios))
        log(f"[data] training rows taken: {taken}; {sum(len(f.groups) for f in files)} in all")
    return files


# ----------------------------------------------------------------------------------------------------------
# The one train/eval split: a separate eval file, or rows held out from the training files with the run's seed


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
