"""Command-line parsing: flags, `--config` recipes (their values checked against the field types), run_config.json."""

from __future__ import annotations

from rlhfkit.log import set_log_level

import argparse
import dataclasses
import math
import os
import sys
import types
import typing

import yaml
from trl import TrlParser

from rlhfkit.errors import ConfigError, PathNotFoundError, UserError
from rlhfkit.model import resolve_model_paths


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


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: str) -> dict:
    """The settings in a YAML recipe or in a run's `run_config.json`, as one flat `{field: value}` dict.

    A recipe is a YAML mapping of field names to values (and optionally `env:`, environment variables, as in TRL).
    `run_config.json` groups the fields by dataclass (`{"method": "DPO", "args": {...}, "training": {...},
    "world_size": 2}`); the groups are merged, `method` and `world_size` are left out, and so are values
    `TrainingArguments.to_dict` masked (`"hub_token": "<HUB_TOKEN>"`). Raises `PathNotFoundError` (no such file) or
    `ConfigError` (not a mapping).
    """
    if not os.path.isfile(path):
        raise PathNotFoundError(f"--config: no such file {path}")
    with open(path, encoding="utf-8") as f:
        try:
            settings = yaml.load(f, Loader=UniqueKeyLoader)  # JSON is YAML too
        except yaml.YAMLError as error:
            raise ConfigError(f"--config {path}: not valid YAML: {error}") from error
    if settings is None:
        raise ConfigError(f"--config {path}: the file is empty; write field: value lines (see recipes/cpu/)")
    if not isinstance(settings, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field names to values, got "
                          f"{type(settings).__name__}")
    if "world_size" in settings and all(isinstance(v, dict) for k, v in settings.items()
                                        if k not in ("method", "world_size")):
        settings = {k: v for group in settings.values() if isinstance(group, dict) for k, v in group.items()}
    return {k: v for k, v in settings.items() if v != f"<{k.upper()}>"}


def run_config(method: str, args, config, world_size: int) -> dict:
    """The settings of a run as `run_config.json` records them, and as `read_config_file` reads them back:
    `{"method": method, "args": {...}, "training": {...}, "world_size": world_size}`, the same groups for every stage.

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


def apply_config_file(parser: ToolkitArgumentParser, argv: list[str], owners=None) -> list[str]:
    """Take `--config FILE` out of `argv` and make the file's settings the parser's defaults (flags still win).

    Uses TRL's `TrlParser.set_defaults_with_config`. Sets the file's `env:` variables. Returns `argv` without
    `--config FILE`. Raises `ConfigError` naming the file and the key for a key that is no field of the script, a
    value outside a field's choices, or a value of the wrong type for its field (`value_fits`), e.g.
    `--config r.yaml: lora_target_modules: expected a string, got a list ['q_proj', 'v_proj']`.
    """
    argv = list(argv)
    for i, flag in enumerate(argv):
        if flag == "--config" or flag.startswith("--config="):
            path = flag.split("=", 1)[1] if "=" in flag else (argv[i + 1] if i + 1 < len(argv) else None)
            del argv[i:i + (1 if "=" in flag else 2)]
            break
    else:
        return argv
    if not path:
        raise ConfigError("--config needs a file: --config recipe.yaml")
    settings = read_config_file(path)
    env = settings.pop("env", None) or {}
    if not isinstance(env, dict):
        raise ConfigError(f"--config {path}: env: expected a mapping of variable names to values, got "
                          f"{describe_value(env)}")
    actions = {a.dest: a for a in parser._actions}
    fields = dataclass_field_types(parser.dataclass_types)
    for key, value in settings.items():
        action = actions.get(key)
        if action is None:
            raise ConfigError(f"--config {path}: unknown key {key!r}{taken_by([key], owners)} (see --help for the "
                              f"fields you can set)")
        if action.choices and value is not None and value not in action.choices:
            raise ConfigError(f"--config {path}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--config {path}: {key}: {value} is not a finite number; give one")
        if key in fields and value_fits(value, fields[key]) is False:
            raise ConfigError(f"--config {path}: {key}: expected {expected_type(fields[key], value)}, got "
                              f"{describe_value(value)}")
    for name, value in env.items():  # once every key is checked: a refused recipe changes nothing
        os.environ[str(name)] = str(value)
    parser.set_defaults_with_config(**settings)
    return argv


def dataclass_field_types(dataclass_types) -> dict:
    """`{field name: annotation}` for every init field of the dataclasses (TRL's and transformers' too).

    Uses `typing.get_type_hints`, not `Field.type`, which `HfArgumentParser` rewrites (`int | None` becomes `int`).
    """
    fields = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        fields.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})
    return fields


def _members(hint) -> tuple:
    """The types of a `Union` / `X | Y` annotation, or `(hint,)`."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


BOOL_WORDS = ("true", "false", "yes", "no", "y", "n", "t", "f", "1", "0")  # what transformers' string_to_bool takes


def value_fits(value, hint) -> bool | None:
    """Whether a `--config` file's value fits a field's annotation: True, False, or None when this cannot tell
    (`dict`, `tuple`, enums, classes: the field's own parsing and checks then judge it).

    The rules follow what the command line accepts: `list[X]` takes a YAML list of X (a single value is refused,
    even a string for `list[str]`), `str` a string, `bool` a boolean or a word the command line takes ("true",
    "yes", "0", ...), `int` an integer (not a boolean), `float` an integer or a float, and numbers written as
    strings (YAML reads `1e-4` as a string) where argparse would convert them. Null fits only a type that allows
    None.
    """
    members = _members(hint)
    if len(members) > 1:
        verdicts = [value_fits(value, m) for m in members]
        return True if True in verdicts else None if None in verdicts else False
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in BOOL_WORDS)
    if hint in (int, float):
        if isinstance(value, bool):
            return False
        return isinstance(value, (int, hint)) or (isinstance(value, str) and _converts(hint, value))
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        if not isinstance(value, list):
            return False
        item = (typing.get_args(hint) or (typing.Any,))[0]
        return all(value_fits(v, item) is not False for v in value)
    return None


def _converts(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


LIST_OF = {str: "strings", int: "integers", float: "numbers", bool: "booleans (true or false)"}
A_TYPE = {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true or false)"}


def expected_type(hint, value) -> str:
    """What a field takes, in words, for the error on a `--config` value that does not fit (`value_fits`)."""
    words = []
    for member in _members(hint):
        if member is type(None):
            continue
        if typing.get_origin(member) is list:
            item = (typing.get_args(member) or (typing.Any,))[0]
            words.append(f"a list of {LIST_OF[item]}" if isinstance(value, list) and item in LIST_OF
                         else "a list (a YAML list, as TRL's own configs take)")
        elif typing.get_origin(member) is typing.Literal:
            words.append("one of " + ", ".join(map(str, typing.get_args(member))))
        else:
            words.append(A_TYPE.get(member, getattr(member, "__name__", str(member))))
    if type(None) in _members(hint):
        words.append("null")
    return " or ".join(words)


def describe_value(value) -> str:
    """A `--config` value as the error shows it: `a list ['q_proj', 'v_proj']`, `float 0.5`, `null`."""
    if value is None:
        return "null"
    kind = {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 100 else text[:97] + '...'}"


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
    Model folders that exist become absolute paths (`rlhfkit.model.resolve_model_paths`). `owners(field) -> [method
    names]`, if given, names the methods that take an unknown flag (a flag of another method).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ToolkitArgumentParser(dataclass_types)
    argv = apply_config_file(parser, argv, owners)
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
