"""What a run prints: the toolkit's own lines once (rank 0), and none of the libraries' noise a user cannot act on.

    from rlhfkit.log import info_rank0
    info_rank0("[data] data.jsonl: 137 preference pairs")     # printed by rank 0 only

`quiet_libraries()` installs the filters; importing this module changes nothing. Every entry script calls it before it
imports anything else (PEFT and TRL print some of these messages while they load); the `python -m rlhfkit....` tools
call it at the start of `main`. Each filter below says why the message is
harmless. The Trainer's own progress bar (with its ETA) and every warning not listed stay visible.

`--log_level` (`transformers.TrainingArguments`' field: debug, info, warning, error, critical, or passive = info)
also sets how much of the toolkit's own output is printed: `warning` keeps only the warnings.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager

from rlhfkit.errors import is_main_process

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "passive": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
_level = logging.INFO


def set_log_level(name: str | None) -> None:
    """Set how much the toolkit prints, by `TrainingArguments.log_level` name; None or unknown names mean info."""
    global _level
    _level = LEVELS.get(name or "passive", logging.INFO)


def info_rank0(message: str) -> None:
    """Print one of the toolkit's own lines (`[data] ...`, `[PPO] ...`) on rank 0 only, unless `--log_level` is
    warning or higher. Prints through `print`, so it goes to whatever `sys.stdout` is at the time.
    """
    if _level <= logging.INFO and is_main_process():
        print(message, flush=True)


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _OnlyMissingScoreHead(logging.Filter):
    """Drops transformers' load report when it lists only `score.weight | MISSING` (the new head) and, for an untied
    causal LM, `lm_head.weight | UNEXPECTED` (the output layer a classifier does not use).
    """

    EXPECTED = {"score.weight|MISSING|", "lm_head.weight|UNEXPECTED|"}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "LOAD REPORT" not in message:
            return True
        rows = {line.replace(" ", "") for line in message.splitlines()[2:] if "|" in line}  # after the header
        return not ("score.weight|MISSING|" in rows and rows <= self.EXPECTED)


@contextmanager
def score_head_from_elsewhere():
    """While a causal-LM checkpoint loads as a sequence classifier whose `score` head is new by design (the reward
    model reward_model.py trains) or comes from an adapter (a LoRA reward model, PPO's value head): transformers'
    load report that lists only that head as missing is dropped; any other entry is still reported.
    """
    logger, only_head = logging.getLogger("transformers.modeling_utils"), _OnlyMissingScoreHead()
    logger.addFilter(only_head)
    try:
        yield
    finally:
        logger.removeFilter(only_head)


def quiet_libraries() -> None:
    """Filter the known-harmless messages of the pinned libraries; leave everything else as it is."""
    # bitsandbytes on CPU: the optional `kernels` package (a faster 4-bit matmul from the Hub) is absent, and no
    # machine here reaches the Hub; bitsandbytes falls back to its own CPU kernel, which the QLoRA tests use.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("Failed to load CPU gemm_4bit_forward"))
    # DeepSpeed picks its CPU accelerator when there is no GPU; this is the intended choice on a CPU machine (on a GPU
    # machine it picks CUDA and never prints this).
    logging.getLogger("DeepSpeed").addFilter(_DropMessages("Setting accelerator to CPU"))
    # PEFT / TRL still call the old name `is_gradient_checkpointing`; transformers 5 answers it correctly and only
    # announces the rename.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # accelerate / DeepSpeed call torch.distributed collectives by their old names, which torch 2.13 still runs and
    # only announces as renamed (once per process under `accelerate launch`).
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    # Importing trl.experimental (CPO, ORPO, GKD): the toolkit pins TRL's exact version, so its API cannot move.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # `datasets.map` draws a bar per step of TRL's tokenization; they last well under a second at the sizes a CPU
    # trains on. `show_dataset_progress` turns them back on for large datasets.
    import datasets

    datasets.disable_progress_bars()
    # transformers 5 draws a "Loading weights" bar for every model load (a fraction of a second each here).
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


LARGE_DATASET = 50_000  # rows from which tokenizing takes long enough for a progress bar to help


def show_dataset_progress(n_rows: int) -> None:
    """Turn `datasets`' progress bars back on when the dataset is large (`LARGE_DATASET` rows or more)."""
    if n_rows >= LARGE_DATASET:
        import datasets

        datasets.enable_progress_bars()

