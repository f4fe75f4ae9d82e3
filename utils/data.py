"""Load, check and convert preference data before any model is loaded.

The toolkit's own format is JSON Lines with three fields per row:

    {"prompt":   [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "chosen":   [{"role": "assistant", "content": "the better answer"}],
     "rejected": [{"role": "assistant", "content": "the worse answer"}]}

The prompt may be multi-turn; `chosen` / `rejected` hold only the final assistant turn, kept apart from the
prompt so that the model's chat template joins them at train time. These shapes are recognised too and
converted to the format above, with a printed note saying what was detected:

* plain strings: `{"prompt": "...", "chosen": "...", "rejected": "..."}` (the prompt becomes one user turn);
* raw hh-rlhf transcripts (Bai et al. 2022): only `chosen` / `rejected`, each a whole
  `"\\n\\nHuman: ...\\n\\nAssistant: ..."` transcript; the turns they share become the prompt.

Every problem is reported as `FILE:LINE: field 'NAME': what is wrong`. By default loading stops and lists the
first problems (`DataFormatError`); with `drop_bad_rows=True` bad rows are skipped and counted instead.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass

ROLES = ("system", "user", "assistant", "tool")
MAX_LISTED = 10  # problems listed in one error message

HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLE = {"Human": "user", "Assistant": "assistant"}


@dataclass
class Problem:
    """One bad row: where it is and what is wrong with it."""

    path: str
    line: int  # 1-based line number in the file
    field: str  # the JSON field at fault, or "(row)" for the whole line
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field '{self.field}': {self.message}"


class DataFormatError(ValueError):
    """Raised when a data file has problems; `.problems` lists all of them (the message shows the first 10)."""

    def __init__(self, problems: list[Problem], hint: str = ""):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{len(problems)} problem(s) in the data:\n{shown}{more}{hint}")


class RowError(ValueError):
    """A problem with one row; `field` names the JSON field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# ----------------------------------------------------------------------------------------------------------
# Reading


def read_jsonl(path: str) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """Read a JSON Lines file.

    Returns `(rows, problems)`: `rows` holds `(line_number, object)` for each line that parsed to a JSON object
    (blank lines are skipped); `problems` holds one `Problem` per line that is not valid JSON or not an object.
    Raises `FileNotFoundError` if the file is missing and `DataFormatError` if it holds no rows at all.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    rows, problems = [], []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(Problem(path, number, "(row)", f"malformed JSON: {e.msg} at column {e.colno}"))
                continue
            if not isinstance(obj, dict):
                problems.append(Problem(path, number, "(row)", f"expected a JSON object, got {type(obj).__name__}"))
                continue
            rows.append((number, obj))
    if not rows and not problems:
        raise DataFormatError([Problem(path, 1, "(row)", "the file is empty")])
    return rows, problems


# ----------------------------------------------------------------------------------------------------------
# Checking one row


def _messages(value, field: str) -> list[dict]:
    """Check a list of `{role, content}` messages and return a clean copy (only those two keys)."""
    if not isinstance(value, list) or not value:
        raise RowError(field, f"expected a non-empty list of {{role, content}} messages, got {_describe(value)}")
    clean = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise RowError(where, f"expected a {{role, content}} object, got {_describe(message)}")
        for key in ("role", "content"):
            if key not in message:
                raise RowError(where, f"missing field '{key}'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise RowError(f"{where}.role", "a system message may only come first")
        if not isinstance(content, str):
            raise RowError(f"{where}.content", f"expected a string, got {_describe(content)}")
        if not content.strip():
            raise RowError(f"{where}.content", "empty message")
        clean.append({"role": role, "content": content})
    return clean


def _prompt(value) -> list[dict]:
    """The prompt as messages: a string becomes one user turn; a list must end with a user (or tool) turn."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError("prompt", "empty prompt")
        return [{"role": "user", "content": value}]
    messages = _messages(value, "prompt")
    if messages[-1]["role"] not in ("user", "tool"):
        raise RowError("prompt", f"must end with a user turn, not {messages[-1]['role']!r}")
    return messages


def _answer(value, field: str) -> list[dict]:
    """An answer as a one-element list `[{"role": "assistant", "content": ...}]`.

    Accepts a plain string, a single message object, or a one-element list of messages.
    """
    if isinstance(value, str):
        if not value.strip():
            raise RowError(field, "empty answer")
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and len(value) != 1:
        raise RowError(field, f"expected one assistant message (the prompt goes in 'prompt'), got {len(value)}")
    try:
        message = _messages(value, field)[0]
    except RowError as e:
        if e.field == f"{field}[0].content" and str(e) == "empty message":
            raise RowError(field, "empty answer") from None
        raise
    if message["role"] != "assistant":
        raise RowError(f"{field}[0].role", f"expected role 'assistant', got {message['role']!r}")
    return [message]


def _describe(value) -> str:
    return "null" if value is None else type(value).__name__


def split_hh_transcript(text: str) -> list[dict]:
    """Split a raw hh-rlhf transcript into messages.

    `"\\n\\nHuman: hi\\n\\nAssistant: hello"` -> `[{"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"}]`. The content of the final turn may be empty (checked later).
    Raises `RowError` if the text does not start with a `\\n\\nHuman:` turn.
    """
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        raise RowError("chosen", "not an hh-rlhf transcript: it must start with '\\n\\nHuman:'")
    return [{"role": HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _from_hh(row: dict) -> dict:
    chosen, rejected = split_hh_transcript(row["chosen"]), split_hh_transcript(row["rejected"])
    for field, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise RowError(field, "the transcript must end with an '\\n\\nAssistant:' turn")
        if not turns[-1]["content"]:
            raise RowError(field, "empty answer")
        if any(not t["content"] for t in turns[:-1]):
            raise RowError(field, "empty turn inside the transcript")
    if chosen[:-1] != rejected[:-1]:
        raise RowError("rejected", "do not share a prompt: the chosen and rejected transcripts differ before "
                                   "their last '\\n\\nAssistant:' turn")
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def detect_preference_format(row: dict) -> str:
    """Name the shape of one preference row.

    Returns "conversational" (messages prompt), "plain strings" (string prompt and answers), "hh-rlhf" (two raw
    transcripts, no prompt) or "unknown".
    """
    if "prompt" not in row:
        chosen = row.get("chosen")
        return "hh-rlhf" if isinstance(chosen, str) and chosen.lstrip(" ").startswith("\n\nHuman:") else "unknown"
    if isinstance(row["prompt"], str) and isinstance(row.get("chosen"), str):
        return "plain strings"
    return "conversational"


def to_preference_row(row: dict) -> dict:
    """Check one row and convert it to `{"prompt": [...], "chosen": [...], "rejected": [...]}`.

    Raises `RowError` naming the field at fault: missing field, wrong type, unknown role, empty answer,
    chosen identical to rejected, hh-rlhf transcripts that do not share a prompt.
    """
    for field in ("chosen", "rejected"):
        if field not in row:
            raise RowError(field, "missing field")
    fmt = detect_preference_format(row)
    if fmt == "hh-rlhf":
        if not isinstance(row["rejected"], str):
            raise RowError("rejected", f"expected an hh-rlhf transcript string, got {_describe(row['rejected'])}")
        out = _from_hh(row)
    elif "prompt" not in row:
        raise RowError("prompt", "missing field (only raw hh-rlhf transcripts may leave the prompt out)")
    else:
        out = {"prompt": _prompt(row["prompt"]), "chosen": _answer(row["chosen"], "chosen"),
               "rejected": _answer(row["rejected"], "rejected")}
    if out["chosen"][0]["content"].strip() == out["rejected"][0]["content"].strip():
        raise RowError("rejected", "identical to 'chosen'; a preference pair needs two different answers")
    return out


# ----------------------------------------------------------------------------------------------------------
# Whole files


def load_preference_file(path: str, drop_bad_rows: bool = False, log=print) -> list[dict]:
    """Read, check and convert a preference file; see the module docstring for the accepted shapes.

    Returns the converted rows. Prints what was detected (and, with `drop_bad_rows`, how many rows were
    dropped and why). Raises `DataFormatError` listing up to 10 problems unless `drop_bad_rows` is True, or if no
    good row is left; `FileNotFoundError` if the file is missing.
    """
    rows, problems = read_jsonl(path)
    converted, formats = [], {}
    for number, row in rows:
        try:
            converted.append(to_preference_row(row))
        except RowError as e:
            problems.append(Problem(path, number, e.field, str(e)))
            continue
        fmt = detect_preference_format(row)
        formats[fmt] = formats.get(fmt, 0) + 1
    problems.sort(key=lambda p: p.line)
    hint = f"\nFix these rows, or pass --drop_bad_rows true to skip them."
    if problems and (not drop_bad_rows or not converted):
        raise DataFormatError(problems, hint if converted else "")
    detected = ", ".join(f"{n} {fmt}" for fmt, n in formats.items())
    log(f"[data] {path}: {len(converted)} preference pairs ({detected} rows)" + _conversion_note(formats))
    if problems:
        log(f"[data] dropped {len(problems)} bad row(s) of {len(problems) + len(converted)}, e.g.:")
        for p in problems[:MAX_LISTED]:
            log(f"  {p}")
    return converted


def _conversion_note(formats: dict) -> str:
    notes = {"plain strings": "plain-string prompts became one user turn",
             "hh-rlhf": "raw hh-rlhf transcripts were split: shared turns -> prompt, last assistant turn -> answer"}
    said = [notes[f] for f in formats if f in notes]
    return "; " + "; ".join(said) if said else ""


def split_train_eval(rows: list, eval_split_size: float, seed: int) -> tuple[list, list]:
    """Hold out rows for evaluation, deterministically for a given seed.

    `eval_split_size` < 1 is a fraction of the rows, >= 1 a number of rows, 0 means no eval split.
    Returns `(train_rows, eval_rows)`. Raises `ValueError` if nothing would be left to train on.
    """
    if eval_split_size < 0:
        raise ValueError(f"eval_split_size must be >= 0, got {eval_split_size}")
    n_eval = int(round(eval_split_size * len(rows))) if eval_split_size < 1 else int(eval_split_size)
    if eval_split_size > 0:
        n_eval = max(n_eval, 1)
    if n_eval >= len(rows):
        raise ValueError(f"eval_split_size={eval_split_size} leaves no training rows out of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# ----------------------------------------------------------------------------------------------------------
# Checks that need the tokenizer (still no model)


def check_chat_template(tokenizer, row: dict, model_path: str) -> None:
    """Check that the chat template renders the prompt as a prefix of prompt + answer.

    Training joins `prompt` and `chosen` / `rejected` with the template; if the prompt rendering is not a prefix,
    the loss mask would cut in the wrong place. Raises `ValueError` naming the model if the tokenizer has no chat
    template or the template fails this check.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {model_path} has no chat template; conversational data needs one "
                         f"(set tokenizer.chat_template in its tokenizer_config.json)")
    prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"the chat template of {model_path} does not render the prompt as a prefix of "
                         f"prompt + answer, so prompt and answer cannot be joined at train time.\n"
                         f"prompt:      {prompt!r}\nprompt+answer: {full!r}")


def count_too_long(tokenizer, rows: list[dict], max_length: int) -> int:
    """Number of rows whose prompt + chosen or prompt + rejected is longer than `max_length` tokens."""
    too_long = 0
    for row in rows:
        lengths = [len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True)["input_ids"])
                   for k in ("chosen", "rejected")]
        too_long += max(lengths) > max_length
    return too_long


def load_preference_splits(model_args, seed: int, log=print) -> tuple[list[dict], list[dict]]:
    """Train and eval rows from `train_data_path` and `eval_data_path` (or a held-out split of the train file).

    Raises `DataFormatError` / `FileNotFoundError` as `load_preference_file` does, before any model is loaded.
    """
    rows = load_preference_file(model_args.train_data_path, model_args.drop_bad_rows, log)
    if model_args.eval_data_path:
        return rows, load_preference_file(model_args.eval_data_path, model_args.drop_bad_rows, log)
    train, held_out = split_train_eval(rows, model_args.eval_split_size, seed)
    if held_out:
        log(f"[data] held out {len(held_out)} of {len(rows)} pairs for evaluation (eval_split_size)")
    return train, held_out


def preference_data(model_args, config, tokenizer, too_long: str, log=print) -> tuple[list[dict], list[dict]]:
    """The data loader for pairwise methods (reward model, DPO, ...): checked rows, then tokenizer checks.

    Loads and checks the files (`load_preference_splits`), checks the chat template joins prompt and answer,
    and prints how many pairs exceed `config.max_length` tokens (`too_long` says what the trainer does with them).
    Returns `(train_rows, eval_rows)`; raises `DataFormatError`, `FileNotFoundError` or `ValueError`.
    """
    train, held_out = load_preference_splits(model_args, config.seed, log)
    check_chat_template(tokenizer, train[0], model_args.model_name_or_path)
    if config.max_length:
        n = count_too_long(tokenizer, train, config.max_length)
        if n:
            log(f"[data] {n} of {len(train)} pairs are longer than max_length={config.max_length} tokens; {too_long}")
    return train, held_out
