"""One reader for every data file type: JSON Lines, JSON, CSV, Parquet, Arrow and `datasets.save_to_disk` folders.

`read_file(path)` returns the rows as `(position, dict)` pairs plus the problems of rows that could not be read at
all; positions are 1-based line numbers for text files and 0-based row indices for Parquet / Arrow files and saved
datasets (`Problem.unit` says which). Binary formats are read with the `datasets` library. CSV is read with Python's
csv module, which keeps each record's line number and reports a record with the wrong number of fields on its own
line (a table reader would stop at the first one); cells are typed as described in `csv_value`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import pyarrow
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.exceptions import DatasetGenerationError
from datasets.utils import are_progress_bars_disabled

from utils.errors import PathNotFoundError, UserError

COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"), (b"(\xb5/\xfd", "zstd", "unzstd"),
              (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ", "xz", "unxz"))  # magic bytes, name, the command undoing it
NOT_READ = (".tsv", ".xlsx", ".xls")  # table formats this reader does not parse
TEXT_COLUMNS = {"prompt", "chosen", "rejected", "completion", "messages", "conversations", "instruction", "input",
                "output", "system", "response_0", "response_1", "responses", "text"}  # CSV cells never read as numbers


MAX_LISTED = 10  # problems listed in one error message


@dataclass
class Problem:
    """One bad row: where it is and what is wrong with it."""

    path: str
    line: int  # 1-based line number in a text file, or the 0-based row index when `unit` is "row"
    field: str  # the field at fault, or "(row)" for the whole row
    message: str
    unit: str = "line"  # "line": shown as FILE:LINE; "row": FILE:row N; "file": FILE (the whole file)

    def __str__(self) -> str:
        where = {"line": f":{self.line}", "row": f":row {self.line}"}.get(self.unit, "")
        return f"{self.path}{where}: field '{self.field}': {self.message}"


class DataFormatError(UserError, ValueError):
    """Raised when a data file has problems; `.problems` lists all of them (the message shows the first 10)."""

    def __init__(self, problems: list[Problem], hint: str = ""):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{len(problems)} problem(s) in the data:\n{shown}{more}{hint}")


@dataclass
class DataFile:
    """The rows of one file, before any shape check."""

    path: str
    rows: list[tuple[int, dict]]  # (line number or row index, row)
    problems: list[Problem]  # rows that could not be read (bad JSON, not an object, a malformed CSV record, ...)
    unit: str  # "line" (text files) or "row" (Parquet, Arrow, saved datasets)


def read_file(path: str) -> DataFile:
    """Read a data file (type from the extension; anything but .json/.csv/.parquet/.arrow is read as JSON Lines) or a
    folder written by `datasets.Dataset.save_to_disk`.

    Returns a `DataFile`. Raises `PathNotFoundError` if the path is missing or is a folder that is not a saved
    dataset, and `DataFormatError` if the whole file is unreadable: compressed, an unsupported table format, empty,
    not valid JSON (.json), rows wrapped in an object (`{"data": [...]}`), or a Parquet / Arrow file that does not
    open.
    """
    if os.path.isdir(path):
        if not is_saved_dataset(path):
            raise PathNotFoundError(f"data file {path} is a folder; pass the .jsonl file inside it (a folder is read "
                                    f"only if datasets' save_to_disk wrote it)")
        return read_saved_dataset(path)
    if not os.path.isfile(path):
        raise PathNotFoundError(f"data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in NOT_READ:
        raise DataFormatError([Problem(path, 1, "(row)", f"{ext} files are not read; convert the file to JSON Lines, "
                                                         f"JSON, CSV or Parquet")])
    if ext in (".parquet", ".arrow"):
        return read_table(path, ext)
    with open(path, "rb") as f:
        data = f.read()
    for prefix, kind, fix in COMPRESSED:
        if data.startswith(prefix):
            raise DataFormatError([Problem(path, 1, "(row)", f"the file is {kind}-compressed; {fix} it first "
                                                             f"(data files are plain text, or Parquet / Arrow)")])
    read = {".json": read_json, ".csv": read_csv}.get(ext, read_jsonl_bytes)
    out = read(path, data)
    if not out.rows and not out.problems:
        raise DataFormatError([Problem(path, 1, "(row)", "the file is empty")])
    return out


# ----------------------------------------------------------------------------------------------------------
# Text files


def read_jsonl_bytes(path: str, data: bytes) -> DataFile:
    """JSON Lines (UTF-8; a leading byte-order mark is accepted): one row per non-blank line; a line that is not
    UTF-8, not valid JSON, a JSON array of rows, or not an object is a problem on that line."""
    rows, problems = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(path, number, "(row)", f"not UTF-8 text (byte {e.start + 1} of the line); "
                                                           f"re-save the file as UTF-8"))
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(Problem(path, number, "(row)", f"malformed JSON: {e.msg} at column {e.colno}"))
            continue
        if isinstance(obj, list) and obj and all(isinstance(item, dict) for item in obj):
            problems.append(Problem(path, number, "(row)", "a JSON array of rows; JSON Lines needs one object "
                                                           "per line (e.g. jq -c '.[]' file.json > file.jsonl)"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(path, number, "(row)", f"expected a JSON object, got {type(obj).__name__}"))
            continue
        rows.append((number, obj))
    return DataFile(path, rows, problems, "line")


def decode_text(path: str, data: bytes) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped); raises `DataFormatError` naming the first bad line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError([Problem(path, line, "(row)", "not UTF-8 text; re-save the file as UTF-8")]) from None


def read_json(path: str, data: bytes) -> DataFile:
    """A JSON file holding a list of row objects (each row's position is the line it starts on). A file of one object
    per line (JSON Lines named .json) is read as JSON Lines; a single row object is one row; an object that wraps the
    list (`{"data": [...]}`) is an error with a hint."""
    text = decode_text(path, data)
    if not text.strip():
        return DataFile(path, [], [], "line")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl_bytes(path, data)
        raise DataFormatError([Problem(path, e.lineno, "(row)", f"malformed JSON: {e.msg} at column {e.colno}")]) \
            from None
    if isinstance(value, dict):
        wrapped = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if wrapped:
            key = wrapped[0]
            raise DataFormatError([Problem(path, 1, "(row)", f"the rows are wrapped in an object under '{key}'; the "
                                                             f"file must hold the list of rows itself (e.g. jq "
                                                             f"'.{key}' file.json > rows.json) or one row per line")])
        return DataFile(path, [(1, value)], [], "line")
    if not isinstance(value, list):
        raise DataFormatError([Problem(path, 1, "(row)", f"expected a list of row objects, got "
                                                         f"{type(value).__name__}")])
    rows, problems = [], []
    for (line, item) in zip(json_list_lines(text), value):
        if isinstance(item, dict):
            rows.append((line, item))
        else:
            problems.append(Problem(path, line, "(row)", f"expected a JSON object, got {type(item).__name__}"))
    return DataFile(path, rows, problems, "line")


def json_list_lines(text: str) -> list[int]:
    """The line on which each item of the (valid) top-level JSON list in `text` starts."""
    decoder, lines = json.JSONDecoder(), []
    i, line, counted = text.index("[") + 1, 1, 0
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        if text[i] == "]":
            return lines
        line += text.count("\n", counted, i)
        counted = i
        lines.append(line)
        _, i = decoder.raw_decode(text, i)


def csv_value(text: str, column: str, kind: type):
    """One CSV cell: a cell holding a JSON (or Python-repr) list or object is decoded (messages, responses); a column
    outside `TEXT_COLUMNS` whose cells all read as booleans or numbers gets that type (`kind`); else the string."""
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
    fields; a record whose number of fields differs from the header's is a problem on its line."""
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
