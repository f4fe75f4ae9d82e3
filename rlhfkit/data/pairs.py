r"""Preference shapes: one pure converter per shape, each returning canonical pairs
`{"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}`.

* explicit prompt (`conversational` / `plain strings`): `prompt`, `chosen`, `rejected`, strings or messages;
* `hh-rlhf` (Bai et al. 2022): only `chosen` / `rejected`, each a whole `"\\n\\nHuman: ...\\n\\nAssistant: ..."`
  transcript; the turns they share become the prompt;
* `implicit prompt` (TRL's implicit-prompt conversational pairs, UltraFeedback-binarized): `chosen` and `rejected`
  are whole conversations that share their prompt turns; a `prompt` beside them must agree with those turns;
* `PKU-SafeRLHF`: `prompt`, `response_0`, `response_1` and `better_response_id` / `safer_response_id`;
* `ranked responses`: `prompt` and `responses` with scores -> the best vs the worst answer, or every pair of answers
  with different scores.
Each raises `RowError` naming the field at fault.
"""

from __future__ import annotations

import itertools
import re

from rlhfkit.data.messages import RowError, as_answer, as_prompt, check_messages, describe, short_value

HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLE = {"Human": "user", "Assistant": "assistant"}
PKU_KEYS = ("better_response_id", "safer_response_id")  # which response PKU-SafeRLHF's annotators preferred
RESPONSE_TEXT_KEYS = ("text", "content", "response")  # where a ranked response object keeps its text


def finish_pair(prompt: list[dict], chosen: list[dict], rejected: list[dict], rejected_field: str = "rejected",
                chosen_field: str = "chosen") -> dict:
    """The canonical pair; raises `RowError` on `rejected_field` if the two answers are the same text."""
    if chosen[0]["content"].strip() == rejected[0]["content"].strip():
        raise RowError(rejected_field, f"identical to '{chosen_field}'; a preference pair needs two different answers")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def require_answers(row: dict) -> None:
    """Raise `RowError("chosen" / "rejected", "missing field")` unless the row has both."""
    for field in ("chosen", "rejected"):
        if field not in row:
            raise RowError(field, "missing field")


def from_explicit(row: dict) -> list[dict]:
    """`{"prompt", "chosen", "rejected"}` as strings, one message or a one-message list -> one pair."""
    require_answers(row)
    if "prompt" not in row:
        raise RowError("prompt", "missing field (only raw hh-rlhf transcripts, or chosen / rejected conversations "
                                 "that share their prompt turns, may leave the prompt out)")
    return [finish_pair(as_prompt(row["prompt"]), as_answer(row["chosen"], "chosen"),
                        as_answer(row["rejected"], "rejected"))]


def split_hh_transcript(text: str) -> list[dict]:
    r"""Split a raw hh-rlhf transcript into messages.

    `"\\n\\nHuman: hi\\n\\nAssistant: hello"` -> `[{"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"}]`. The content of the final turn may be empty (checked later).
    Raises `RowError` if the text does not start with a `\\n\\nHuman:` turn.
    """
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        raise RowError("chosen", "not an hh-rlhf transcript: it must start with '\\n\\nHuman:'")
    return [{"role": HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def is_hh(row: dict) -> bool:
    r"""True for a raw hh-rlhf row: no prompt, and `chosen` is a transcript starting with `\\n\\nHuman:`."""
    chosen = row.get("chosen")
    return "prompt" not in row and isinstance(chosen, str) and chosen.lstrip(" ").startswith("\n\nHuman:")


def from_hh(row: dict) -> list[dict]:
    """Two raw hh-rlhf transcripts -> one pair: the shared turns are the prompt, the last turns the answers."""
    require_answers(row)
    if not isinstance(row["rejected"], str):
        raise RowError("rejected", f"expected an hh-rlhf transcript string, got {describe(row['rejected'])}")
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
    return [finish_pair(chosen[:-1], chosen[-1:], rejected[-1:])]


def is_implicit(row: dict) -> bool:
    """True when `chosen` and `rejected` are both whole conversations (lists of two or more messages)."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    return isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) > 1 and len(rejected) > 1


def from_implicit(row: dict) -> list[dict]:
    """Two conversations that share their prompt turns -> one pair (the last assistant turns are the answers).

    A `prompt` beside them (UltraFeedback-binarized keeps the question as a string) must equal the shared turns, or,
    as a string, the content of their last user turn.
    """
    conversations = {}
    for field in ("chosen", "rejected"):
        turns = check_messages(row[field], field)
        if turns[-1]["role"] != "assistant":
            raise RowError(f"{field}[{len(turns) - 1}].role", f"the conversation must end with the assistant answer, "
                                                              f"not a {turns[-1]['role']!r} turn")
        conversations[field] = turns
    chosen, rejected = conversations["chosen"], conversations["rejected"]
    if chosen[:-1] != rejected[:-1]:
        raise RowError("rejected", "do not share a prompt: the chosen and rejected conversations differ before "
                                   "their last assistant turn")
    prompt = as_prompt(chosen[:-1], "chosen")
    given = row.get("prompt")
    if given is not None:
        same = given.strip() == prompt[-1]["content"].strip() if isinstance(given, str) else given == prompt
        if not same:
            raise RowError("prompt", "differs from the prompt turns that chosen and rejected share; remove 'prompt' "
                                     "or make them agree")
    return [finish_pair(prompt, chosen[-1:], rejected[-1:])]


def is_pku(row: dict) -> bool:
    """True for a PKU-SafeRLHF row: two numbered responses (`response_0`, `response_1`)."""
    return "response_0" in row and "response_1" in row


def response_id(row: dict, key: str):
    """`row[key]` as 0 or 1, None if missing or null; raises `RowError` on any other value."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        raise RowError(key, f"expected 0 or 1 (the preferred response), got {short_value(value)}")
    return int(value)


def from_pku(row: dict, preference_key: str = "better_response_id") -> tuple[str, list[dict]]:
    """A PKU-SafeRLHF row -> one pair: response_{id} is chosen, the other rejected, id from `preference_key`
    (`better_response_id`: helpfulness; `safer_response_id`: harmlessness). A row without that id uses the other one.

    Returns `(key_used, [pair])`. Raises `RowError` when both ids are missing, and on the usual prompt/answer checks.
    """
    if "prompt" not in row:
        raise RowError("prompt", "missing field")
    other = PKU_KEYS[1] if preference_key == PKU_KEYS[0] else PKU_KEYS[0]
    key, chosen_id = preference_key, response_id(row, preference_key)
    if chosen_id is None:
        key, chosen_id = other, response_id(row, other)
    if chosen_id is None:
        raise RowError(preference_key, f"missing field: a PKU-SafeRLHF row needs {PKU_KEYS[0]} or {PKU_KEYS[1]} "
                                       f"(0 or 1: which response is preferred)")
    chosen_field, rejected_field = f"response_{chosen_id}", f"response_{1 - chosen_id}"
    pair = finish_pair(as_prompt(row["prompt"]), as_answer(row[chosen_field], chosen_field),
                       as_answer(row[rejected_field], rejected_field), rejected_field, chosen_field)
    return key, [pair]


def is_ranked(row: dict) -> bool:
    """True for ranked responses: a `responses` list (scores in each item or in a `scores` list)."""
    return "responses" in row


def ranked_responses(row: dict) -> list[tuple[list[dict], float]]:
    """The `(answer, score)` of each response; raises `RowError` on a bad list, text or score."""
    responses, scores = row["responses"], row.get("scores")
    if not isinstance(responses, list) or len(responses) < 2:
        raise RowError("responses", f"expected a list of at least 2 responses, got "
                                    f"{len(responses) if isinstance(responses, list) else describe(responses)}")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(responses)):
        raise RowError("scores", f"expected one score per response ({len(responses)}), got "
                                 f"{len(scores) if isinstance(scores, list) else describe(scores)}")
    ranked = []
    for i, item in enumerate(responses):
        where = f"responses[{i}]"
        if isinstance(item, dict):
            key = next((k for k in RESPONSE_TEXT_KEYS if k in item), None)
            if key is None:
                raise RowError(where, f"missing field: a response object needs {' or '.join(RESPONSE_TEXT_KEYS)} "
                                      f"and score")
            text, score, score_field = item[key], item.get("score"), f"{where}.score"
        else:
            text, score, score_field = item, scores[i] if scores is not None else None, f"scores[{i}]"
        if score is None:
            raise RowError(score_field, "missing score (give each response a score, or a 'scores' list)")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RowError(score_field, f"expected a number, got {short_value(score)}")
        ranked.append((as_answer(text, where), float(score)))
    return ranked


def from_ranked(row: dict, pairs: str = "best_worst") -> list[dict]:
    """Ranked responses -> the best vs the worst response (`pairs="best_worst"`; ties keep the earlier one), or
    every pair with different scores, higher-scored answer chosen (`pairs="all"`; pairs of identical texts skipped).

    Raises `RowError` if `prompt` is missing, every response has the same score, or no pair of different texts is left.
    """
    if "prompt" not in row:
        raise RowError("prompt", "missing field")
    prompt, ranked = as_prompt(row["prompt"]), ranked_responses(row)
    order = sorted(range(len(ranked)), key=lambda i: (-ranked[i][1], i))
    if ranked[order[0]][1] == ranked[order[-1]][1]:
        raise RowError("responses", "every response has the same score: no pair to prefer one over another")
    if pairs == "best_worst":
        best = order[0]
        worst = min((i for i in order if ranked[i][1] < ranked[best][1]), key=lambda i: (ranked[i][1], i))
        return [finish_pair(prompt, ranked[best][0], ranked[worst][0], f"responses[{worst}]", f"responses[{best}]")]
    out = [{"prompt": prompt, "chosen": ranked[a][0], "rejected": ranked[b][0]}
           for a, b in itertools.combinations(order, 2)
           if ranked[a][1] > ranked[b][1] and ranked[a][0][0]["content"].strip() != ranked[b][0][0]["content"].strip()]
    if not out:
        raise RowError("responses", "no pair of different answers with different scores")
    return out
