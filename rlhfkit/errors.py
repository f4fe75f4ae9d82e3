"""The errors this toolkit raises on purpose, and the boundary that turns them into one clear line.

Every entry point ends with `run_cli(main)`:

    if __name__ == "__main__":
        run_cli(main)

A `UserError` (bad data, a bad flag, a missing path, a non-empty output folder) is printed as `error: <message>` on
stderr by the first process only (rank 0 under `accelerate launch`), with no traceback, and the process exits with
status 2. Any other exception is a bug and keeps its full traceback. `RLHF_DEBUG=1` shows the traceback of user
errors too. (`--debug` is taken: it is a `transformers.TrainingArguments` field.)

Each `UserError` subclass also derives from the built-in exception it stands for (`ValueError`,
`FileNotFoundError`, `FileExistsError`), so `except ValueError` around a call still catches it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

EXIT_USER_ERROR = 2  # argparse's status for a usage error


class UserError(Exception):
    """An error in what the user gave (data, flags, paths): shown as one `error:` line, exit status 2."""


class ConfigError(UserError, ValueError):
    """A flag or config value that cannot work; the message names the flag and how to fix it."""


class PathNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is of the wrong kind)."""


class OutputExistsError(UserError, FileExistsError):
    """`output_dir` already holds files and the run would overwrite them."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss became NaN or inf (usually a learning rate too high); the message names the step and the last good
    checkpoint to resume from.
    """


def read_json(path: str):
    """The JSON value in the file at `path`. Raises `PathNotFoundError` (no such file) or `ConfigError` naming the
    file when it cannot be read or parsed (cut short, not UTF-8, not JSON).
    """
    if not os.path.isfile(path):
        raise PathNotFoundError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not readable JSON (cut short?): {error}") from None


def shorten(value, limit: int = 60) -> str:
    """`repr(value)` for a message, cut to `limit` characters (ending in "...")."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ToolParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` for the `python -m rlhfkit.<tool>` commands: no prefix matching, and usage errors
    become `ConfigError` (one `error:` line, exit status 2) like every other bad input.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ConfigError(f"{message}  (see {self.prog} --help)")


def is_main_process() -> bool:
    """True on the process that should talk to the user: rank 0 under a launcher, or the only process.

    Reads the launcher's environment (`RANK`), so it works before `torch.distributed` or accelerate start.
    """
    return os.environ.get("RANK", "0") == "0"


def debug_enabled() -> bool:
    """True when `RLHF_DEBUG` is set to anything but "", "0" or "false": user errors then keep their traceback."""
    return os.environ.get("RLHF_DEBUG", "").lower() not in ("", "0", "false")


def report_user_error(error: BaseException, stream=None) -> None:
    """Print `error: <message>` (rank 0 only; the traceback too when `RLHF_DEBUG` is set).

    Under `accelerate launch` / `torchrun` every process also writes the message to its elastic error file, so the
    launcher's failure summary that follows shows it as the root cause instead of a link to the docs.
    """
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with open(error_file, "w") as f:
            json.dump({"message": f"error: {error}", "timestamp": int(time.time())}, f)
    if not is_main_process():
        return
    stream = stream or sys.stderr
    if debug_enabled():
        traceback.print_exception(error, file=stream)
    print(f"error: {error}", file=stream, flush=True)


RANK_GRACE_SECONDS = 10  # how long ranks other than 0 wait after a `UserError` before they exit (`run_cli`)


def run_cli(main: Callable, argv: list[str] | None = None) -> None:
    """Call `main(argv)` behind the error boundary and exit.

    Exits with status 0 on success, 2 after printing a `UserError` as one `error:` line. Other exceptions
    propagate unchanged (with their traceback), and so does `SystemExit` (argparse's own usage errors, `--help`).
    Under a launcher the other ranks wait `RANK_GRACE_SECONDS` before exiting: the launcher stops every process as
    soon as one fails, so a rank that exits first would stop rank 0 before it prints the (same) error.
    """
    try:
        main(argv)
    except UserError as error:
        report_user_error(error)
        if not is_main_process():
            time.sleep(RANK_GRACE_SECONDS)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(0)
