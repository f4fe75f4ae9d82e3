"""Arguments shared by every script: which model, trained how (full / LoRA / QLoRA), on which data.

Edit the defaults below, or override any field on the command line: `python train_rlhf.py --lora_r 32`.
`--trust_remote_code` (default False) and `--max_length` live in the training config (TRL's), not here.
"""

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from rlhfkit import DEMO_MODEL
from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0

DEMO_DATA = "data_example/data.jsonl"
PreferenceKey = Literal["better_response_id", "safer_response_id"]  # PKU-SafeRLHF's two preference labels


@functools.cache
def literal_choices(cls) -> dict[str, tuple]:
    """`{field: allowed values}` for the dataclass fields of `cls` typed `Literal[...]` or `Literal[...] | None`
    (None is then one of the values).
    """
    hints = typing.get_type_hints(cls)
    choices = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        literals = [m for m in members if typing.get_origin(m) is Literal]
        if literals and len(literals) + (type(None) in members) == len(members):
            none = (None,) if type(None) in members else ()
            choices[f.name] = tuple(v for m in literals for v in typing.get_args(m)) + none
    return choices


def check_choices(settings) -> None:
    """Refuse a `Literal` field of a settings dataclass whose value is not one of its choices. The parser already
    refuses these on the command line and in `--config` files; this covers settings built in Python (tests, scripts,
    `dataclasses.replace`). Raises `ConfigError`: `--pairs must be one of best_worst, all, got 'some'`.
    """
    for name, choices in literal_choices(type(settings)).items():
        value = getattr(settings, name)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices if c is not None)
            raise ConfigError(f"--{name} must be one of {allowed}, got {value!r}")


def check_reward_sources(settings, needs: str) -> None:
    """`--reward_model_path` / `--reward_function` given as "none" (or "") become None; raise `ConfigError`
    "`needs` --reward_model_path ... and/or --reward_function ..." if neither is left (PPO, RLOO, GRPO, evaluate.py,
    rejection_sampling.py). With a `--reward_function` and `--reward_model_path` left at its default, where no folder
    is, the function is the only reward: the path becomes None and one note says so.
    """
    for name in ("reward_model_path", "reward_function"):
        if getattr(settings, name) in ("", "none", "None"):
            setattr(settings, name, None)
    default = next(f.default for f in dataclasses.fields(settings) if f.name == "reward_model_path")
    if settings.reward_function and settings.reward_model_path == default and not os.path.exists(default):
        info_rank0(f"[reward] no reward model at the default --reward_model_path {default}: the reward is "
                   f"--reward_function {settings.reward_function} alone (pass --reward_model_path none to say so)")
        settings.reward_model_path = None
    if not settings.reward_model_path and not settings.reward_function:
        raise ConfigError(f"{needs} --reward_model_path (reward_model.py's output) and/or --reward_function "
                          f"file.py:name")


def check_sampling_ranges(settings, counts: tuple[str, ...]) -> None:
    """Refuse sampling settings out of range, while the flags are parsed (evaluate.py, rejection_sampling.py): each
    field in `counts` None or at least 1, `top_p` in (0, 1]. Raises `ConfigError` naming the flag.
    """
    for name in counts:
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if not 0 < settings.top_p <= 1:
        raise ConfigError(f"--top_p must be in (0, 1] (1: off), got {settings.top_p}")


@dataclass
class ModelArgs:
    model_name_or_path: str = field(
        default=DEMO_MODEL, metadata={"help": "a local checkpoint directory (config.json + safetensors + tokenizer)"})
    train_mode: Literal["full", "lora", "qlora"] = field(
        default="lora", metadata={"help": "qlora = 4-bit NF4 base + LoRA (not with ZeRO-3)"})
    train_data_path: list[str] | str = field(
        default_factory=lambda: [DEMO_DATA], metadata={"help": 'one or more files; README "Data format"'})
    train_data_ratios: list[float] | None = field(
        default=None, metadata={"help": "share of each train file to use, in (0, 1], one per file; None: all"})
    eval_data_path: str | None = field(
        default=None, metadata={"help": "a separate eval file; if None, eval_split_size rows are held out"})
    eval_split_size: float = field(
        default=0.1, metadata={"help": "held-out eval rows: a fraction if < 1, a count if >= 1, 0 for none"})
    drop_bad_rows: bool = field(
        default=False, metadata={"help": "False: stop on bad rows and list them; True: skip them and count them"})
    preference_key: PreferenceKey = field(
        default="better_response_id", metadata={"help": "PKU-SafeRLHF: helpfulness, or safer_response_id"})
    pairs: Literal["best_worst", "all"] = field(
        default="best_worst", metadata={"help": "ranked responses: best vs worst, or every scored pair"})
    prompt_turns: Literal["last", "all"] = field(
        default="last", metadata={"help": "chats as prompts (online RL): the last user turn, or each one"})
    check: bool = field(default=False, metadata={"help": "preflight: tokenizer and data only, print what would be "
                                                         "trained, exit 0 (no weights)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": '"all-linear" or comma-separated names, e.g. "q_proj,v_proj"'})
    use_dora: bool = field(
        default=False, metadata={"help": "DoRA (weight-decomposed LoRA, Liu et al. 2024): a bit better, a bit slower"})

    def __post_init__(self):
        """Refuse data, LoRA and split settings that cannot work, while the flags are parsed. Raises `ConfigError`.

        One `--train_data_path` stays a plain path (a string); several stay a list.
        """
        self.check_data_flags()
        size = self.eval_split_size
        if size < 0 or (size >= 1 and size != int(size)):
            raise ConfigError(f"--eval_split_size must be a fraction in [0, 1) or a whole number of rows, got {size}")
        if self.train_mode == "full":
            return
        if self.lora_r < 1:
            raise ConfigError(f"--lora_r must be at least 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"--lora_alpha must be > 0 (scale = alpha / r), got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules.strip(" ,"):
            raise ConfigError('--lora_target_modules is empty; use "all-linear" or names such as "q_proj,v_proj"')

    def check_data_flags(self):
        """Check the data fields and the choices (`__post_init__`); raises `ConfigError` naming the flag."""
        check_choices(self)
        paths = [self.train_data_path] if isinstance(self.train_data_path, str) else list(self.train_data_path)
        if not paths:
            raise ConfigError("--train_data_path: give at least one data file")
        self.train_data_path = paths[0] if len(paths) == 1 else paths
        ratios = self.train_data_ratios
        if ratios is not None:
            if len(ratios) != len(paths):
                raise ConfigError(f"--train_data_ratios: give one ratio per --train_data_path file ({len(paths)} "
                                  f"file(s), {len(ratios)} ratio(s))")
            bad = [r for r in ratios if not 0 < r <= 1]
            if bad:
                raise ConfigError(f"--train_data_ratios: each ratio is the share of its file to use, in (0, 1]; "
                                  f"got {bad[0]:g}")


@dataclass
class CommonArgs(ModelArgs):
    rlhf_type: str = field(
        default="DPO", metadata={"help": "the method; train_rlhf.py's METHODS table lists the choices"})
