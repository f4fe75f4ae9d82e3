"""`--config FILE`: a YAML recipe or a run's run_config.json as the defaults of the flags, every value checked against
its field's type before anything runs. `rlhfkit.args.parse_args` calls `apply_config_file` when `--config` is given.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing

import yaml
from trl import TrlParser

from rlhfkit.errors import ConfigError, PathNotFoundError


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


def apply_config_file(parser: TrlParser, path: str, unknown_key=lambda key: "") -> None:
    """Make the settings of the `--config` file at `path` the parser's defaults (flags still win).

    Uses TRL's `TrlParser.set_defaults_with_config`. Sets the file's `env:` variables. Raises `ConfigError` naming the
    file and the key for a key that is no field of the script, a value outside a field's choices, or a value of the
    wrong type for its field (`value_fits`), e.g.
    `--config r.yaml: lora_target_modules: expected a string, got a list ['q_proj', 'v_proj']`;
    `unknown_key(key)` adds to the message of an unknown key (which methods take it).
    """
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
            raise ConfigError(f"--config {path}: unknown key {key!r}{unknown_key(key)} (see --help for the "
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


