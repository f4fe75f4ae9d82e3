"""Rewards: score (prompt, answer) pairs with a reward model, or with a Python reward function.

A reward model (reward_model.py's output; one folder or an ensemble `"rm_a,rm_b"`, checked by `check_reward_model_path`
and loaded by `load_reward_model` before anything else) reads each answer rendered with its own tokenizer and chat
template, exactly as it was trained. A reward function has TRL's signature
`f(prompts, completions, completion_ids, **columns) -> list[float]` (`script/example_reward.py`); it is imported and
checked against the prompt rows before any weights load (`load_reward_function`, `check_gold_columns`), and what it
returns is checked at every call (`checked_reward_function`). Used by PPO, RLOO, GRPO, rejection sampling,
evaluate.py and the reward-model probe.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import os
import traceback
from collections.abc import Callable, Sequence

import torch

from rlhfkit.errors import ConfigError, PathNotFoundError, UserError, shorten
from rlhfkit.model import load_frozen_model, load_tokenizer, set_pad_token
from rlhfkit.model_folders import is_adapter_dir, resolve_checkpoint, reward_model_paths, safetensors_weight_shapes
from rlhfkit.reward_ensemble import Combine, RewardEnsemble

ScoreFn = Callable[[list, list], Sequence[float]]  # (prompts as message lists or text, answer strings) -> scores


def check_reward_model_path(path: str, flag: str = "--reward_model_path") -> None:
    """Fail early, saying how to make one, if a reward (or value) model folder is missing, is a LoRA adapter whose
    base model folder is gone (`resolve_checkpoint`), has a cut file, or has a score head with more than one output.
    Reads safetensors headers, no weights. An ensemble (`"rm_a,rm_b"`, `rlhfkit.reward_ensemble`) has each member
    checked, no member twice, and one vocabulary (their tokenizers are read). Raises `PathNotFoundError` or
    `ConfigError`.
    """
    paths = reward_model_paths(path)
    if len(paths) > 1:
        if flag == "--value_model_path":
            raise ConfigError(f"--value_model_path {path}: the value model is one model; give one folder")
        if len({os.path.realpath(p) for p in paths}) < len(paths):
            raise ConfigError(f"{flag} {path}: a member is given twice; an ensemble needs different reward models")
        for member in paths:
            check_reward_model_path(member, flag)
        vocabularies = [load_tokenizer(member).get_vocab() for member in paths]
        if any(v != vocabularies[0] for v in vocabularies[1:]):
            raise ConfigError(f"{flag} {path}: the members' tokenizers differ; an ensemble scores one tokenization "
                              f"(train every member from the same base model)")
        return
    if not (os.path.isfile(os.path.join(path, "config.json")) or is_adapter_dir(path)):
        if flag == "--value_model_path":
            raise PathNotFoundError(f"--value_model_path {path}: no model there (no config.json / adapter_config"
                                    f".json); leave it unset to start the value model from the reward model")
        alone = "; or score with a --reward_function alone: --reward_model_path none" \
            if flag == "--reward_model_path" else ""
        raise PathNotFoundError(f"reward model not found: {path}; train one first with `python reward_model.py "
                                f"--output_dir {path}` (the folder needs config.json or adapter_config.json){alone}")
    checkpoint = resolve_checkpoint(path)
    heads = {k: v for k, v in safetensors_weight_shapes(checkpoint.adapter or checkpoint.base).items()
             if k.endswith("score.weight")}
    outputs = next((shape[0] for shape in heads.values()), 1)
    if outputs != 1:
        raise ConfigError(f"{flag} {path}: its score head has {outputs} outputs, a reward model has one (a "
                          f"checkpoint-N/ of an ODIN run still holds the length head: use the run's final folder)")


def load_reward_model(path: str, device: str | None = None, config=None, merge: bool = False,
                      base_model_path: str | None = None, ensemble: Combine = "mean"):
    """A reward model saved by reward_model.py (full, or a LoRA adapter with its score head) and its tokenizer,
    frozen, for scoring: `(model, tokenizer)`, on `device` (default: CUDA if available, else CPU), the tokenizer's EOS
    as pad token if it has none. `config` gives the precision (`inference_dtype`); `merge` folds an adapter into the
    weights (a merged model's `config._name_or_path` is `path`: TRL names the reward `rewards/<dir name>`).
    Several folders (`"rm_a,rm_b"`): a `RewardEnsemble` of them, scores combined by `ensemble` (mean, min,
    mean_minus_std), with the first member's tokenizer. Raises `PathNotFoundError` as `resolve_checkpoint` does.
    """
    paths = reward_model_paths(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if len(paths) > 1:
        members = [load_reward_model(member, device, config, merge, base_model_path)[0] for member in paths]
        return RewardEnsemble(members, ensemble).eval().requires_grad_(False), load_tokenizer(paths[0])
    tokenizer = load_tokenizer(path)
    model = load_frozen_model(path, config, task_type="SEQ_CLS", tokenizer=tokenizer, device=device, merge=merge,
                              base_model_path=base_model_path)
    return model, tokenizer


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
    """Import a reward function from `"path/to/file.py:name"` or `"package.module:name"`, before any weights load.

    Returns it wrapped by `checked_reward_function` (same `__name__` and attributes). Raises `ConfigError` (no
    ":name", no such module or function, not callable, or the file does not import: its syntax error, a module it
    imports that is not installed, or any other error while importing, each named with the file and line) or
    `PathNotFoundError` (no such file).
    """
    if ":" not in spec:
        raise ConfigError(f"--reward_function {spec!r}: expected FILE.py:NAME or MODULE:NAME")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise PathNotFoundError(f"--reward_function: no such file {where}")
            module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(where))[0], where)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ModuleNotFoundError as error:
        if error.name and (where + ".").startswith(error.name + "."):  # the module named in the spec is not there
            raise ConfigError(f"--reward_function {spec!r}: no module {error.name!r} (for a file, give its path "
                              f"ending in .py)") from None
        raise ConfigError(f"--reward_function {where}{import_line(error, where)} imports {error.name!r}, which is "
                          f"not installed (pip install it, or remove the import)") from None
    except SyntaxError as error:
        raise ConfigError(f"--reward_function {error.filename or where}:{error.lineno}: {error.msg} (SyntaxError: the "
                          f"file does not import)") from None
    except Exception as error:  # noqa: BLE001 - the user's module ran and failed: its error, not a bug of ours
        if isinstance(error, UserError):
            raise
        raise ConfigError(f"--reward_function {where}{import_line(error, where)}: importing it raised "
                          f"{type(error).__name__}: {error}") from None
    if not hasattr(module, name):
        raise ConfigError(f"--reward_function: {where} has no function {name!r}")
    function = getattr(module, name)
    if not callable(function):
        raise ConfigError(f"--reward_function: {where}:{name} is not callable")
    return checked_reward_function(function)


def import_line(error: BaseException, where: str) -> str:
    """`":LINE"` of the deepest frame of `error`'s traceback in the user's file or module `where` ("" if none)."""
    target = os.path.abspath(where) if where.endswith(".py") else None
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if (target and os.path.abspath(frame.filename) == target)
             or (not target and frame.filename.endswith(where.replace(".", os.sep) + ".py"))]
    return f":{lines[-1]}" if lines else ""


def accepted_keywords(function: Callable) -> set[str] | None:
    """The keyword arguments `function` takes, or None when it takes `**kwargs` (or has no readable signature)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def required_columns(function: Callable) -> list[str]:
    """The data columns `function` cannot run without: its `gold_columns` and the parameters of its signature that
    have no default, besides TRL's `prompts`, `completions`, `completion_ids` and `trainer_state`.
    """
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    needed = [p.name for p in parameters if p.default is p.empty and p.name not in PASSED_BY_TRAINERS
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return list(dict.fromkeys([*getattr(function, "gold_columns", ()), *needed]))


PASSED_BY_TRAINERS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                      "environments")


def check_gold_columns(function: Callable, rows: list[dict], spec: str) -> None:
    """Check a reward function against the prompt rows before any weights load, so that a run stops here instead of
    at its first score: every row has each column the function requires (`required_columns`: its `gold_columns`, as
    the verifiers list them, and its signature's parameters without a default), and, for a function with a
    `check_gold(rows)` attribute (the verifiers), every gold value is of a kind it can score. `spec`: the
    `--reward_function`. Raises `ConfigError` naming the column and the fix.
    """
    for name in required_columns(function):
        lacking = sum(row.get(name) is None for row in rows)
        if lacking:
            raise ConfigError(f"--reward_function {spec} scores against the column '{name}', which {lacking} of the "
                              f"{len(rows)} prompt rows lack; give every row its '{name}' or use another reward")
    check = getattr(function, "check_gold", None)
    if check is not None:
        try:
            check(rows)
        except ValueError as error:
            raise ConfigError(f"--reward_function {spec}: {error}") from None


def checked_reward_function(function: Callable) -> Callable:
    """`function` behind a wrapper with its `__name__` and attributes (TRL logs `rewards/<name>/mean`), which passes
    it only the keyword arguments it takes (all of them if it takes `**kwargs`) and checks what it returns at every
    call (`check_scores`): TRL's trainers call the wrapper, and so does `call_reward_function`.
    """
    if getattr(function, "is_checked", False):
        return function
    accepted = accepted_keywords(function)

    @functools.wraps(function)
    def reward(prompts, completions, completion_ids=None, **kwargs):
        given = dict(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        if accepted is not None:
            given = {k: v for k, v in given.items() if k in accepted}
        return check_scores(function(**given), function, prompts)

    reward.is_checked = True
    return reward


def check_scores(out, function: Callable, prompts: list) -> list[float | None]:
    """`out` as a list of floats (None kept: the function has no opinion on that answer, as TRL allows), checked:
    one value per prompt, each a finite real number or None, not all None. Raises `ConfigError` naming the function,
    what it returned and, for a bad value, the prompt.
    """
    name, n = getattr(function, "__name__", repr(function)), len(prompts)
    if out is None or isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__"):
        raise ConfigError(f"reward function {name} returned {shorten(out)} for {n} answers; it must return a list "
                          f"of one float per answer")
    out = list(out.tolist() if hasattr(out, "tolist") else out)
    if len(out) != n:
        raise ConfigError(f"reward function {name} returned {len(out)} values for {n} answers; it must return one "
                          f"float per answer")
    scores = []
    for i, value in enumerate(out):
        number = None if value is None or isinstance(value, (str, bytes, bool)) else as_float(value)
        if value is not None and (number is None or not math.isfinite(number)):
            raise ConfigError(f"reward function {name} returned {shorten(value)} for answer {i + 1} of {n} (prompt "
                              f"{shorten(prompt_text(prompts[i]))}); each score must be a finite number (None: no "
                              f"opinion on that answer)")
        scores.append(number)
    if n and all(s is None for s in scores):
        raise ConfigError(f"reward function {name} returned None for all {n} answers (first prompt "
                          f"{shorten(prompt_text(prompts[0]))}); it must score some of them")
    return scores


def as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def prompt_text(prompt) -> str:
    """The last turn's text of a prompt (a message list or a string)."""
    return prompt[-1].get("content", "") if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) \
        else str(prompt)


def call_reward_function(function: Callable, prompts: list, answers: list[str], completion_ids: list[list[int]],
                         rows: list[dict] | None = None, **extra) -> list[float]:
    """Call a reward function with TRL's signature on (prompt, answer) pairs; returns floats (None -> NaN).

    `rows[i]` is prompt i's data row: its columns other than `prompt` (e.g. a gold `answer`) are passed as keyword
    arguments, one list per column, as TRL's trainers do; `extra` (e.g. `trainer_state`) is passed as is. What it
    returns is checked (`check_scores`): `ConfigError` naming the function and the prompt for a wrong count, a
    value that is not a number, NaN or inf.
    """
    columns = {k: [row.get(k) for row in rows] for k in rows[0] if k != "prompt"} if rows else {}
    completions = [[{"role": "assistant", "content": a}] if isinstance(p, list) else a
                   for p, a in zip(prompts, answers)]
    out = checked_reward_function(function)(prompts=prompts, completions=completions, completion_ids=completion_ids,
                                            **columns, **extra)
    return [float("nan") if x is None else x for x in out]


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
