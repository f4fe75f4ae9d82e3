"""Chat shapes (`messages`, ShareGPT, alpaca), prompt-only, prompt/completion and unpaired (KTO) rows: pure converters.

Chat shapes are first turned into one conversation (a list of `{role, content}` messages); the functions at the end
cut a conversation into what each method trains on: SFT rows, prompts, or a distillation row. Each raises `RowError`
naming the field at fault.
"""

from __future__ import annotations

from rlhfkit.data.messages import (
    RowError,
    as_answer,
    as_prompt,
    check_messages,
    describe,
    prompt_turns_of,
    short_value,
)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# ----------------------------------------------------------------------------------------------------------
# Rows -> one conversation


def sharegpt_conversation(row: dict) -> list[dict]:
    """ShareGPT `conversations` -> messages.

    Turns are `{"from": "human" | "gpt" | "system", "value": ...}` (`user` / `assistant` are accepted too), or
    messages-style `{role, content}`; a top-level `system` string becomes a first system message. Raises `RowError`
    on `conversations[i].from` / `.value` (or `.role` / `.content`) as `check_messages` does.
    """
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RowError("conversations", f"expected a non-empty list of {{from, value}} turns, got {describe(turns)}")
    mapped, renamed = [], {}
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if isinstance(turn, dict) and "from" in turn:
            speaker = turn["from"]
            if speaker not in SHAREGPT_ROLES:
                raise RowError(f"{where}.from", f"unknown speaker {speaker!r}; expected human, gpt or system")
            if "value" not in turn:
                raise RowError(where, "missing field 'value'")
            mapped.append({"role": SHAREGPT_ROLES[speaker], "content": turn["value"]})
            renamed[i] = True
        else:
            mapped.append(turn)
    try:
        messages = check_messages(mapped, "conversations")
    except RowError as e:
        index = e.field.split("[", 1)[1].split("]", 1)[0] if "[" in e.field else ""
        if index.isdigit() and renamed.get(int(index)):
            raise RowError(e.field.replace(".role", ".from").replace(".content", ".value"), str(e)) from None
        raise
    system = row.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def alpaca_conversation(row: dict) -> list[dict]:
    """alpaca `{instruction, input?, output?, system?, history?}` -> messages.

    The user turn is the instruction, followed by a blank line and the input when there is one; `output` is the
    assistant answer (left out when missing: a prompt-only row); `history` (`[[question, answer], ...]`) gives
    earlier turns and `system` a first system message. Raises `RowError` on `instruction`, `input`, `output`,
    `system` or `history`.
    """
    def text(field: str, required: bool) -> str:
        value = row.get(field)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise RowError(field, f"expected a string, got {describe(value)}")
        if required and not value.strip():
            raise RowError(field, f"empty {field}")
        return value

    instruction, extra, system = text("instruction", True), text("input", False), text("system", False)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("history", f"expected a list of [question, answer] pairs, got {describe(history)}")
    for i, turn in enumerate(history):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) and t.strip()
                                                                           for t in turn)):
            raise RowError(f"history[{i}]", "expected a [question, answer] pair of non-empty strings")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction})
    if row.get("output") is not None:
        messages += as_answer(row["output"], "output")
    return messages


# ----------------------------------------------------------------------------------------------------------
# One conversation -> what a method trains on


def sft_rows(messages: list[dict], field: str, assistant_turns: str = "all") -> list[dict]:
    """Conversational prompt/completion rows from a conversation that ends with an assistant turn.

    `assistant_turns="all"`: one row per assistant turn that follows a user (or tool) turn, the messages before it
    as the prompt (every answer is trained, earlier turns are context only); `"last"`: the final turn only.
    Raises `RowError` on `FIELD[i].role` if the conversation does not end with such an assistant turn.
    """
    last = len(messages) - 1
    if messages[last]["role"] != "assistant":
        raise RowError(f"{field}[{last}].role", f"the conversation must end with the assistant answer to train on, "
                                                f"not a {messages[last]['role']!r} turn")
    turns = [i for i, m in enumerate(messages)
             if m["role"] == "assistant" and i > 0 and messages[i - 1]["role"] in ("user", "tool")]
    if last not in turns:
        raise RowError(f"{field}[{last}].role", "the final assistant turn must follow a user (or tool) turn")
    if assistant_turns == "last":
        turns = [last]
    return [{"prompt": messages[:i], "completion": [messages[i]]} for i in turns]


def conversation_prompts(messages: list[dict], field: str, prompt_turns: str = "last") -> list[list[dict]]:
    """Prompts from a conversation; a final assistant answer is removed first.

    `prompt_turns="last"`: the whole conversation up to its last user (or tool) turn, one prompt; `"all"`: one
    prompt per user turn, with the turns before it as context. Raises `RowError(FIELD)` if no user turn is left.
    """
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] not in ("user", "tool"):
        raise RowError(field, "no user turn to answer (after removing a final assistant answer)")
    return prompt_turns_of(messages, prompt_turns)


def distillation_row(messages: list[dict], field: str, given_prompt=None) -> dict:
    """`{"prompt": [...], "answer": [last assistant turn]}` from a conversation ending with the answer to distil on.

    `given_prompt` (a `prompt` field beside `messages`, the shape of TRL's GKD examples) must equal the turns before
    the answer. Raises `RowError` on FIELD (no final answer, or it does not follow a user turn) or on `prompt`.
    """
    if messages[-1]["role"] != "assistant":
        raise RowError(field, f"must end with the assistant answer to distil on, not {messages[-1]['role']!r} "
                              f"(a row without an answer goes in 'prompt' alone)")
    prompt, answer = messages[:-1], messages[-1:]
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise RowError(field, "the final assistant answer must follow a user turn")
    if given_prompt is not None and as_prompt(given_prompt) != prompt:
        raise RowError("prompt", "differs from messages[:-1] (the turns before the answer); "
                                 "remove 'prompt' or make the two agree")
    return {"prompt": prompt, "answer": answer}


# ----------------------------------------------------------------------------------------------------------
# Single-purpose rows


def from_prompt_completion(row: dict) -> list[dict]:
    """`{"prompt", "completion"}` (strings or messages) -> one SFT row."""
    if "prompt" not in row:
        raise RowError("prompt", "missing field")
    return [{"prompt": as_prompt(row["prompt"]), "completion": as_answer(row["completion"], "completion")}]


def uses_number_labels(rows: list[dict]) -> bool:
    """True when a file's KTO labels are given as 0/1: some row has a numeric label and none has a boolean one.

    A file that mixes true/false with numbers keeps the strict rule (labels must be JSON booleans).
    """
    labels = [row.get("label") for row in rows if isinstance(row, dict)]
    return (not any(isinstance(v, bool) for v in labels)
            and any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels))


def from_unpaired(row: dict, number_labels: bool = False) -> list[dict]:
    """An unpaired KTO row `{prompt, completion, label}` -> `[{"prompt": [...], "completion": [...], "label": bool}]`.

    `label` is a JSON boolean (true = desirable), or 0/1 in a file whose labels are all numbers (`number_labels`).
    Raises `RowError`: a missing field, a label of another type or value, and the prompt / answer checks.
    """
    for field in ("prompt", "completion", "label"):
        if field not in row:
            raise RowError(field, "missing field (an unpaired KTO row needs prompt, completion and label)")
    label = row["label"]
    if number_labels:
        if isinstance(label, bool) or not isinstance(label, (int, float)) or label not in (0, 1):
            raise RowError("label", f"expected 0 or 1 (1 = desirable), got {short_value(label)}")
        label = bool(label)
    elif not isinstance(label, bool):
        raise RowError("label", f"expected true or false (a JSON boolean), got {short_value(label)}")
    return [{"prompt": as_prompt(row["prompt"]), "completion": as_answer(row["completion"], "completion"),
             "label": label}]
