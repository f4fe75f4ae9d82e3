"""Command-line parsing: flags, run_config.json; `--config` recipes are read by `rlhfkit/recipes.py`."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from trl import TrlParser

from rlhfkit.errors import ConfigError, UserError
from rlhfkit.log import set_log_level
from rlhfkit.model_folders import resolve_model_paths


class ToolkitArgumentParser(TrlParser):
    """TRL's `TrlParser` (an `HfArgumentParser` whose defaults a config file can set) that never guesses and never
    prints a usage wall.

    `allow_abbrev=False`: a shortened or misspelled flag (`--num_train_epoch`) is an unknown flag, not silently the
    flag it is a prefix of. argparse's own errors (a bad value type, a missing value) become `ConfigError`, which the
    entry point prints as one `error:` line.
    """

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def _check_value(self, action, value):
        """A value outside a `Literal` field's choices: `--name must be one of a, b (invalid choice: 'c')`."""
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(None, f"{action.option_strings[0]} must be one of "
                                               f"{', '.join(map(str, action.choices))} (invalid choice: {value!r})")

    def error(self, message: str):
        raise ConfigError(f"{message}  (see --help for the fields you can set)")


def run_config(method: str, args, config, world_size: int) -> dict:
    """The settings of a run as `run_config.json` records them, and as `rlhfkit.recipes.read_config_file` reads them
    back: `{"method": method, "args": {...}, "training": {...}, "world_size": world_size}`, the same groups for every
    stage.

    Uses `TrainingArguments.to_dict` where there is one, which masks every field named `*_token`; only the Hub token
    is a secret, so the others (e.g. PPO's `stop_token`) are written as they are.
    """
    settings = {"method": method}
    for name, obj in (("args", args), ("training", config)):
        values = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        for key, value in values.items():
            if value == f"<{key.upper()}>" and "hub" not in key:
                values[key] = getattr(obj, key)
        settings[name] = values
    settings["world_size"] = world_size  # processes; effective batch = this x per-device x accumulation
    return settings


def taken_by(names, owners) -> str:
    """`" (--x is a flag of DPO, KTO)"` for the first of `names` that `owners(name) -> [methods]` knows, else ""."""
    for name in names:
        methods = owners(name) if owners else []
        if methods:
            return f" (--{name} is a flag of {', '.join(methods)} only)"
    return ""


def take_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """`(FILE, argv without --config FILE)`, or `(None, argv)` without `--config`. Raises `ConfigError` for a
    `--config` with no file.
    """
    for i, flag in enumerate(argv):
        if flag == "--config" or flag.startswith("--config="):
            path = flag.split("=", 1)[1] if "=" in flag else (argv[i + 1] if i + 1 < len(argv) else None)
            if not path:
                raise ConfigError("--config needs a file: --config recipe.yaml")
            return path, argv[:i] + argv[i + (1 if "=" in flag else 2):]
    return None, argv


def refuse_non_finite(argv: list[str]) -> None:
    """Raise `ConfigError` naming the flag for a value nan or inf (`--beta nan`): range checks such as `>= 0` let
    NaN through (every comparison with it is False), and no setting of this toolkit takes an infinite value.
    """
    flag = None
    for item in argv:
        name, _, value = item.partition("=") if item.startswith("--") else (flag, "", item)
        flag = item if item.startswith("--") and "=" not in item else flag
        try:
            number = float(value)
        except ValueError:  # not a number: argparse and the configs check it
            continue
        if not math.isfinite(number):
            raise ConfigError(f"{name}: {value} is not a finite number; give one (e.g. {name} 0.1)")


def parse_args(dataclass_types: tuple, argv: list[str] | None = None, owners=None) -> tuple:
    """Build each dataclass from its defaults, then `--config FILE` (a YAML recipe or a run's run_config.json), then
    `--field value` flags.

    Returns one instance per type, in order. Raises `ConfigError` naming the flag if a flag is unknown or its value
    is refused (by argparse, or by a config's `__post_init__`, whose `ValueError`s all concern the flags given).
    Model folders that exist become absolute paths (`rlhfkit.model_folders.resolve_model_paths`).
    `owners(field) -> [method names]`, if given, names the methods that take an unknown flag (a flag of another method).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ToolkitArgumentParser(dataclass_types)
    path, argv = take_config_flag(argv)
    if path is not None:
        from rlhfkit.recipes import apply_config_file  # here: a run without a recipe loads no recipe code

        apply_config_file(parser, path, lambda key: taken_by([key], owners))
    refuse_non_finite(argv)
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True,
                                                              look_for_args_file=False)
    except UserError:
        raise
    except ValueError as error:  # a config's __post_init__ refused a value
        raise ConfigError(str(error)) from error
    if unknown:
        names = [u[2:].split("=")[0] for u in unknown if u.startswith("--")]
        raise ConfigError(f"unknown flag(s): {' '.join(unknown)}{taken_by(names, owners)}  (see --help for the "
                          f"fields you can set)")
    for settings in parsed:  # saved adapters and run_config.json then record where each model really is
        resolve_model_paths(settings)
        if hasattr(settings, "log_level"):  # TrainingArguments' --log_level also sets the toolkit's own lines
            set_log_level(settings.log_level)
    return tuple(parsed)
