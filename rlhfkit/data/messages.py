"""Checks for chat messages, prompts and answers: the building blocks every row converter uses.

All functions are pure: they return clean copies and raise `RowError` naming the field at fault; the loader adds
the file and the line.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant", "tool")


class RowError(ValueError):
    """A problem with one row; `field` names the field at fault. The loader adds the file and the line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def describe(value) -> str:
    """The JSON-ish type name of `value` for messages: "null" for None, else the Python type name."""
    return "null" if value is None else type(value).__name__


def short_value(value) -> str:
    """`value` as "TYPE REPR" for messages, the repr cut to 20 characters (e.g. "str 'yes'")."""
    text = repr(value)
    return f"{describe(value)} {text if len(text) <= 20 else text[:17] + '...'}"


def check_messages(value, field: str) -> list[dict]:
    """Check a list of `{role, content}` messages and return a clean copy (only those two keys).

    Raises `RowError` (field `FIELD` or `FIELD[i]...`): not a non-empty list, an item that is not an object, a
    missing role or content, an unknown role, a system message that is not first, content that is not a string or
    is empty.
    """
    if not isinstance(value, list) or not value:
        raise RowError(field, f"expected a non-empty list of {{role, content}} messages, got {describe(value)}")
    clean = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise RowError(where, f"expected a {{role, content}} object, got {describe(message)}")
        for key in ("role", "content"):
            if key not in message:
                raise RowError(where, f"missing field '{key}'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise RowError(f"{where}.role", "a system message may only come first")
        if not isinstance(content, str):
            raise RowError(f"{where}.content", f"expected a string, got {describe(content)}")
        if not content.strip():
            raise RowError(f"{where}.content", "empty message")
        clean.append({"role": role, "content": content})
    return clean


def as_prompt(value, field: str = "prompt") -> list[dict]:
    """The prompt as messages: a string becomes one user turn; a list must end with a user (or tool) turn.

    Raises `RowError` on an empty string and on every check of `check_messages`.
    """
    if isinstance(value, str):
        if not value.strip():
            raise RowError(field, "empty prompt")
        return [{"role": "user", "content": value}]
    messages = check_messages(value, field)
    if messages[-1]["role"] not in ("user", "tool"):
        raise RowError(field, f"must end with a user turn, not {messages[-1]['role']!r}")
    return messages


def as_answer(value, field: str) -> list[dict]:
    """An answer as a one-element list `[{"role": "assistant", "content": ...}]`.

    Accepts a plain string, a single message object, or a one-element list of messages. Raises `RowError`: empty
    answer, more than one message, a role other than assistant, and every check of `check_messages`.
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
        message = check_messages(value, field)[0]
    except RowError as e:
        if e.field == f"{field}[0].content" and str(e) == "empty message":
            raise RowError(field, "empty answer") from None
        raise
    if message["role"] != "assistant":
        raise RowError(f"{field}[0].role", f"expected role 'assistant', got {message['role']!r}")
    return [message]


def prompt_turns_of(prompt: list[dict], prompt_turns: str = "last") -> list[list[dict]]:
    """A checked prompt (ending with a user or tool turn) as one prompt (`"last"`), or one prompt per user turn with the
    turns before it as context (`"all"`, `--prompt_turns all`), the whole prompt last.

    `[system, user1, assistant1, user2]` -> `[[system, user1], [system, user1, assistant1, user2]]` with `"all"`.
    """
    if prompt_turns == "last":
        return [prompt]
    prompts = [prompt[:i + 1] for i, m in enumerate(prompt) if m["role"] == "user"]
    return prompts if prompts and prompts[-1] == prompt else prompts + [prompt]
