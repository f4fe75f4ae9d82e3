"""Reward-model probe for degenerate answers, and degenerate-negative augmentation.

Why this exists: PPO collapsed because the reward model scored an EMPTY answer
above good ones. A reward model trained with plain TRL ``RewardTrainer`` on
human preference pairs never sees an empty, one-word, truncated or repeated
answer, so its score for such answers is arbitrary -- and the policy optimiser
will find and exploit any such hole. Measured on our seed run: the empty answer
beat the human-chosen one 79% of the time, "Ok." 85%, the chosen answer cut to
its first quarter 70%, and the chosen answer repeated 3x 30%.

This module provides:

* :func:`run_probe` / :func:`format_probe_table` / :func:`save_probe_report`:
  measure how often a reward model prefers a degenerate version of the chosen
  answer over the chosen answer itself.
* :func:`augment_with_degenerate_negatives`: add (chosen, degenerate(chosen))
  pairs to reward-model training data so the model learns to rank them low.
* :func:`reward_scorer`: turn an ``AutoModelForSequenceClassification`` reward
  model (``num_labels=1``) plus its tokenizer into a ``score_fn`` for the probe.
* ``python -m utils.rm_probe RM_DIR DATA.jsonl [--max_prompts N] [--output_dir DIR]``

Data rows use the conversational TRL format::

    {"prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}]}

``chosen`` / ``rejected`` may also be plain strings; the degenerate rejected
answers keep whatever format the row's ``chosen`` has.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import re
import sys
import warnings
from typing import Any, Callable, Iterable, Sequence

VARIANTS = ("empty", "filler", "truncated", "repeated", "off_topic")

#: Human-readable description of each variant (used in the table and plot).
VARIANT_DESCRIPTIONS = {
    "empty": 'empty answer ""',
    "filler": 'filler answer "Ok."',
    "truncated": "chosen answer cut to its first quarter of words",
    "repeated": "chosen answer repeated 3 times",
    "off_topic": "chosen answer of a different prompt",
}

FILLER_ANSWER = "Ok."
#: Separator used by the "repeated" variant (a blank line, as in a copy-paste loop).
REPEAT_SEPARATOR = "\n\n"
REPEAT_TIMES = 3
#: A variant whose win rate is strictly above this threshold triggers a WARNING.
WARN_THRESHOLD = 0.10

from utils.reward import ScoreFn, load_reward_model, reward_scorer  # noqa: F401  (re-exported)


# --------------------------------------------------------------------------- #
# Degenerate answers
# --------------------------------------------------------------------------- #
def _check_variants(variants: Iterable[str]) -> tuple:
    variants = tuple(variants)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"Unknown variant {v!r}; allowed variants: {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"Duplicate variants in {variants!r}")
    return variants


def degenerate_answer(answer: str, variant: str, other_answer: str | None = None) -> str:
    """Return a degenerate version of ``answer``.

    Args:
        answer: the (good) answer text.
        variant: one of :data:`VARIANTS`:

            * ``"empty"`` -> ``""``
            * ``"filler"`` -> ``"Ok."``
            * ``"truncated"`` -> the first quarter of the whitespace-separated
              words (``max(1, n_words // 4)`` words), returned as an exact
              prefix of ``answer`` (original spacing kept, trailing whitespace
              dropped). It has at least 1 word and, when ``answer`` has >= 2
              words, strictly fewer words than ``answer``. A 0- or 1-word
              answer comes back (stripped) unchanged.
            * ``"repeated"`` -> ``answer`` three times joined by a blank line
              (``"\\n\\n"``, see :data:`REPEAT_SEPARATOR`).
            * ``"off_topic"`` -> ``other_answer`` (an answer written for a
              different prompt).
        other_answer: required for ``"off_topic"``, ignored otherwise.

    Returns:
        The degenerate answer (str). It may equal ``answer`` (e.g. a one-word
        answer truncated); callers that need a real negative must check.

    Raises:
        ValueError: unknown ``variant`` (the message lists the allowed
            variants), or ``variant == "off_topic"`` without ``other_answer``.
        TypeError: ``answer`` (or ``other_answer``) is not a str.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; allowed variants: {', '.join(VARIANTS)}")
    if variant == "empty":
        return ""
    if variant == "filler":
        return FILLER_ANSWER
    if variant == "truncated":
        words = list(re.finditer(r"\S+", answer))
        if not words:
            return answer
        keep = max(1, len(words) // 4)
        return answer[: words[keep - 1].end()]
    if variant == "repeated":
        return REPEAT_SEPARATOR.join([answer] * REPEAT_TIMES)
    # off_topic
    if other_answer is None:
        raise ValueError('variant "off_topic" needs other_answer (an answer to a different prompt)')
    if not isinstance(other_answer, str):
        raise TypeError(f"other_answer must be a str, got {type(other_answer).__name__}")
    return other_answer


# --------------------------------------------------------------------------- #
# Row helpers
# --------------------------------------------------------------------------- #
def _answer_text(answer: Any) -> str:
    """Text of an answer given as a str or a list of messages (last message's content)."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (list, tuple)) and answer and isinstance(answer[-1], dict):
        content = answer[-1].get("content")
        if isinstance(content, str):
            return content
    raise ValueError(
        "answer must be a str or a non-empty list of {'role', 'content': str} messages, "
        f"got {answer!r:.200}"
    )


def _as_messages(prompt: Any) -> list:
    """Prompt as a list of chat messages (a plain str becomes one user message)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        return list(prompt)
    raise ValueError(f"prompt must be a str or a list of chat messages, got {prompt!r:.200}")


def _like(template: Any, text: str) -> Any:
    """``text`` in the same format as ``template`` (str, or a one-message assistant list)."""
    if isinstance(template, str):
        return text
    return [{"role": "assistant", "content": text}]


def _partners(n: int, seed: int) -> list:
    """For each index i in range(n) a deterministic partner index j != i (needs n >= 2)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        j = rng.randrange(n - 1)
        out.append(j + 1 if j >= i else j)
    return out


def _check_rows(rows: Sequence[dict]) -> None:
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row or "chosen" not in row:
            raise ValueError(f"row {k} must be a dict with 'prompt' and 'chosen' keys, got {row!r:.200}")


def _make_pair(row: dict, variant: str, other_row: dict | None) -> dict | None:
    chosen_text = _answer_text(row["chosen"])
    other = _answer_text(other_row["chosen"]) if other_row is not None else None
    bad = degenerate_answer(chosen_text, variant, other)
    if bad == chosen_text:
        return None
    return {
        "prompt": copy.deepcopy(row["prompt"]),
        "chosen": copy.deepcopy(row["chosen"]),
        "rejected": _like(row["chosen"], bad),
        "variant": variant,
    }


def degenerate_pairs(rows: Sequence[dict], variants: Sequence[str] = VARIANTS, seed: int = 0) -> list:
    """Build (chosen, degenerate(chosen)) preference pairs.

    Args:
        rows: preference rows, each a dict with at least ``"prompt"`` and
            ``"chosen"`` (canonical conversational format, or plain strings).
        variants: which of :data:`VARIANTS` to build, in this order per row.
        seed: picks, deterministically, the other row whose chosen answer is
            used as the ``"off_topic"`` answer.

    Returns:
        A list of dicts ``{"prompt", "chosen", "rejected", "variant"}``, row
        by row and, within a row, in ``variants`` order (at most
        ``len(rows) * len(variants)`` entries). ``rejected`` is the degenerate
        version of the row's chosen answer, in the same format as ``chosen``
        (a str, or ``[{"role": "assistant", "content": ...}]``). A variant is
        skipped for a row when the degenerate answer equals the chosen text
        (e.g. a one-word answer truncated, an empty chosen answer, or an
        off-topic answer identical to the chosen one). Prompts and chosen
        answers are deep copies.

    Raises:
        ValueError: unknown variant, malformed row, or ``"off_topic"``
            requested with fewer than 2 rows.
    """
    variants = _check_variants(variants)
    rows = list(rows)
    _check_rows(rows)
    if "off_topic" in variants and rows and len(rows) < 2:
        raise ValueError('variant "off_topic" needs at least 2 rows (it borrows another row\'s chosen answer)')
    partners = _partners(len(rows), seed) if "off_topic" in variants and rows else None
    out = []
    for i, row in enumerate(rows):
        for v in variants:
            other = rows[partners[i]] if v == "off_topic" else None
            pair = _make_pair(row, v, other)
            if pair is not None:
                out.append(pair)
    return out


def augment_with_degenerate_negatives(
    rows: Sequence[dict], ratio: float, seed: int = 0, variants: Sequence[str] = VARIANTS
) -> list:
    """Return ``rows`` plus about ``ratio * len(rows)`` degenerate-negative pairs.

    The extra pairs are drawn (deterministically for a given ``seed``) from
    :func:`degenerate_pairs` ``(rows, variants, seed)``, cycling through
    ``variants`` round-robin so every variant gets an equal share (+-1), each
    variant using a seeded random order of the rows. Pass training rows only:
    the negatives (including off-topic answers) are built only from ``rows``,
    so nothing leaks from an eval split.

    Args:
        rows: preference rows (see :func:`degenerate_pairs`).
        ratio: number of extra pairs as a fraction of ``len(rows)``;
            ``round(ratio * len(rows))`` pairs are added. If fewer distinct
            pairs exist, all of them are added and a warning is issued.
        seed: random seed (same seed -> same output).
        variants: which of :data:`VARIANTS` to use.

    Returns:
        A new list: the input rows (same objects, same order) followed by the
        extra rows. Extra rows have exactly the keys of their source row (the
        ``"variant"`` key is dropped): ``prompt`` and ``chosen`` from the
        source row, ``rejected`` replaced by the degenerate answer, and any
        other key (e.g. ``"margin"``) copied from the source row. With
        ``ratio == 0`` the result equals ``list(rows)``.

    Raises:
        ValueError: ``ratio`` negative or not finite, unknown variant,
            malformed row, or ``"off_topic"`` requested with < 2 rows.
    """
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be a finite number >= 0, got {ratio}")
    variants = _check_variants(variants)
    rows = list(rows)
    n_extra = int(round(ratio * len(rows)))
    if n_extra == 0 or not variants:
        return rows
    _check_rows(rows)
    if "off_topic" in variants and len(rows) < 2:
        raise ValueError('variant "off_topic" needs at least 2 rows (it borrows another row\'s chosen answer)')
    partners = _partners(len(rows), seed) if "off_topic" in variants else None

    rng = random.Random(f"augment-{seed}")
    orders = {v: rng.sample(range(len(rows)), len(rows)) for v in variants}
    cursors = {v: 0 for v in variants}
    active = list(variants)
    extra = []
    while len(extra) < n_extra and active:
        for v in list(active):
            if len(extra) >= n_extra:
                break
            pair = None
            order = orders[v]
            while pair is None and cursors[v] < len(order):
                i = order[cursors[v]]
                cursors[v] += 1
                other = rows[partners[i]] if v == "off_topic" else None
                pair = _make_pair(rows[i], v, other)
                src = rows[i]
            if pair is None:
                active.remove(v)
                continue
            new_row = {}
            for key in src:
                if key in ("prompt", "chosen", "rejected"):
                    new_row[key] = pair[key]
                else:
                    new_row[key] = copy.deepcopy(src[key])
            if "rejected" not in new_row:
                new_row["rejected"] = pair["rejected"]
            extra.append(new_row)
    if len(extra) < n_extra:
        warnings.warn(
            f"augment_with_degenerate_negatives: asked for {n_extra} extra pairs but only "
            f"{len(extra)} distinct degenerate pairs exist; adding all of them",
            stacklevel=2,
        )
    return rows + extra


# --------------------------------------------------------------------------- #
# Probe
# --------------------------------------------------------------------------- #
def run_probe(
    score_fn: ScoreFn,
    rows: Sequence[dict],
    max_prompts: int = 100,
    seed: int = 0,
    variants: Sequence[str] = VARIANTS,
) -> dict:
    """Measure how often a reward model prefers degenerate answers over the chosen one.

    Args:
        score_fn: ``score_fn(prompts, answers) -> list[float]`` where
            ``prompts`` is a list of chat-message lists and ``answers`` a list
            of str of the same length; returns one score per (prompt, answer),
            higher = better. It is called once with all items (see
            :func:`reward_scorer` for a batched model-backed implementation).
        rows: preference rows (``"prompt"``, ``"chosen"``; ``"rejected"`` is
            not used). A str prompt is treated as one user message.
        max_prompts: use at most this many rows: all rows in order if
            ``len(rows) <= max_prompts``, else a seeded random sample (kept in
            original order).
        seed: seed for the row sample and the off-topic partner choice (the
            off-topic answer is the chosen answer of another row in ``rows``).
        variants: which of :data:`VARIANTS` to probe.

    Returns:
        ``{"n_prompts": n, "variants": {variant: {"win_rate": float | None,
        "mean_gap": float | None, "n": int}}}`` where ``win_rate`` is the
        fraction of probed prompts whose variant score is strictly greater
        than the chosen score, ``mean_gap`` the mean of (chosen score -
        variant score) (positive = reward model correctly prefers the chosen
        answer), and ``n`` the number of prompts the variant was scored on
        (a variant is skipped for a prompt when the degenerate answer equals
        the chosen text, e.g. truncating a one-word answer, and "off_topic" is
        skipped entirely with fewer than 2 rows). ``win_rate``/``mean_gap``
        are ``None`` when ``n == 0``.

    Raises:
        ValueError: ``max_prompts < 1``, malformed rows, unknown variant, or
            ``score_fn`` returned the wrong number of scores.
    """
    if max_prompts < 1:
        raise ValueError(f"max_prompts must be >= 1, got {max_prompts}")
    variants = _check_variants(variants)
    rows = list(rows)
    _check_rows(rows)
    rng = random.Random(seed)
    if len(rows) > max_prompts:
        idx = sorted(rng.sample(range(len(rows)), max_prompts))
    else:
        idx = list(range(len(rows)))
    partners = _partners(len(rows), seed) if len(rows) >= 2 else None

    prompts, answers = [], []
    # items[k] = (variant or None for chosen, probe row number)
    items = []
    for r, i in enumerate(idx):
        row = rows[i]
        prompt = _as_messages(row["prompt"])
        chosen = _answer_text(row["chosen"])
        prompts.append(prompt)
        answers.append(chosen)
        items.append((None, r))
        for v in variants:
            if v == "off_topic":
                if partners is None:
                    continue
                bad = degenerate_answer(chosen, v, _answer_text(rows[partners[i]]["chosen"]))
            else:
                bad = degenerate_answer(chosen, v)
            if bad == chosen:
                continue
            prompts.append(prompt)
            answers.append(bad)
            items.append((v, r))

    scores = list(score_fn(prompts, answers)) if prompts else []
    if len(scores) != len(prompts):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(prompts)} answers")
    scores = [float(s) for s in scores]

    chosen_score = {}
    for (v, r), s in zip(items, scores):
        if v is None:
            chosen_score[r] = s
    per_variant = {v: [] for v in variants}  # list of (chosen - variant) gaps
    for (v, r), s in zip(items, scores):
        if v is not None:
            per_variant[v].append(chosen_score[r] - s)

    result = {"n_prompts": len(idx), "variants": {}}
    for v in variants:
        gaps = per_variant[v]
        n = len(gaps)
        result["variants"][v] = {
            "win_rate": (sum(1 for g in gaps if g < 0) / n) if n else None,
            "mean_gap": (sum(gaps) / n) if n else None,
            "n": n,
        }
    return result


def format_probe_table(result: dict) -> str:
    """Render a :func:`run_probe` result as a fixed-width table plus warnings.

    Args:
        result: the dict returned by :func:`run_probe` (or loaded back from
            ``rm_probe.json``).

    Returns:
        A multi-line str: a title line, a header, one row per variant
        (win rate in %, mean gap, n, description) and, for each variant whose
        win rate is strictly above 10%, a line starting with ``"WARNING:"``
        that says the reward model prefers such answers, that PPO/RLOO/GRPO
        will learn to exploit it, and recommends retraining with
        :func:`augment_with_degenerate_negatives`. If no variant is above
        10% a final "OK" line says so.

    Raises:
        KeyError: ``result`` lacks ``"variants"``.
    """
    variants = result["variants"]
    n_prompts = result.get("n_prompts", "?")
    lines = [
        f"Reward-model degenerate-answer probe ({n_prompts} prompts)",
        "win rate = share of prompts where the degenerate answer scores ABOVE the chosen answer "
        "(should be ~0%); gap = mean(chosen - degenerate) score (should be > 0)",
        f"{'variant':<11} {'win rate':>9} {'mean gap':>10} {'n':>6}  description",
        f"{'-' * 11} {'-' * 9} {'-' * 10} {'-' * 6}  {'-' * 40}",
    ]
    warn_lines = []
    for v, stats in variants.items():
        wr, gap, n = stats.get("win_rate"), stats.get("mean_gap"), stats.get("n", "")
        wr_s = "n/a" if wr is None else f"{100.0 * wr:.1f}%"
        gap_s = "n/a" if gap is None else f"{gap:+.3f}"
        desc = VARIANT_DESCRIPTIONS.get(v, "")
        lines.append(f"{v:<11} {wr_s:>9} {gap_s:>10} {n!s:>6}  {desc}")
        if wr is not None and wr > WARN_THRESHOLD:
            warn_lines.append(
                f"WARNING: [{v}] the reward model prefers the {desc} over the chosen answer for "
                f"{100.0 * wr:.1f}% of prompts (> {100 * WARN_THRESHOLD:.0f}%). PPO/RLOO/GRPO will "
                f"learn to exploit this and produce such answers. Retrain the reward model with "
                f"degenerate negatives (utils.rm_probe.augment_with_degenerate_negatives on the "
                f"training rows)."
            )
    lines.append("")
    if warn_lines:
        lines.extend(warn_lines)
    else:
        lines.append(
            f"OK: no degenerate variant beats the chosen answer on more than "
            f"{100 * WARN_THRESHOLD:.0f}% of prompts."
        )
    return "\n".join(lines)


def save_probe_report(result: dict, output_dir: str) -> tuple:
    """Write ``rm_probe.json`` and ``rm_probe.png`` into ``output_dir``.

    The PNG is a bar chart of the per-variant win rates (red above the 10%
    threshold, drawn as a dashed line), rendered with matplotlib's Agg
    canvas (no GUI, no change to the global pyplot backend).

    Args:
        result: the dict returned by :func:`run_probe`.
        output_dir: directory to write into (created if missing).

    Returns:
        ``(path_json, path_png)``: the two paths written, as str.

    Raises:
        OSError: the directory or files cannot be written.
        TypeError: ``result`` is not JSON-serialisable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    os.makedirs(output_dir, exist_ok=True)
    path_json = os.path.join(output_dir, "rm_probe.json")
    path_png = os.path.join(output_dir, "rm_probe.png")
    with open(path_json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    names = list(result["variants"])
    rates = [result["variants"][v].get("win_rate") for v in names]
    heights = [0.0 if r is None else 100.0 * r for r in rates]
    colors = ["tab:red" if (r is not None and r > WARN_THRESHOLD) else "tab:green" for r in rates]

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(names, heights, color=colors)
    for bar, r in zip(bars, rates):
        label = "n/a" if r is None else f"{100.0 * r:.0f}%"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.axhline(100 * WARN_THRESHOLD, color="black", linestyle="--", linewidth=1,
               label=f"{100 * WARN_THRESHOLD:.0f}% warning threshold")
    ax.set_ylim(0, 105)
    ax.set_ylabel("win rate over chosen answer (%)")
    ax.set_title(f"Reward model prefers degenerate answer ({result.get('n_prompts', '?')} prompts)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, format="png")
    return path_json, path_png


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def load_rows(path: str) -> list:
    """Read preference rows from a JSON-lines file.

    Args:
        path: ``.jsonl`` file, one JSON object per line (blank lines skipped)
            with ``"prompt"`` (list of messages or str) and ``"chosen"``
            (list of messages or str).

    Returns:
        A list of row dicts.

    Raises:
        ValueError: a line is not valid JSON or lacks ``prompt``/``chosen``
            (the message gives the line number).
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e}") from e
            if not isinstance(row, dict) or "prompt" not in row or "chosen" not in row:
                raise ValueError(f"{path}:{lineno}: expected an object with 'prompt' and 'chosen'")
            try:
                _as_messages(row["prompt"])
                _answer_text(row["chosen"])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from e
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m utils.rm_probe RM_DIR DATA.jsonl [--max_prompts N] [--output_dir DIR]``.

    Loads the reward model from RM_DIR, probes it on rows of DATA.jsonl,
    prints the table and writes ``rm_probe.json``/``rm_probe.png`` into
    ``--output_dir`` (default RM_DIR). Returns 0 (also when warnings were
    printed; the JSON holds the numbers for automated checks).
    """
    parser = argparse.ArgumentParser(
        prog="python -m utils.rm_probe",
        description="Probe a reward model for preferring degenerate answers "
        "(empty, 'Ok.', truncated, repeated, off-topic) over the chosen answer.",
    )
    parser.add_argument("rm_dir", help="reward model dir (full model or PEFT LoRA adapter)")
    parser.add_argument("data", help="preference data .jsonl (prompt/chosen[/rejected])")
    parser.add_argument("--max_prompts", type=int, default=100)
    parser.add_argument("--output_dir", default=None, help="where to write rm_probe.json/png (default: RM_DIR)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available else cpu)")
    args = parser.parse_args(argv)

    rows = load_rows(args.data)
    if not rows:
        parser.error(f"no rows in {args.data}")
    model, tokenizer = load_reward_model(args.rm_dir, args.device)
    score_fn = reward_scorer(model, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    result = run_probe(score_fn, rows, max_prompts=args.max_prompts, seed=args.seed)
    print(format_probe_table(result))
    path_json, path_png = save_probe_report(result, args.output_dir or args.rm_dir)
    print(f"\nwrote {path_json}\nwrote {path_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
