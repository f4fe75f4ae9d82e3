"""Command-line parsing and the machine-dependent defaults every config shares."""

from __future__ import annotations

import inspect
import re
import sys

import torch
from transformers import HfArgumentParser


def resolve_device_defaults(config) -> None:
    """Fill the `None` precision and memory fields of a training config for the machine it runs on.

    bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU; activation checkpointing on GPUs only.
    Values the user set are kept. Modifies `config` in place, before `TrainingArguments.__post_init__` checks it.
    """
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    if config.bf16 is None and config.fp16 is None:
        config.bf16 = on_gpu and torch.cuda.is_bf16_supported()
        config.fp16 = on_gpu and not config.bf16
    config.bf16, config.fp16 = bool(config.bf16), bool(config.fp16)
    if config.activation_checkpointing is None and config.gradient_checkpointing is None:
        config.activation_checkpointing = on_gpu
    if not torch.cuda.is_available():
        config.use_cpu = True


def parse_args(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Build each dataclass from its defaults plus `--field value` flags.

    Returns one instance per type, in order. Exits with a message naming the flag if a flag is unknown.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(dataclass_types)
    comments = {name: text for t in dataclass_types for name, text in field_comments(t).items()}
    for action in parser._actions:  # --help shows this toolkit's one-line comments
        if action.dest in comments:
            action.help = comments[action.dest].replace("%", "%%")
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unknown flag(s): {' '.join(unknown)}  (see --help for the fields you can set)")
    return tuple(parsed)


FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^\n#]*#\s*(.+)$", re.MULTILINE)


def field_comments(cls) -> dict[str, str]:
    """Map each field of a config dataclass to the one-line comment written after it in this toolkit's files.

    Classes installed as packages (TRL, transformers) are skipped: their fields keep their own help.
    """
    comments = {}
    for klass in reversed(cls.__mro__):
        try:
            if "site-packages" in inspect.getfile(klass):
                continue
            comments.update(FIELD_COMMENT.findall(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
    return comments
