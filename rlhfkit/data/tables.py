"""Table files: CSV, Parquet, Arrow and folders written by `datasets`' `save_to_disk`, read into rows.

CSV is read with Python's csv module, which keeps each record's line number and reports a record with the wrong
number of fields on its own line (a table reader would stop at the first one); cells are typed as described in
`csv_value`. Parquet, Arrow and saved datasets are read with the `datasets` library; their rows are positioned by
row index. `rlhfkit.data.loader.read_file` imports this module only for such files.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager

import datasets
import pyarrow
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.exceptions import DatasetGenerationError
from datasets.utils import are_progress_bars_disabled

from rlhfkit.data.reader import DataFile, DataFormatError, Problem, decode_text, not_empty, read_bytes
from rlhfkit.errors import PathNotFoundError

TEXT_COLUMNS = {"prompt", "chosen", "rejected", "completion", "messages", "conversations", "instruction", "input",
                "output", "system", "response_0", "response_1", "responses", "text"}  # CSV cells never read as numbers


def csv_value(text: str, column: str, kind: type):
    """One CSV cell: a cell holding a JSON (or Python-repr) list or object is decoded (messages, responses); a column
    outside `TEXT_COLUMNS` whose cells all read as booleans or numbers gets that type (`kind`); else the string.
    """
    if text[:1] in "[{":
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, (list, dict)):
                return value
    if kind is bool:
        return text.strip().lower() == "true"
    if kind in (int, float):
        return kind(text)
    return text


def column_kind(column: str, cells: list[str]) -> type:
    """bool, int or float if every non-empty cell of a non-text column reads as one; else str."""
    cells = [c.strip() for c in cells if c != ""]
    if column in TEXT_COLUMNS or not cells:
        return str
    if all(c.lower() in ("true", "false") for c in cells):
        return bool
    for kind in (int, float):
        try:
            [kind(c) for c in cells]
            return kind
        except ValueError:
            continue
    return str


def read_csv(path: str, data: bytes) -> DataFile:
    """A CSV file with a header line; each record's position is the line it starts on. Empty cells are missing
    fields; a record whose number of fields differs from the header's is a problem on its line.
    """
    reader = csv.reader(io.StringIO(decode_text(path, data), newline=""))
    header, records, problems = None, [], []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataFormatError([Problem(path, start, "(row)", f"malformed CSV: {e}")]) from None
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [name.strip() for name in record]
        elif len(record) != len(header):
            problems.append(Problem(path, start, "(row)", f"malformed CSV: {len(record)} fields, the header has "
                                                          f"{len(header)} ({', '.join(header)})"))
        else:
            records.append((start, record))
    if header is None:
        return DataFile(path, [], [], "line")
    kinds = [column_kind(name, [r[i] for _, r in records]) for i, name in enumerate(header)]
    rows = [(line, {name: csv_value(cell, name, kind) for name, kind, cell in zip(header, kinds, record)
                    if cell != ""}) for line, record in records]
    return DataFile(path, rows, problems, "line")


def read_table_file(path: str, ext: str) -> DataFile:
    """A CSV, Parquet or Arrow file, or a `save_to_disk` folder (`PathNotFoundError` for any other folder)."""
    if os.path.isdir(path):
        if not is_saved_dataset(path):
            raise PathNotFoundError(f"data file {path} is a folder; pass the .jsonl file inside it (a folder is read "
                                    f"only if datasets' save_to_disk wrote it)")
        return read_saved_dataset(path)
    if ext == ".csv":
        return not_empty(read_csv(path, read_bytes(path)))
    return read_table(path, ext)


# ----------------------------------------------------------------------------------------------------------
# Binary files and saved datasets (the datasets library)


def is_saved_dataset(path: str) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json"))


@contextmanager
def quiet_datasets():
    """No progress bars or info lines from the datasets library while reading (they would interleave with the log)."""

    was_disabled, verbosity = are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not was_disabled:
            datasets.enable_progress_bars()


def table_rows(path: str, dataset) -> DataFile:
    """The rows of a `datasets.Dataset`, positioned by row index; null values (a column this row lacks) are dropped."""
    rows = [(i, drop_nulls(row)) for i, row in enumerate(dataset.to_list())]
    if not rows:
        raise DataFormatError([Problem(path, 0, "(file)", "the file holds no rows", "file")])
    return DataFile(path, rows, [], "row")


def read_table(path: str, ext: str) -> DataFile:
    """A Parquet or Arrow file, read with the datasets library (Parquet through a throw-away cache folder)."""
    kind = "Parquet" if ext == ".parquet" else "Arrow"
    with quiet_datasets(), tempfile.TemporaryDirectory() as cache:
        try:
            if ext == ".arrow":
                dataset = Dataset.from_file(path, in_memory=True)
            else:
                dataset = Dataset.from_parquet(path, cache_dir=cache, keep_in_memory=True)
        except (OSError, ValueError, DatasetGenerationError, pyarrow.ArrowException) as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataFormatError([Problem(path, 0, "(file)", f"not a readable {kind} file ({detail})", "file")]) \
                from None
        return table_rows(path, dataset)


def read_saved_dataset(path: str) -> DataFile:
    """A `save_to_disk` folder: a Dataset, or a DatasetDict's "train" split (or its only split)."""

    with quiet_datasets():
        dataset = load_from_disk(path)
    if isinstance(dataset, DatasetDict):
        splits = list(dataset)
        if "train" not in splits and len(splits) != 1:
            raise DataFormatError([Problem(path, 0, "(file)", f"a DatasetDict with splits {', '.join(splits)} and "
                                                              f"no 'train'; pass one split's folder, e.g. "
                                                              f"{os.path.join(path, splits[0])}", "file")])
        dataset = dataset["train" if "train" in splits else splits[0]]
    return table_rows(path, dataset)


def drop_nulls(value):
    """`value` with every null-valued key of its objects removed, at any depth (tables fill absent fields with null)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value
