"""Rewards: score (prompt, answer) pairs with a reward model, or with a Python reward function.

A reward model (reward_model.py's output, loaded by `rlhfkit.model.load_reward_model`) reads each answer rendered with
its own tokenizer and chat template, exactly as it was trained. A reward function has TRL's signature
`f(prompts, completions, completion_ids, **columns) -> list[float]` (`script/example_reward.py`). Used by PPO, RLOO,
GRPO, rejection sampling, evaluate.py and the reward-model probe.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Sequence

import torch

from rlhfkit.errors import ConfigError, PathNotFoundError
from rlhfkit.model import set_pad_token

ScoreFn = Callable[[list, list], Sequence[float]]  # (prompts as message lists or text, answer strings) -> scores


def reward_scorer(model, tokenizer, batch_size: int = 8, max_length: int = 1024) -> ScoreFn:
    """Wrap a `num_labels=1` sequence classifier as `score_fn(prompts, answers) -> list[float]` (logit 0 per pair).

    Each pair is rendered with `tokenizer`'s chat template (`prompt + [assistant answer]`, a text prompt as one user
    turn), tokenized without special tokens, cut at `max_length` tokens, and scored `batch_size` texts at a time,
    sorted by length, under `no_grad` in eval mode (the model's mode is restored). Sets the model's pad token id from
    the tokenizer (its EOS if it has no pad token). Raises `ValueError` for sizes < 1 or lists of unequal length.
    """
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_pad_token(model, tokenizer)

    def score_fn(prompts, answers):
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        texts = [tokenizer.apply_chat_template(([{"role": "user", "content": p}] if isinstance(p, str) else list(p))
                                               + [{"role": "assistant", "content": a}], tokenize=False)
                 for p, a in zip(prompts, answers)]
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        scores = [0.0] * len(texts)
        device = getattr(model, "device", None) or next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    chunk = order[start:start + batch_size]
                    batch = tokenizer([texts[k] for k in chunk], padding=True, padding_side="right", truncation=True,
                                      max_length=max_length, add_special_tokens=False, return_tensors="pt")
                    logits = model(input_ids=batch["input_ids"].to(device),
                                   attention_mask=batch["attention_mask"].to(device)).logits
                    for k, s in zip(chunk, logits[:, 0].float().cpu().tolist()):
                        scores[k] = s
        finally:
            model.train(was_training)
        return scores

    return score_fn


def load_reward_function(spec: str) -> Callable:
    """Import a reward function from `"path/to/file.py:name"` or `"package.module:name"`.

    Raises `ConfigError` (no ":name", no such module or function, not callable) or `PathNotFoundError` (no such
    file). Errors inside the user's file propagate with their traceback.
    """
    if ":" not in spec:
        raise ConfigError(f"--reward_function {spec!r}: expected FILE.py:NAME or MODULE:NAME")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise PathNotFoundError(f"--reward_function: no such file {where}")
        module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(where))[0], where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as error:
            raise ConfigError(f"--reward_function {spec!r}: no module {error.name!r} (for a file, give its path "
                              f"ending in .py)") from error
    if not hasattr(module, name):
        raise ConfigError(f"--reward_function: {where} has no function {name!r}")
    function = getattr(module, name)
    if not callable(function):
        raise ConfigError(f"--reward_function: {where}:{name} is not callable")
    return function


def check_gold_columns(function: Callable, rows: list[dict], spec: str) -> None:
    """Raise `ConfigError` if some prompt rows lack a column that `function` lists in its `gold_columns` (the verifiers
    do), so that a run stops before any weights load instead of at its first score. `spec`: the `--reward_function`.
    """
    for name in getattr(function, "gold_columns", ()):
        lacking = sum(row.get(name) is None for row in rows)
        if lacking:
            raise ConfigError(f"--reward_function {spec} scores against the column '{name}', which {lacking} of the "
                              f"{len(rows)} prompt rows lack; give every row its '{name}' or use another reward")


def call_reward_function(function: Callable, prompts: list, answers: list[str], completion_ids: list[list[int]],
                         rows: list[dict] | None = None, **extra) -> list[float]:
    """Call a reward function with TRL's signature on (prompt, answer) pairs; returns floats (None -> NaN).

    `rows[i]` is prompt i's data row: its columns other than `prompt` (e.g. a gold `answer`) are passed as keyword
    arguments, one list per column, as TRL's trainers do; `extra` (e.g. `trainer_state`) is passed as is. Raises
    `ValueError` if the function returns the wrong number of values.
    """
    columns = {k: [row.get(k) for row in rows] for k in rows[0] if k != "prompt"} if rows else {}
    completions = [[{"role": "assistant", "content": a}] if isinstance(p, list) else a
                   for p, a in zip(prompts, answers)]
    out = list(function(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns, **extra))
    if len(out) != len(answers):
        raise ValueError(f"reward function {getattr(function, '__name__', function)} returned {len(out)} values for "
                         f"{len(answers)} answers")
    return [float("nan") if x is None else float(x) for x in out]


def missing_eos_reward(eos_token_id: int, penalty: float) -> Callable:
    """A reward function (TRL's signature) giving `-penalty` to each completion that does not end with
    `eos_token_id` (cut at the length limit) and 0 to the others: RLOO/GRPO's `--missing_eos_penalty`.
    TRL logs it as `rewards/missing_eos/mean`.
    """
    def missing_eos(prompts, completions, completion_ids, **kwargs) -> list[float]:
        return [0.0 if len(ids) and ids[-1] == eos_token_id else -penalty for ids in completion_ids]

    return missing_eos


def remove_length_trend(scores: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, float]:
    """`--length_control batch`: remove a rollout's linear trend of score on answer length, so that no answer earns
    anything by its length alone. `scores` and `lengths` (tokens) are (B,); returns `(scores - slope * (lengths -
    mean length), slope)` with `slope = cov(score, length) / var(length)` (least squares, score units per token; 0
    when all lengths are equal). The mean score is unchanged; an answer of the mean length keeps its score.
    """
    lengths = lengths.to(scores.dtype)
    centred = lengths - lengths.mean()
    variance = (centred ** 2).sum()
    slope = float((centred * (scores - scores.mean())).sum() / variance) if variance > 0 else 0.0
    return scores - slope * centred, slope


def tensor_pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two (n,) tensors (`torch.corrcoef`, differentiable: a loss may use it); 0 when either is
    constant. Reports use `rlhfkit.report.arena.pearson_or_none` (numpy, None when undefined).
    """
    return torch.nan_to_num(torch.corrcoef(torch.stack([x, y.to(x.dtype)]))[0, 1])
