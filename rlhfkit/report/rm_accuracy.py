"""Honest reward-model accuracy on preference pairs: every pair counted, split by answer length, beside the length rule.

A reward model's accuracy says little on its own: on hh-rlhf harmless the rule "the shorter answer wins" scores
0.657, above every reward model trained with this toolkit. So next to the accuracy this reports the accuracy on
the pairs whose chosen answer is longer and on those whose chosen answer is shorter, their mean (length-balanced
accuracy: 0.5 for any rule that looks at length only), both length rules' accuracy on the same pairs, the accuracy
on length-matched pairs (answers within 3 tokens of each other), the Pearson
correlation of the score with answer length, and a one-line reading. Pairs longer than `max_length` tokens are
scored cut at the end (the reward model then reads a cut answer) and counted, not dropped. The maths is
`rlhfkit.report.arena.length_split_accuracy`.

Used at the end of reward_model.py (`accuracy_after_training`, saved as rm_accuracy.json) and by
`evaluate.py --reward_model_path RM --eval_data_path PAIRS` without `--models`.
"""

from __future__ import annotations

import json
import os

from rlhfkit.data.offline import count_too_long
from rlhfkit.log import info_rank0
from rlhfkit.report.arena import length_split_accuracy, read_length_split
from rlhfkit.reward import ScoreFn, reward_scorer

ACCURACY_FILE = "rm_accuracy.json"


def preference_accuracy(score_fn: ScoreFn, tokenizer, rows: list[dict], max_length: int | None) -> dict:
    """Score every pair's chosen and rejected answer and compute the length-split accuracies.

    `rows` are canonical preference rows (`rlhfkit.data.offline.load_preference_file`); answer lengths are counted in
    tokens of `tokenizer` (the reward model's, no special tokens). `max_length` is the cut the scorer applies (None: no
    cut); pairs over it are counted in `n_cut`. Returns `rlhfkit.report.arena.length_split_accuracy`'s dict plus
    `n_cut`, `max_length` and `reading` (the one-line verdict). Raises `ValueError` if `rows` is empty.
    """
    if not rows:
        raise ValueError("no preference pairs to score")
    prompts = [row["prompt"] for row in rows]
    chosen = [row["chosen"][0]["content"] for row in rows]
    rejected = [row["rejected"][0]["content"] for row in rows]
    scores = list(score_fn(prompts + prompts, chosen + rejected))
    length = lambda texts: [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]  # noqa: E731
    result = length_split_accuracy(scores[:len(rows)], scores[len(rows):], length(chosen), length(rejected))
    result["n_cut"] = count_too_long(tokenizer, rows, max_length) if max_length else 0
    result["max_length"] = max_length
    result["reading"] = read_length_split(result)
    return result


def accuracy_rows(result: dict) -> list[list]:
    """The result as `[measure, value, pairs]` rows (value None where a split has no pairs), for tables."""
    return [["accuracy", result["accuracy"], result["n"]],
            ["accuracy, chosen answer longer", result["accuracy_chosen_longer"], result["n_chosen_longer"]],
            ["accuracy, chosen answer shorter", result["accuracy_chosen_shorter"], result["n_chosen_shorter"]],
            ["length-balanced accuracy (mean of the two)", result["length_balanced_accuracy"],
             result["n_chosen_longer"] + result["n_chosen_shorter"]],
            ['rule "the shorter answer wins" (same pairs)', result["shorter_wins_accuracy"], result["n"]],
            ['rule "the longer answer wins" (same pairs)', result.get("longer_wins_accuracy"), result["n"]],
            [f"accuracy on length-matched pairs (+-{result.get('matched_within', 3)} tokens)",
             result.get("accuracy_length_matched"), result.get("n_length_matched", 0)],
            ["model picks the shorter answer (share)", result["picks_shorter"],
             result["n_chosen_longer"] + result["n_chosen_shorter"]],
            ["correlation of the score with answer length", result.get("length_correlation"), 2 * result["n"]]]


def format_accuracy(result: dict, what: str = "held-out pairs") -> str:
    """Plain-text report: a header with the counts, one line per measure side by side, and the reading."""
    cut = (f"; {result['n_cut']} longer than max_length={result['max_length']} tokens, scored cut at the end"
           if result.get("n_cut") else "")
    lines = [f"[reward model] accuracy on all {result['n']} {what} (ties count half; {result['n_equal_length']} "
             f"pairs of equal length are in neither split{cut}):"]
    for name, value, n in accuracy_rows(result):
        unit = "answers" if name.startswith("correlation") else "pairs"
        lines.append(f"  {name:<46} {'n/a' if value is None else f'{value:.3f}':>6}  ({n} {unit})")
    lines.append(f"  reading: {result['reading']}")
    return "\n".join(lines)


def save_accuracy(result: dict, output_dir: str) -> str:
    """Write the result to `output_dir/rm_accuracy.json` (run health reads it); returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, ACCURACY_FILE)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def accuracy_after_training(trainer, tokenizer, eval_rows: list[dict], max_length: int | None) -> dict | None:
    """End of reward_model.py: score every held-out pair with the trained `trainer.model`, print the report and
    save rm_accuracy.json to `output_dir`.

    Every process scores the same pairs (ZeRO-3 needs all ranks in each forward pass); the main one prints and
    writes. Texts are cut at `max_length` tokens (the run's --max_length). Returns the result, or None without
    held-out pairs.
    """
    if not eval_rows:
        return None
    score_fn = reward_scorer(trainer.model, tokenizer, batch_size=trainer.args.per_device_eval_batch_size,
                             max_length=max_length or 10 ** 6)
    result = preference_accuracy(score_fn, tokenizer, eval_rows, max_length)
    if trainer.is_world_process_zero():
        info_rank0(format_accuracy(result))
        save_accuracy(result, trainer.args.output_dir)
    return result
