"""Defaults shared by every training config in this toolkit (reward model and all RLHF methods).

Each method's config (e.g. `dpo_config.py`) is `class XConfig(BaseConfig, trl.XConfig)`: TRL's own config with
these defaults on top. Every field can be changed here, in the method's file, or on the command line
(`--learning_rate 1e-5`). Fields left at `None` are picked for the machine you run on, so one config runs
unchanged on a laptop CPU and on a GPU node.
"""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from common_args import check_choices
from rlhfkit.errors import ConfigError

# Fields that must be at least 1 when set (None means "not used" for the optional ones).
AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                "max_length", "max_prompt_length", "max_completion_length", "response_length", "max_new_tokens",
                "num_generations", "num_ppo_epochs", "num_mini_batches", "num_samples_per_prompt",
                "local_rollout_forward_batch_size")


@dataclass
class BaseConfig:
    bf16: bool | None = field(default=None, metadata={"help": "None: bf16 on GPUs that support it, fp32 on CPU"})
    fp16: bool | None = field(default=None, metadata={"help": "None: fp16 only on GPUs without bf16 (e.g. V100, T4)"})
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "None: on for GPUs (saves memory), off on CPU (30%% faster)"})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "old name of activation_checkpointing; leave at None"})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "passes over the training data (max_steps > 0 overrides it)"})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "rows per device per step (pairs; KTO, SFT rows; prompts or completions)"})
    per_device_eval_batch_size: int = field(default=4, metadata={"help": "rows per device per eval step"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "effective batch = this x per_device batch x number of processes"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule after warm-up"})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "warm-up: a fraction of the steps if < 1, else a number of steps"})
    logging_steps: float = field(default=5, metadata={"help": "log metrics (and curve points) every N steps"})
    eval_strategy: str = field(
        default="no", metadata={"help": '"steps" or "epoch" to evaluate during training (needs eval data)'})
    save_strategy: str = field(
        default="steps", metadata={"help": "when to write checkpoint-N/ for --resume_from_checkpoint"})
    save_steps: float = field(default=200, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=2, metadata={"help": "keep only the newest N checkpoints"})
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "False: a NaN / inf loss is logged as is, so the NaN guard sees it"})
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": '"none", "tensorboard", "wandb", ...; PNG curves always written'})
    seed: int = field(default=42, metadata={"help": "seed for data order, eval split and initialisation"})

    loss_types: ClassVar[tuple[str, ...]] = ()  # the `loss_type` values the method's TRL trainer accepts (() = none)

    def __post_init__(self):
        check_training_values(self)
        resolve_device_defaults(self)
        super().__post_init__()


def check_training_values(config) -> None:
    """Refuse values no run can train with, while the flags are parsed (before any data or weights load).

    Checks the learning rate (>= 0), the sizes in `AT_LEAST_ONE` (>= 1), `num_train_epochs` (> 0 unless
    `max_steps` > 0), `warmup_steps` (>= 0), each `Literal` field against its choices (`check_choices`) and
    `loss_type` against the config's `loss_types`. Raises `ConfigError` naming the flag.
    """
    if config.learning_rate < 0:
        raise ConfigError(f"--learning_rate must be >= 0, got {config.learning_rate}")
    for name in AT_LEAST_ONE:
        value = getattr(config, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if config.num_train_epochs <= 0 and config.max_steps <= 0:
        raise ConfigError(f"--num_train_epochs must be > 0 (or set --max_steps), got {config.num_train_epochs}")
    if config.warmup_steps < 0:
        raise ConfigError(f"--warmup_steps must be >= 0 (a fraction if < 1, else steps), got {config.warmup_steps}")
    check_choices(config)
    if config.loss_types:
        given = [config.loss_type] if isinstance(config.loss_type, str) else list(config.loss_type)
        unknown = [t for t in given if t not in config.loss_types]
        if unknown:
            raise ConfigError(f"--loss_type {' '.join(unknown)} is not a loss of this method; choose from: "
                              f"{', '.join(config.loss_types)}")


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
