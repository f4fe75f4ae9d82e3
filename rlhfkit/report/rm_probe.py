"""Does a reward model prefer degenerate answers? A probe, and training pairs that teach it not to.

Why: a reward model trained only on human preference pairs never sees an empty, one-word, truncated or repeated
answer, so its score for them is arbitrary, and PPO / RLOO / GRPO find and exploit such holes (the policy learns
to answer nothing). Measured on the seed run (SmolLM2-135M-Instruct + LoRA, one epoch of hh-rlhf): the empty
answer beat the human-chosen one 79% of the time, "Ok." 85%, the chosen answer cut to a quarter 70%.

* `run_probe` + `save_probe_report` (the table: `probe_table.py`): for held-out prompts, score the chosen answer
  against degenerate versions of it and report how often each version wins. `reward_model.py` runs it at the end
  (`probe_after_training`); `python -m rlhfkit.report.rm_probe RM_DIR DATA.jsonl` runs it on any saved reward model;
  `probe_table.print_saved_probe(RM_DIR)` shows the saved table (the online methods call it before they start).
* The degenerate answers themselves, and the training pairs that teach a reward model to rank them below the chosen
  one (`--degenerate_negatives_ratio`), are in `rlhfkit/data/degenerate.py`.

Rows are canonical preference rows as `rlhfkit.data` loads them:
`{"prompt": [messages], "chosen": [{"role": "assistant", "content": str}], "rejected": [...]}`.
"""

from __future__ import annotations

import json
import os
import random

from rlhfkit.data.degenerate import VARIANTS, check_variants, degenerate_answers
from rlhfkit.data.offline import load_preference_file
from rlhfkit.errors import ConfigError, ToolParser, run_cli
from rlhfkit.log import info_rank0, quiet_libraries
from rlhfkit.outputs import check_can_write
from rlhfkit.report.probe_table import PROBE_FILE, WARN_ABOVE, format_probe_table
from rlhfkit.reward import ScoreFn, check_reward_model_path, load_reward_model, reward_scorer

# ----------------------------------------------------------------------------------------------------------
# Probe


def run_probe(score_fn: ScoreFn, rows: list[dict], max_prompts: int = 200, seed: int = 0,
              variants=VARIANTS) -> dict:
    """How often does each degenerate version of the chosen answer score above the chosen answer itself?

    `score_fn(prompts, answers) -> list[float]` (see `rlhfkit.reward.reward_scorer`) is called once with every
    (prompt, answer); higher = better. Uses all rows if there are at most `max_prompts`, else a seeded sample.
    Returns `{"n_prompts": n, "variants": {variant: {"win_rate", "mean_gap", "n"}}}`: `win_rate` = share of
    prompts where the variant scores strictly higher than the chosen answer (ties do not count), `mean_gap` =
    mean(score(chosen) - score(variant)) in reward units (> 0 is right), `n` = prompts the variant was scored on
    (a variant equal to the chosen text is skipped). Both are None when n == 0.
    Raises `ValueError` if `max_prompts` < 1, a variant is unknown, or `score_fn` returns the wrong count.
    """
    if max_prompts < 1:
        raise ConfigError(f"--max_prompts must be >= 1, got {max_prompts}")
    variants, rows = check_variants(variants), list(rows)
    answers = degenerate_answers(rows, variants, seed)
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_prompts)) if len(rows) > max_prompts \
        else range(len(rows))
    prompts, texts, items = [], [], []  # items[k] = (probe row, variant or None for the chosen answer)
    for r, i in enumerate(keep):
        for v, text in [(None, rows[i]["chosen"][0]["content"]), *answers[i].items()]:
            prompts.append(rows[i]["prompt"])
            texts.append(text)
            items.append((r, v))
    scores = [float(s) for s in score_fn(prompts, texts)] if prompts else []
    if len(scores) != len(prompts):
        raise ValueError(f"score_fn returned {len(scores)} scores for {len(prompts)} answers")
    chosen = {r: s for (r, v), s in zip(items, scores) if v is None}
    gaps = {v: [chosen[r] - s for (r, w), s in zip(items, scores) if w == v] for v in variants}
    return {"n_prompts": len(keep), "variants": {
        v: {"win_rate": sum(g < 0 for g in gaps[v]) / len(gaps[v]) if gaps[v] else None,
            "mean_gap": sum(gaps[v]) / len(gaps[v]) if gaps[v] else None,
            "n": len(gaps[v])} for v in variants}}


def save_probe_report(result: dict, output_dir: str) -> tuple[str, str]:
    """Write `rm_probe.json` (the result) and `rm_probe.png` (bar chart of win rates, 10% line) to `output_dir`.

    Returns the two paths. Raises `OSError` if they cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    os.makedirs(output_dir, exist_ok=True)
    path_json, path_png = os.path.join(output_dir, PROBE_FILE), os.path.join(output_dir, "rm_probe.png")
    with open(path_json, "w") as f:
        json.dump(result, f, indent=2)
    names = list(result["variants"])
    rates = [result["variants"][v]["win_rate"] for v in names]
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(names, [100 * (r or 0) for r in rates],
                  color=["tab:red" if r is not None and r > WARN_ABOVE else "tab:green" for r in rates])
    ax.bar_label(bars, ["n/a" if r is None else f"{100 * r:.0f}%" for r in rates])
    ax.axhline(100 * WARN_ABOVE, color="black", linestyle="--", linewidth=1, label="warning threshold")
    ax.set(ylim=(0, 105), ylabel="beats the chosen answer (% of prompts)",
           title=f"Degenerate answers vs the chosen one ({result['n_prompts']} prompts)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path_png)
    return path_json, path_png


def probe_after_training(trainer, tokenizer, eval_rows: list[dict], train_rows: list[dict],
                         max_prompts: int = 200) -> dict | None:
    """End of reward_model.py: probe the trained `trainer.model`, print the table, save it to `output_dir`.

    Uses up to `max_prompts` held-out rows; with none, up to 100 training rows (and says so). Every process scores
    the same answers (ZeRO-3 needs all ranks in each forward pass); only the main one prints and writes.
    Returns the `run_probe` result, or None if `max_prompts` is 0.
    """
    if not max_prompts:
        return None
    main_process = trainer.is_world_process_zero()
    rows = eval_rows
    if not eval_rows:
        rows, max_prompts = train_rows, min(max_prompts, 100)
        if main_process:
            info_rank0(f"[reward model] no held-out rows: probing {min(len(rows), max_prompts)} TRAINING prompts "
                  f"(answers the model has seen; the numbers flatter it)")
    score_fn = reward_scorer(trainer.model, tokenizer, batch_size=trainer.args.per_device_eval_batch_size)
    result = run_probe(score_fn, rows, max_prompts=max_prompts, seed=trainer.args.seed)
    if main_process:
        info_rank0(format_probe_table(result))
        save_probe_report(result, trainer.args.output_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m rlhfkit.report.rm_probe RM_DIR DATA.jsonl [--max_prompts N] [--output_dir DIR]`: probe a saved model.

    Reads DATA with `load_preference_file(drop_bad_rows=True)`, loads RM_DIR with `load_reward_model` (full model
    or LoRA adapter), prints the table and writes rm_probe.json / rm_probe.png to `--output_dir` (default RM_DIR).
    Returns 0, warnings or not (the JSON holds the numbers for scripts).
    """
    quiet_libraries()
    parser = ToolParser(prog="python -m rlhfkit.report.rm_probe", description=__doc__.split("\n")[0])
    parser.add_argument("rm_dir", help="reward model directory (full model or LoRA adapter)")
    parser.add_argument("data", help="preference data, JSON Lines (any shape rlhfkit.data accepts)")
    parser.add_argument("--max_prompts", type=int, default=200, help="prompts to probe (a seeded sample if more)")
    parser.add_argument("--output_dir", default=None, help="where rm_probe.json/png go (default: RM_DIR)")
    parser.add_argument("--batch_size", type=int, default=8, help="answers per forward pass")
    parser.add_argument("--max_length", type=int, default=1024, help="tokens per scored text (longer are cut)")
    parser.add_argument("--seed", type=int, default=42, help="picks the sample and the off-topic answers (42: the "
                        "training default, so this repeats reward_model.py's own probe)")
    args = parser.parse_args(argv)
    check_reward_model_path(args.rm_dir, "rm_dir")
    if args.max_prompts < 1:
        raise ConfigError(f"--max_prompts must be >= 1, got {args.max_prompts}")
    check_can_write(args.output_dir or args.rm_dir)

    rows = load_preference_file(args.data, drop_bad_rows=True)
    model, tokenizer = load_reward_model(args.rm_dir)
    score_fn = reward_scorer(model, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    result = run_probe(score_fn, rows, max_prompts=args.max_prompts, seed=args.seed)
    info_rank0(format_probe_table(result))
    info_rank0("wrote {} and {}".format(*save_probe_report(result, args.output_dir or args.rm_dir)))
    return 0


if __name__ == "__main__":
    run_cli(main)
