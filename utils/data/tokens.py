"""Checks that need the tokenizer (still no model): the chat template, and rows or prompts that are too long."""

from __future__ import annotations

from utils.errors import ConfigError
from utils.log import info_rank0

ANSWER_PLACEHOLDER = [{"role": "assistant", "content": ""}]  # stands in for the answer of a prompt-only GKD row


def require_chat_template(tokenizer, model_path: str, what: str = "conversational data") -> None:
    """Raise `ConfigError` naming the model if the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer of {model_path} has no chat template; {what} needs one "
                          f"(set tokenizer.chat_template in its tokenizer_config.json)")


def check_chat_template(tokenizer, row: dict, model_path: str) -> None:
    """Check that the chat template renders the prompt as a prefix of prompt + answer.

    Training joins `prompt` and `chosen` / `rejected` with the template; if the prompt rendering is not a prefix,
    the loss mask would cut in the wrong place. Raises `ConfigError` naming the model if the tokenizer has no chat
    template or the template fails this check.
    """
    require_chat_template(tokenizer, model_path)
    prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError(f"the chat template of {model_path} does not render the prompt as a prefix of "
                          f"prompt + answer, so prompt and answer cannot be joined at train time.\n"
                          f"prompt:      {prompt!r}\nprompt+answer: {full!r}")


def count_too_long(tokenizer, rows: list[dict], max_length: int, answers=("chosen", "rejected")) -> int:
    """Number of rows in which prompt + any of the `answers` fields is longer than `max_length` tokens."""
    return sum(max(len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True)["input_ids"])
                   for k in answers) > max_length for row in rows)


def check_tokenized_rows(tokenizer, train: list[dict], model_args, config, too_long: str, what: str = "pairs",
                         answers=("chosen", "rejected"), log=info_rank0) -> None:
    """The checks every loader runs once the rows are canonical: the chat template joins the first row's prompt
    and answer (`check_chat_template`), and a printed count of rows over `config.max_length` tokens (`too_long`
    says what the trainer does with them). Raises `ConfigError` as `check_chat_template` does.
    """
    first = train[0]
    check_chat_template(tokenizer, {"prompt": first["prompt"], "chosen": first[answers[0]]},
                        model_args.model_name_or_path)
    if config.max_length:
        n = count_too_long(tokenizer, train, config.max_length, answers)
        if n:
            log(f"[data] {n} of {len(train)} {what} are longer than max_length={config.max_length} tokens; {too_long}")


def count_long_prompts(tokenizer, prompts: list[list[dict]], limit: int | None) -> int:
    """Number of prompts longer than `limit` tokens once rendered with the chat template (0 if `limit` is None)."""
    if not limit:
        return 0
    return sum(len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True)["input_ids"]) > limit
               for p in prompts)


def fit_max_length(tokenizer, rows: list[dict], max_length: int | None, long_rows: str, what: str,
                   log=info_rank0) -> list[dict]:
    """Drop (long_rows="drop") or keep for cutting ("cut") distillation rows whose chat is longer than max_length.

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
