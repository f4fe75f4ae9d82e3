"""JSON Lines and JSON data files, and what every reader returns: a `DataFile` of `(position, dict)` rows plus the
`Problem`s of rows that could not be read at all; positions are 1-based line numbers for text files and 0-based row
indices for Parquet / Arrow files and saved datasets (`DataFile.unit` says which). CSV, Parquet, Arrow and saved
datasets are read by `rlhfkit/data/tables.py`; `rlhfkit.data.loader.read_file` picks the reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rlhfkit.errors import UserError

COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"), (b"(\xb5/\xfd", "zstd", "unzstd"),
              (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ", "xz", "unxz"))  # magic bytes, name, the command undoing it


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


def read_bytes(path: str) -> bytes:
    """The bytes of a text data file; raises `DataFormatError` if the file is compressed."""
    with open(path, "rb") as f:
        data = f.read()
    for prefix, kind, fix in COMPRESSED:
        if data.startswith(prefix):
            raise DataFormatError([Problem(path, 1, "(row)", f"the file is {kind}-compressed; {fix} it first "
                                                             f"(data files are plain text, or Parquet / Arrow)")])
    return data


def not_empty(out: DataFile) -> DataFile:
    """`out`, or `DataFormatError` if the file held neither rows nor problems."""
    if not out.rows and not out.problems:
        raise DataFormatError([Problem(out.path, 1, "(row)", "the file is empty")])
    return out


# ----------------------------------------------------------------------------------------------------------
# Text files


def read_jsonl_bytes(path: str, data: bytes) -> DataFile:
    """JSON Lines (UTF-8; a leading byte-order mark is accepted): one row per non-blank line; a line that is not
    UTF-8, not valid JSON, a JSON array of rows, or not an object is a problem on that line.
    """
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


def read_json_bytes(path: str, data: bytes) -> DataFile:
    """A JSON file holding a list of row objects (each row's position is the line it starts on). A file of one object
    per line (JSON Lines named .json) is read as JSON Lines; a single row object is one row; an object that wraps the
    list (`{"data": [...]}`) is an error with a hint.
    """
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
