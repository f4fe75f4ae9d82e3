"""Degenerate answers (empty, "Ok.", truncated, repeated, off-topic) made from a row's chosen answer, and the training
pairs `(chosen, degenerate version of chosen)` that teach a reward model to rank them below it
(`reward_model.py --degenerate_negatives_ratio`, `--degenerate_variant_weights`). The probe that measures how often a
reward model prefers them is `rlhfkit/report/rm_probe.py`.

Rows are canonical preference rows as `rlhfkit.data` loads them:
`{"prompt": [messages], "chosen": [{"role": "assistant", "content": str}], "rejected": [...]}`.
"""

from __future__ import annotations

import math
import random
import re

from rlhfkit.data.offline import count_too_long
from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0

VARIANTS = ("empty", "filler", "truncated", "repeated", "off_topic")
FILLER = "Ok."


def degenerate_answer(answer: str, variant: str, other_answer: str | None = None) -> str:
    """A degenerate version of `answer`.

    `variant`: "empty" -> ""; "filler" -> "Ok."; "truncated" -> the first `max(1, n_words // 4)` words, as an
    exact prefix of `answer` (a 0- or 1-word answer comes back unchanged); "repeated" -> `answer` three times,
    separated by a blank line; "off_topic" -> `other_answer` (an answer written for another prompt).
    The result may equal `answer` (e.g. a one-word answer truncated); callers skip those.
    Raises `ValueError` for an unknown variant (naming the allowed ones) or "off_topic" without `other_answer`.
    """
    if variant == "empty":
        return ""
    if variant == "filler":
        return FILLER
    if variant == "truncated":
        words = list(re.finditer(r"\S+", answer))
        return answer[: words[max(1, len(words) // 4) - 1].end()] if words else answer
    if variant == "repeated":
        return "\n\n".join([answer] * 3)
    if variant == "off_topic":
        if other_answer is None:
            raise ValueError('variant "off_topic" needs other_answer (an answer to a different prompt)')
        return other_answer
    raise ValueError(f"unknown variant {variant!r}; allowed variants: {', '.join(VARIANTS)}")


def check_variants(variants) -> tuple:
    """`variants` as a tuple; raises `ValueError` naming the allowed ones for an unknown name."""
    for v in variants:
        degenerate_answer("x", v, other_answer="y")  # raises for an unknown name
    return tuple(variants)


def degenerate_answers(rows: list[dict], variants, seed: int) -> list[dict[str, str]]:
    """For each row, `{variant: degenerate answer}`, leaving out answers equal to the chosen one.

    The off-topic answer of row i is the chosen answer of another row, picked with `seed` (none with < 2 rows).
    """
    chosen = [row["chosen"][0]["content"] for row in rows]
    rng = random.Random(seed)
    out = []
    for i, answer in enumerate(chosen):
        other = None
        if len(rows) >= 2:
            j = rng.randrange(len(rows) - 1)
            other = chosen[j + (j >= i)]  # any row but i
        bad = {v: degenerate_answer(answer, v, other) for v in variants if v != "off_topic" or other is not None}
        out.append({v: text for v, text in bad.items() if text != answer})
    return out


# ----------------------------------------------------------------------------------------------------------
# Training pairs (reward_model.py --degenerate_negatives_ratio)


def parse_variant_weights(spec: str) -> dict[str, float]:
    """`"empty:1,filler:1,off_topic:4"` -> `{"empty": 1.0, "filler": 1.0, "off_topic": 4.0}` (relative shares).

    Names are from `VARIANTS`; a name left out or given weight 0 gets no pairs. Raises `ValueError` naming the
    field `degenerate_variant_weights` for an unknown name, a missing or negative weight, or all weights 0.
    """
    weights = {}
    for item in filter(None, (part.strip() for part in str(spec).split(","))):
        name, _, value = item.partition(":")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if name not in VARIANTS or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--degenerate_variant_weights: bad entry {item!r}; expected name:weight (weight >= 0) "
                             f"with names from {', '.join(VARIANTS)}, e.g. \"empty:1,off_topic:4\"")
        weights[name] = weight
    if not any(weights.values()):
        raise ConfigError(f"--degenerate_variant_weights: {spec!r} gives no variant a weight > 0")
    return {v: w for v, w in weights.items() if w > 0}


def augment_with_degenerate_negatives(rows: list[dict], ratio: float, seed: int = 0, variants=VARIANTS,
                                      tokenizer=None, max_length: int | None = None, log=info_rank0) -> list[dict]:
    """`rows` followed by `round(ratio * len(rows))` pairs `(prompt, chosen, rejected=degenerate(chosen))`.

    Pass the TRAINING rows only: the degenerate answers (off-topic ones included) come from `rows`, so nothing
    leaks from an eval split. `variants`: names (equal shares) or `{name: weight}` (shares proportional to the
    weights, see `parse_variant_weights`). Each variant walks the rows in a seeded random order (at most one pair per
    row and variant) and the next pair goes to the variant furthest below its share, so the same `seed` gives the
    same pairs. With `tokenizer` and `max_length`, pairs longer than `max_length` tokens are skipped (TRL's
    RewardTrainer would drop them; mostly "repeated" of a long answer). A variant that runs out of rows leaves its
    share to the others; if fewer usable pairs exist in all, all are added. Prints (`log`) how many pairs each
    variant got. Returns a new list; `ratio == 0` returns `list(rows)`. Raises `ValueError` for a negative or
    non-finite ratio or unknown variant.
    """
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ConfigError(f"--degenerate_negatives_ratio must be a finite number >= 0, got {ratio}")
    weights = {v: w for v, w in variants.items() if w > 0} if isinstance(variants, dict) else dict.fromkeys(variants, 1)
    variants, rows = check_variants(weights), list(rows)
    n_extra = round(ratio * len(rows))
    if n_extra == 0 or not variants:
        return rows
    answers = degenerate_answers(rows, variants, seed)
    rng = random.Random(f"augment-{seed}")
    queues = {v: [i for i in rng.sample(range(len(rows)), len(rows)) if v in answers[i]] for v in variants}
    share = {v: weights[v] / sum(weights.values()) for v in variants}
    added, too_long, n_added = {v: [] for v in variants}, 0, 0
    while n_added < n_extra and any(queues.values()):
        v = max((v for v in variants if queues[v]), key=lambda v: share[v] * (n_added + 1) - len(added[v]))
        i = queues[v].pop(0)
        pair = {"prompt": rows[i]["prompt"], "chosen": rows[i]["chosen"],
                "rejected": [{"role": "assistant", "content": answers[i][v]}]}
        if tokenizer is not None and max_length and count_too_long(tokenizer, [pair], max_length):
            too_long += 1
            continue
        added[v].append(pair)
        n_added += 1
    counts = ", ".join(f"{v} {len(pairs)}" for v, pairs in added.items())
    log(f"[data] degenerate negatives: added {n_added} (chosen, degenerate) pairs to {len(rows)} training pairs "
        f"(ratio {ratio:g}): {counts}" + (f"; skipped {too_long} longer than max_length={max_length}"
                                          if too_long else ""))
    if n_added < n_extra:
        log(f"[data] (asked for {n_extra}; that is every usable degenerate pair of these rows)")
    return rows + [pair for v in variants for pair in added[v]]
