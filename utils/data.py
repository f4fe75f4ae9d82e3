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


def settle_problems(problems: list[Problem], n_good: int, drop_bad_rows: bool) -> None:
    """Sort `problems` by line; raise `DataFormatError` listing them unless `drop_bad_rows` is True and `n_good`
    rows are left (with none left it raises anyway, without the --drop_bad_rows hint). Every loader calls it."""
    problems.sort(key=lambda p: p.line)
    if problems and (not drop_bad_rows or not n_good):
        raise DataFormatError(problems, "\nFix these rows, or pass --drop_bad_rows true to skip them."
                              if n_good else "")


def log_dropped(problems: list[Problem], n_lines: int, log=print) -> None:
    """With `--drop_bad_rows`: print how many of the file's `n_lines` lines were dropped, and the first few why."""
    if problems:
        log(f"[data] dropped {len(problems)} bad row(s) of {n_lines}, e.g.:")
        for p in problems[:MAX_LISTED]:
            log(f"  {p}")


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
    settle_problems(problems, len(converted), drop_bad_rows)
    detected = ", ".join(f"{n} {fmt}" for fmt, n in formats.items())
    log(f"[data] {path}: {len(converted)} preference pairs ({detected} rows)" + _conversion_note(formats))
    log_dropped(problems, len(problems) + len(converted), log)
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


def count_too_long(tokenizer, rows: list[dict], max_length: int, answers=("chosen", "rejected")) -> int:
    """Number of rows in which prompt + any of the `answers` fields is longer than `max_length` tokens."""
    return sum(max(len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True)["input_ids"])
                   for k in answers) > max_length for row in rows)


def check_tokenized_rows(tokenizer, train: list[dict], model_args, config, too_long: str, what: str = "pairs",
                         answers=("chosen", "rejected"), log=print) -> None:
    """The checks every loader runs once the rows are canonical: the chat template joins the first row's prompt
    and answer (`check_chat_template`), and a printed count of rows over `config.max_length` tokens (`too_long`
    says what the trainer does with them). Raises `ValueError` as `check_chat_template` does.
    """
    first = train[0]
    check_chat_template(tokenizer, {"prompt": first["prompt"], "chosen": first[answers[0]]},
                        model_args.model_name_or_path)
    if config.max_length:
        n = count_too_long(tokenizer, train, config.max_length, answers)
        if n:
            log(f"[data] {n} of {len(train)} {what} are longer than max_length={config.max_length} tokens; {too_long}")


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
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, log=log)
    return train, held_out


# ----------------------------------------------------------------------------------------------------------
# Distillation (GKD) data: chats whose last assistant turn is the target, or prompts only; prompts for sampling

ANSWER_PLACEHOLDER = [{"role": "assistant", "content": ""}]  # stands in for the answer of a prompt-only GKD row


def to_distillation_row(row: dict) -> dict:
    """Check one distillation row and convert it to `{"prompt": [messages], "answer": [assistant message] | None}`.

    Accepted shapes:
    * `{"messages": [..., {"role": "assistant", "content": ...}]}`: the last assistant turn is the target answer,
      the turns before it are the prompt (they must end with a user turn);
    * the same plus a `prompt` list equal to `messages[:-1]` (the shape of TRL's GKD examples): checked, then
      dropped, since TRL's collator only takes a prompt that is already a formatted string;
    * `{"prompt": [...] or "text"}` without `messages`: prompt only (answer None), for steps where the student
      (on-policy GKD) or the teacher (SeqKD) writes the answer. Other fields (e.g. `chosen`) are ignored.
    Raises `RowError` naming the field at fault.
    """
    if "messages" in row:
        messages = _messages(row["messages"], "messages")
        if messages[-1]["role"] != "assistant":
            raise RowError("messages", f"must end with the assistant answer to distil on, not "
                                       f"{messages[-1]['role']!r} (a row without an answer goes in 'prompt' alone)")
        prompt, answer = messages[:-1], messages[-1:]
        if not prompt or prompt[-1]["role"] not in ("user", "tool"):
            raise RowError("messages", "the final assistant answer must follow a user turn")
        if "prompt" in row and _prompt(row["prompt"]) != prompt:
            raise RowError("prompt", "differs from messages[:-1] (the turns before the answer); "
                                     "remove 'prompt' or make the two agree")
        return {"prompt": prompt, "answer": answer}
    if "prompt" in row:
        return {"prompt": _prompt(row["prompt"]), "answer": None}
    raise RowError("messages", "missing field: a row needs 'messages' (a chat ending with the answer) "
                               "or 'prompt' (prompt only)")


def load_distillation_file(path: str, drop_bad_rows: bool = False, prompt_only_problem: str | None = None,
                           log=print) -> list[dict]:
    """Read, check and convert a distillation file (shapes: `to_distillation_row`).

    If `prompt_only_problem` is a message, prompt-only rows count as bad rows with that message (for runs that
    train on the dataset's answers). Returns `[{"prompt": [...], "answer": [...] | None}, ...]` and prints what was
    found. Raises `DataFormatError` listing up to 10 `FILE:LINE: field 'NAME': ...` problems unless
    `drop_bad_rows` is True, or if no good row is left; `FileNotFoundError` if the file is missing.
    """
    rows, problems = read_jsonl(path)
    converted, with_prompt_list = [], 0
    for number, row in rows:
        try:
            out = to_distillation_row(row)
        except RowError as e:
            problems.append(Problem(path, number, e.field, str(e)))
            continue
        if out["answer"] is None and prompt_only_problem:
            problems.append(Problem(path, number, "messages", prompt_only_problem))
            continue
        with_prompt_list += "messages" in row and isinstance(row.get("prompt"), list)
        converted.append(out)
    settle_problems(problems, len(converted), drop_bad_rows)
    answers = sum(r["answer"] is not None for r in converted)
    note = (f"; the 'prompt' lists of {with_prompt_list} rows equal messages[:-1] and were dropped "
            f"(TRL's GKD collator takes only a formatted string prompt)" if with_prompt_list else "")
    log(f"[data] {path}: {answers} chats with an answer, {len(converted) - answers} prompt-only rows{note}")
    log_dropped(problems, len(problems) + len(converted), log)
    return converted


def _fit_max_length(tokenizer, rows: list[dict], max_length: int | None, long_rows: str, what: str,
                    log=print) -> list[dict]:
    """Drop (long_rows="drop") or keep for cutting ("cut") rows whose chat is longer than max_length tokens.

    Rows whose answer alone fills max_length are dropped in both modes: TRL's collator keeps the last max_length
    tokens, so no prompt token would be left. Prints the counts. Returns the kept rows.
    """
    if not max_length:
        return rows
    kept, too_long, answer_fills = [], 0, 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + (row["answer"] or ANSWER_PLACEHOLDER),
                                             tokenize=True)["input_ids"]
        if len(full) <= max_length:
            kept.append(row)
        elif long_rows == "cut" and len(full) - len(prompt) < max_length:
            too_long += 1
            kept.append(row)
        else:
            too_long += 1
            answer_fills += len(full) - len(prompt) >= max_length
    if too_long:
        if long_rows == "cut":
            log(f"[data] {too_long} of {len(rows)} {what} rows are longer than max_length={max_length} tokens: cut, "
                f"keeping their last {max_length} tokens (the start of the prompt is lost)"
                + (f"; {answer_fills} whose answer alone fills max_length dropped" if answer_fills else ""))
        else:
            log(f"[data] {too_long} of {len(rows)} {what} rows are longer than max_length={max_length} tokens: "
                f"dropped (--long_rows cut keeps their last {max_length} tokens instead, or raise --max_length)")
    return kept


def distillation_data(model_args, config, tokenizer, log=print) -> tuple[list[dict], list[dict]]:
    """The data loader for GKD / supervised KD / SeqKD: checked rows as `{"messages": [...]}` (TRL's GKD format).

    Prompt-only rows are accepted only when every training step samples its own answers (`config.lmbda == 1`:
    the student's, or `config.seq_kd`: the teacher's); they get an empty assistant placeholder that those steps
    replace. Otherwise they are bad rows (`FILE:LINE: field 'messages': prompt only ...`).
    Rows longer than `config.max_length` tokens (chat template applied) are counted and dropped or cut
    (`config.long_rows`, see `_fit_max_length`). Eval rows need answers (the eval loss compares teacher and
    student on them): prompt-only rows of a held-out split are skipped with a note, and in an eval file they are
    bad rows. Returns `(train_rows, eval_rows)`. Raises `DataFormatError`, `FileNotFoundError` or `ValueError`
    (no template, nothing left to train on), all before any model is loaded.
    """
    samples_own = config.lmbda >= 1 or config.seq_kd
    hint = (None if samples_own else
            f"prompt only (no answer); with lmbda={config.lmbda} and seq_kd off, some steps train on the dataset's "
            f"answers: give the row 'messages', or use --lmbda 1 (student answers) or --seq_kd true (teacher answers)")
    rows = load_distillation_file(model_args.train_data_path, model_args.drop_bad_rows, hint, log)
    if model_args.eval_data_path:
        train, held_out = rows, load_distillation_file(
            model_args.eval_data_path, model_args.drop_bad_rows,
            "prompt only (no answer); evaluation compares teacher and student on the answers", log)
    else:
        train, held_out = split_train_eval(rows, model_args.eval_split_size, config.seed)
        if held_out:
            log(f"[data] held out {len(held_out)} of {len(rows)} rows for evaluation (eval_split_size)")
        skipped = sum(r["answer"] is None for r in held_out)
        if skipped:
            held_out = [r for r in held_out if r["answer"] is not None]
            log(f"[data] {skipped} held-out rows are prompt only and are not used (evaluation needs answers)")
    first = train[0]
    check_chat_template(tokenizer, {"prompt": first["prompt"], "chosen": first["answer"] or ANSWER_PLACEHOLDER},
                        model_args.model_name_or_path)
    long_rows = getattr(config, "long_rows", "drop")
    train = _fit_max_length(tokenizer, train, config.max_length, long_rows, "training", log)
    held_out = _fit_max_length(tokenizer, held_out, config.max_length, long_rows, "eval", log)
    if not train:
        raise ValueError(f"no training rows left: every row is longer than max_length={config.max_length} tokens; "
                         f"raise --max_length")
    as_chat = lambda r: {"messages": r["prompt"] + (r["answer"] or ANSWER_PLACEHOLDER)}  # noqa: E731
    return [as_chat(r) for r in train], [as_chat(r) for r in held_out]


def prompt_of(row: dict) -> list[dict]:
    """The prompt of any row this toolkit reads, as messages ending with a user turn; answers are ignored.

    `prompt` (preference or prompt-only rows; a string becomes one user turn), else `messages` without a final
    assistant answer, else the shared turns of a raw hh-rlhf pair. Raises `RowError` naming the field at fault.
    """
    if "prompt" in row:
        return _prompt(row["prompt"])
    if "messages" in row:
        messages = _messages(row["messages"], "messages")
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages or messages[-1]["role"] not in ("user", "tool"):
            raise RowError("messages", "no user turn to answer (after removing a final assistant answer)")
        return messages
    if detect_preference_format(row) == "hh-rlhf":
        return to_preference_row(row)["prompt"]
    raise RowError("prompt", "missing field: a row needs 'prompt', 'messages' or raw hh-rlhf transcripts")


def load_prompt_file(path: str, drop_bad_rows: bool = False, log=print) -> list[list[dict]]:
    """Prompts for sampling (rejection sampling, on-policy methods) from a preference, chat or prompt-only file.

    Each prompt is a list of messages ending with a user turn (`prompt_of`); repeated prompts are kept once, in
    file order. Raises `DataFormatError` (`FILE:LINE: field ...`) unless `drop_bad_rows`, or if no prompt is
    left; `FileNotFoundError` if the file is missing.
    """
    rows, problems = read_jsonl(path)
    prompts, seen, repeats = [], set(), 0
    for number, row in rows:
        try:
            prompt = prompt_of(row)
        except RowError as e:
            problems.append(Problem(path, number, e.field, str(e)))
            continue
        key = json.dumps(prompt, sort_keys=True)
        if key in seen:
            repeats += 1
        else:
            seen.add(key)
            prompts.append(prompt)
    settle_problems(problems, len(prompts), drop_bad_rows)
    log(f"[data] {path}: {len(prompts)} prompts" + (f" ({repeats} repeated prompts kept once)" if repeats else ""))
    log_dropped(problems, len(problems) + len(prompts) + repeats, log)
    return prompts


# ----------------------------------------------------------------------------------------------------------
# Files of other row shapes (KTO's unpaired rows, SFT's conversations): one file line -> a group of rows


def load_row_groups(path: str, convert, drop_bad_rows: bool = False, log=print) -> tuple[list[list[dict]], dict]:
    """Read a JSON Lines file and convert each line with `convert(row) -> (shape, rows)`.

    One line may give several rows (a preference pair gives KTO two rows; a conversation gives SFT one row per
    assistant turn); they stay together in a group so that a train/eval split never separates them.
    Returns `(groups, shapes)`: one list of rows per good line, and how many lines had each shape.
    Raises `DataFormatError` (problems as `FILE:LINE: field 'NAME': ...`) unless `drop_bad_rows` is True, or if no
    good line is left; `FileNotFoundError` if the file is missing.
    """
    lines, problems = read_jsonl(path)
    groups, shapes = [], {}
    for number, row in lines:
        try:
            shape, rows = convert(row)
        except RowError as e:
            problems.append(Problem(path, number, e.field, str(e)))
            continue
        groups.append(rows)
        shapes[shape] = shapes.get(shape, 0) + 1
    settle_problems(problems, len(groups), drop_bad_rows)
    log_dropped(problems, len(problems) + len(groups), log)
    return groups, shapes


def load_group_splits(model_args, seed: int, convert, log=print) -> tuple[list[dict], list[dict], dict]:
    """Train and eval rows from `train_data_path` / `eval_data_path`, or a held-out split of the train file.

    The split is drawn over file lines (`split_train_eval` with the run's seed), exactly as for preference pairs,
    so a preference file holds out the same pairs whichever method reads it. Returns `(train, eval, shapes)` with
    the groups flattened; `shapes` counts the train file's line shapes. Raises as `load_row_groups` does.
    """
    groups, shapes = load_row_groups(model_args.train_data_path, convert, model_args.drop_bad_rows, log)
    if model_args.eval_data_path:
        held_out, _ = load_row_groups(model_args.eval_data_path, convert, model_args.drop_bad_rows, log)
    else:
        groups, held_out = split_train_eval(groups, model_args.eval_split_size, seed)
        if held_out:
            log(f"[data] held out {len(held_out)} of {len(groups) + len(held_out)} lines for evaluation "
                f"(eval_split_size)")
    return [r for g in groups for r in g], [r for g in held_out for r in g], shapes


def _value(value) -> str:
    text = repr(value)
    return f"{_describe(value)} {text if len(text) <= 20 else text[:17] + '...'}"


# ----------------------------------------------------------------------------------------------------------
# KTO: unpaired rows {prompt, completion, label}


def to_unpaired_rows(row: dict) -> tuple[str, list[dict]]:
    """Check one KTO line and convert it to unpaired rows `{"prompt": [...], "completion": [...], "label": bool}`.

    An unpaired line (`prompt`, `completion`, `label`) gives one row; a preference pair (any shape that
    `to_preference_row` accepts) gives two: chosen -> desirable (label True), rejected -> undesirable (False).
    Returns `(shape, rows)` with shape "unpaired" or "preference pair". Raises `RowError` naming the field: missing
    field, `label` not a JSON boolean, empty completion, and every check of `_prompt` / `_answer`.
    """
    if "completion" in row or "label" in row:
        for field in ("prompt", "completion", "label"):
            if field not in row:
                raise RowError(field, "missing field (an unpaired KTO row needs prompt, completion and label)")
        if not isinstance(row["label"], bool):
            raise RowError("label", f"expected true or false (a JSON boolean), got {_value(row['label'])}")
        return "unpaired", [{"prompt": _prompt(row["prompt"]), "completion": _answer(row["completion"], "completion"),
                             "label": row["label"]}]
    if "chosen" in row or "rejected" in row:
        pair = to_preference_row(row)
        return "preference pair", [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                                   {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
    raise RowError("completion", "missing field: a KTO row needs prompt, completion and label (true = desirable), "
                                 "or is a preference pair (prompt, chosen, rejected)")


def kto_class_weights(n_desirable: int, n_undesirable: int, desirable_weight: float | None = None,
                      undesirable_weight: float | None = None) -> tuple[float, float]:
    """KTO's desirable/undesirable loss weights, balanced for the class counts.

    KTO paper (Ethayarajh et al. 2024, sec. 4): pick the weights so that
    `desirable_weight * n_desirable / (undesirable_weight * n_undesirable)` lies in [1, 4/3].
    A weight given by the user (not None) is kept. A weight left at None is 1.0 if the ratio is already in range,
    else it is solved for so that the ratio is 7/6, the middle of the range; with both None the rarer class is
    up-weighted and the other stays at 1.0. Returns `(desirable_weight, undesirable_weight)`; (1, 1) if a class
    is empty.
    """
    d = 1.0 if desirable_weight is None else float(desirable_weight)
    u = 1.0 if undesirable_weight is None else float(undesirable_weight)
    if n_desirable == 0 or n_undesirable == 0 or (desirable_weight is not None and undesirable_weight is not None):
        return d, u
    ratio = d * n_desirable / (u * n_undesirable)
    if 1.0 <= ratio <= 4 / 3:
        return d, u
    if desirable_weight is None and (undesirable_weight is not None or ratio < 1.0):
        return 7 / 6 * u * n_undesirable / n_desirable, u
    return d, d * n_desirable / (7 / 6 * n_undesirable)


def kto_data(model_args, config, tokenizer, too_long: str, log=print) -> tuple[list[dict], list[dict]]:
    """The data loader for KTO: unpaired rows, shuffled, with balanced class weights.

    Accepts unpaired lines and preference pairs (converted with a printed note; `to_unpaired_rows`). The training
    rows are shuffled with the run's seed: TRL's KTO trainer reads them in order and pairs each prompt with another
    row's completion of the same batch for its KL estimate, so unshuffled converted pairs would give one-label
    batches. Sets `config.desirable_weight` / `config.undesirable_weight` where they are None
    (`kto_class_weights`) and prints the counts. Returns `(train_rows, eval_rows)`; raises `DataFormatError`,
    `FileNotFoundError` or `ValueError` (no chat template; fewer rows than one batch), before any model is loaded.
    """
    train, held_out, shapes = load_group_splits(model_args, config.seed, to_unpaired_rows, log)
    detected = ", ".join(f"{n} {shape}" for shape, n in shapes.items())
    log(f"[data] {model_args.train_data_path}: lines: {detected} -> {len(train)} KTO training rows")
    if shapes.get("preference pair"):
        log("[data] preference pairs were split for KTO: chosen -> desirable (label true), "
            "rejected -> undesirable (label false)")
    random.Random(config.seed).shuffle(train)
    if len(train) < config.per_device_train_batch_size:
        raise ValueError(f"KTO needs at least one full batch: {len(train)} training rows < "
                         f"per_device_train_batch_size={config.per_device_train_batch_size}")
    n_d = sum(r["label"] for r in train)
    n_u = len(train) - n_d
    config.desirable_weight, config.undesirable_weight = kto_class_weights(
        n_d, n_u, config.desirable_weight, config.undesirable_weight)
    ratio = config.desirable_weight * n_d / (config.undesirable_weight * n_u) if n_u else float("inf")
    log(f"[data] KTO classes: {n_d} desirable, {n_u} undesirable; desirable_weight={config.desirable_weight:.3g}, "
        f"undesirable_weight={config.undesirable_weight:.3g} (weighted ratio {ratio:.3g}; KTO paper: 1 to 4/3)")
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, "rows", ("completion",), log)
    return train, held_out


# ----------------------------------------------------------------------------------------------------------
# SFT: conversations -> conversational prompt/completion rows (loss on the assistant answer only)


def to_sft_rows(row: dict, assistant_turns: str = "all") -> tuple[str, list[dict]]:
    """Check one SFT line and convert it to conversational rows `{"prompt": [...], "completion": [answer]}`.

    * `{"messages": [...]}`: the conversation must end with an assistant turn that follows a user (or tool) turn.
      `assistant_turns="all"`: one row per such assistant turn, the messages before it as the prompt (so every
      assistant answer is trained, and the earlier turns are context only); `"last"`: the final turn only.
    * `{"prompt": ..., "completion": ...}`: strings or messages, as for preference pairs.
    * a preference pair (`prompt` + `chosen`, `rejected` optional): prompt + chosen.
    Returns `(shape, rows)`; raises `RowError` naming the field.
    """
    if "messages" in row:
        messages = _messages(row["messages"], "messages")
        last = len(messages) - 1
        if messages[last]["role"] != "assistant":
            raise RowError(f"messages[{last}].role", f"the conversation must end with the assistant answer to "
                                                     f"train on, not a {messages[last]['role']!r} turn")
        turns = [i for i, m in enumerate(messages)
                 if m["role"] == "assistant" and i > 0 and messages[i - 1]["role"] in ("user", "tool")]
        if last not in turns:
            raise RowError(f"messages[{last}].role", "the final assistant turn must follow a user (or tool) turn")
        if assistant_turns == "last":
            turns = [last]
        return "messages", [{"prompt": messages[:i], "completion": [messages[i]]} for i in turns]
    if "completion" in row:
        if "prompt" not in row:
            raise RowError("prompt", "missing field")
        return "prompt/completion", [{"prompt": _prompt(row["prompt"]),
                                      "completion": _answer(row["completion"], "completion")}]
    if "chosen" in row:
        if "rejected" in row:
            pair = to_preference_row(row)
        elif "prompt" not in row:
            raise RowError("prompt", "missing field")
        else:
            pair = {"prompt": _prompt(row["prompt"]), "chosen": _answer(row["chosen"], "chosen")}
        return "preference pair", [{"prompt": pair["prompt"], "completion": pair["chosen"]}]
    raise RowError("messages", "missing field: an SFT row needs 'messages' (a conversation ending with an "
                               "assistant turn), or 'prompt' + 'completion', or 'prompt' + 'chosen'")


def sft_data(model_args, config, tokenizer, too_long: str, log=print) -> tuple[list[dict], list[dict]]:
    """The data loader for SFT: every line becomes conversational prompt/completion rows (`to_sft_rows`).

    With prompt/completion rows TRL's SFTTrainer puts the loss on the completion tokens only
    (`completion_only_loss`), whatever the chat template; no `{% generation %}` markers are needed.
    Returns `(train_rows, eval_rows)`; raises `DataFormatError`, `FileNotFoundError` or `ValueError` (no chat
    template) before any model is loaded.
    """
    turns = getattr(config, "assistant_turns", "all")
    train, held_out, shapes = load_group_splits(model_args, config.seed, lambda row: to_sft_rows(row, turns), log)
    detected = ", ".join(f"{n} {shape}" for shape, n in shapes.items())
    log(f"[data] {model_args.train_data_path}: lines: {detected} -> {len(train)} SFT training rows")
    notes = {"messages": f"conversations -> one prompt/completion row per trained assistant turn "
                         f"(assistant_turns={turns!r}); the loss covers the assistant answers only",
             "preference pair": "preference pairs -> prompt + chosen (rejected is not used)"}
    for shape, note in notes.items():
        if shape in shapes:
            log(f"[data] {note}")
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, "rows", ("completion",), log)
    return train, held_out


# ----------------------------------------------------------------------------------------------------------
# Online methods (PPO, RLOO, GRPO): prompts only


def prompt_data(model_args, config, tokenizer, too_long: str, log=print) -> tuple[list[dict], list[dict]]:
    """The data loader for online methods: `[{"prompt": [messages]}]` rows, train and eval.

    Reads a prompt-only file (`{"prompt": [messages] or "text"}`), a preference file (its prompts; answers are
    ignored), a chat file (`messages` without the final assistant answer) or raw hh-rlhf pairs (`prompt_of`).
    Held-out rows are split over file lines as for preference pairs. Counts the prompts longer than
    `config.max_prompt_length` tokens after the chat template (`too_long` says what the trainer does with them).
    Raises `DataFormatError` (`FILE:LINE: field ...`), `FileNotFoundError` or `ValueError` (no chat template),
    before any model is loaded.
    """
    def convert(row):
        shape = "preference" if "chosen" in row else "chat" if "prompt" not in row else "prompt-only"
        return shape, [{"prompt": prompt_of(row)}]

    train, held_out, shapes = load_group_splits(model_args, config.seed, convert, log)
    detected = ", ".join(f"{n} {shape}" for shape, n in shapes.items())
    log(f"[data] {model_args.train_data_path}: {len(train)} training prompts ({detected} rows)")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {model_args.model_name_or_path} has no chat template; prompts given as "
                         f"messages need one (set tokenizer.chat_template in its tokenizer_config.json)")
    limit = getattr(config, "max_prompt_length", None)
    if limit:
        n = sum(len(tokenizer.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True)["input_ids"])
                > limit for r in train)
        if n:
            log(f"[data] {n} of {len(train)} prompts are longer than max_prompt_length={limit} tokens; {too_long}")
    return train, held_out
