"""Where a data problem is, and the errors the data layer raises for it.

A `Problem` is printed as `FILE:LINE: field 'NAME': what is wrong` for text files (JSON Lines, JSON, CSV) and as
`FILE:row N: field 'NAME': ...` for Parquet / Arrow files and `datasets.save_to_disk` folders (N is the row index,
0-based, as `dataset[N]` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.errors import UserError

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


class RowError(ValueError):
    """A problem with one row; `field` names the field at fault. The loader adds the file and the line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
