r"""Evaluation: did training help? Answers from several models on the same prompts, scored by one judge.

    python evaluate.py --models base=models/SmolLM2-135M-Instruct dpo=output/dpo_demo \\
        --reward_model_path output/reward_model --eval_data_path data_example/data.jsonl --max_prompts 50 \\
        --output_dir output/eval_dpo_demo
    python evaluate.py --reward_model_path output/reward_model --eval_data_path pairs.jsonl   # reward-model accuracy

Models are full checkpoints or LoRA adapter folders (loaded on the base they record); prompts come from any file
the online methods read (prompt-only, preference, chat, raw hh-rlhf). Each model answers every prompt (greedy
unless `--temperature` > 0); the judge is the reward model from reward_model.py and/or a Python reward function
(`--reward_function file.py:name`; with both, the score is their sum, as in PPO). The first model is the baseline
unless `--baseline NAME`. Config: `eval_args/eval_config.py`.

Per model: mean score, mean length (tokens), EOS rate (share of answers that ended before `max_new_tokens`), share
of empty answers, distinct-2 (repetition). A reward function receives each row's other columns (e.g. a gold
`answer`) as keyword arguments; when all its scores lie in [0, 1] it is a verifier (`rlhfkit/verifiers.py`) and each
model's accuracy (share of answers scored 1) is reported with its Wilson 95% interval and, against the baseline, the
exact McNemar p-value on the same prompts. Per model vs the baseline: win rate (ties 0.5) with a 95% bootstrap
interval over prompts, and the length-controlled win rate (the win rate at equal answer lengths, after AlpacaEval
2.0; `rlhfkit/report/arena.py`). With a preference file and a reward model, the reward model's own accuracy on the
pairs is reported too, split by answer length (`rlhfkit/report/rm_accuracy.py`); without `--models` that is all it
does.

Writes to `output_dir` (never overwritten): generations.jsonl (prompt, model, answer, score, length, ended),
summary.json, arena.png (win rates with intervals; lengths) and report.html (one self-contained page: the
summary table, the plot and the answers side by side per prompt).
"""

from __future__ import annotations

from rlhfkit.log import info_rank0, quiet_libraries

quiet_libraries()  # before PEFT, TRL and DeepSpeed load: they print known-harmless messages while loading

import json
import os
import statistics
from types import SimpleNamespace

from eval_args.eval_config import EvalArgs
from rlhfkit.args import parse_args
from rlhfkit.data.loader import read_file
from rlhfkit.data.offline import count_too_long, load_preference_file
from rlhfkit.data.prompts import load_prompt_file
from rlhfkit.data.shapes import detect_preference_format
from rlhfkit.errors import ConfigError, run_cli
from rlhfkit.generation import generate_answers
from rlhfkit.model import load_policy
from rlhfkit.model_folders import check_policy_path
from rlhfkit.outputs import prepare_output_dir
from rlhfkit.report.arena import accuracy_interval, compare_to_baseline, distinct_n, paired_accuracy_test
from rlhfkit.report.html_report import escape, image, table, write_page
from rlhfkit.report.rm_accuracy import accuracy_rows, format_accuracy, preference_accuracy
from rlhfkit.reward import (
    call_reward_function,
    check_gold_columns,
    check_reward_model_path,
    load_reward_function,
    load_reward_model,
    reward_scorer,
)


def main(argv=None) -> dict:
    (args,) = parse_args((EvalArgs,), argv)

    # 1. Check everything checkable before any weights load: models, judge, output folder, data.
    models = parse_models(args.models)
    baseline = pick_baseline(models, args.baseline)
    if args.reward_model_path:
        check_reward_model_path(args.reward_model_path)
    reward_function = load_reward_function(args.reward_function) if args.reward_function else None
    prepare_output_dir(SimpleNamespace(output_dir=args.output_dir, resume_from_checkpoint=None))
    rows, pairs = load_eval_data(args, accuracy_only=not models)
    if reward_function is not None:
        check_gold_columns(reward_function, rows, args.reward_function)
    prompts = [row["prompt"] for row in rows]

    # 2. Answers: one model at a time, each answering every prompt.
    answers = {}
    for name, path in models.items():
        policy, tokenizer = load_policy(path, trust_remote_code=args.trust_remote_code)
        answers[name] = generate_answers(policy, tokenizer, prompts, args.max_new_tokens, args.temperature,
                                         args.top_p, args.batch_size, args.max_prompt_length, args.seed)
        info_rank0(f"[eval] {name}: {len(prompts)} answers from {path}")
        del policy

    # 3. Judge: score every answer; the reward model's own accuracy on the pairs when the file has them.
    judge = load_judge(args, reward_function)
    for name in models:
        score_answers(judge, rows, answers[name])
    summary = {"settings": vars(args), "baseline": baseline, "n_prompts": len(prompts)}
    if pairs and judge.get("reward_model"):
        summary["reward_model_accuracy"] = preference_accuracy(judge["reward_model"], judge["rm_tokenizer"], pairs,
                                                               args.max_length)
        info_rank0(format_accuracy(summary["reward_model_accuracy"], what=f"pairs of {args.eval_data_path}"))
    summary["judge_cut"] = count_judge_cut(judge, prompts, answers, args.max_length)

    # 4. Numbers per model and against the baseline; files.
    summary["models"] = {name: model_metrics(answers[name], path) for name, path in models.items()}
    summary["vs_baseline"] = {name: compare_to_baseline([a["score"] for a in answers[name]],
                                                        [a["score"] for a in answers[baseline]],
                                                        [a["length"] for a in answers[name]],
                                                        [a["length"] for a in answers[baseline]], seed=args.seed)
                              for name in models if name != baseline}
    summary["accuracy"] = verifier_accuracy(answers, baseline)
    summary["length_warnings"] = length_warnings(summary)
    write_outputs(args.output_dir, prompts, answers, summary)
    print_summary(summary, args.output_dir)
    return summary


# ----------------------------------------------------------------------------------------------------------
# Step 1: checks


def parse_models(specs: list[str]) -> dict[str, str]:
    """`["base=DIR", "dpo=DIR"]` -> `{"base": "DIR", "dpo": "DIR"}` (order kept), each folder checked.

    Raises `ConfigError` (not NAME=DIR, a repeated name, a reward model) or `PathNotFoundError` (no such folder,
    or an adapter whose base is missing).
    """
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--models {spec!r}: expected NAME=DIR, e.g. base=models/SmolLM2-135M-Instruct")
        if name in models:
            raise ConfigError(f"--models: the name {name!r} is given twice; names label the models in the report")
        check_policy_path(path, f"--models {name}")
        same = next((other for other, p in models.items() if os.path.realpath(p) == os.path.realpath(path)), None)
        if same is not None:
            raise ConfigError(f"--models: {same} and {name} are the same folder {path}; a model compared with itself "
                              f"wins half the time (give another folder)")
        models[name] = path
    return models


def pick_baseline(models: dict[str, str], baseline: str | None) -> str | None:
    """The baseline's name: `baseline` if given (it must be one of the models), else the first model."""
    if baseline is not None and baseline not in models:
        raise ConfigError(f"--baseline {baseline!r} is not one of --models ({', '.join(models) or 'none given'})")
    return baseline or next(iter(models), None)


def load_eval_data(args, accuracy_only: bool) -> tuple[list[dict], list[dict] | None]:
    """Prompt rows `{"prompt", **columns}` (first `max_prompts`) and, if the file holds preference pairs, the pairs
    (first `max_prompts`).

    `accuracy_only` (no `--models`): the file must be preference pairs (`DataFormatError` otherwise) and no prompts
    are returned. Raises `DataFormatError` / `PathNotFoundError` as `rlhfkit.data`'s loaders do.
    """
    if accuracy_only:
        if not args.reward_model_path:
            raise ConfigError("without --models, evaluate.py measures the reward model's accuracy on preference "
                              "pairs: give --reward_model_path (or --models NAME=DIR ... to compare models)")
        return [], load_preference_file(args.eval_data_path, args.drop_bad_rows)[:args.max_prompts]
    prompts = load_prompt_file(args.eval_data_path, args.drop_bad_rows)[:args.max_prompts]
    rows = read_file(args.eval_data_path).rows
    pairs = None
    if rows and detect_preference_format(rows[0][1]) != "unknown":
        pairs = load_preference_file(args.eval_data_path, args.drop_bad_rows, log=lambda *_: None)[:args.max_prompts]
    return prompts, pairs


# ----------------------------------------------------------------------------------------------------------
# Step 3: the judge


def load_judge(args, reward_function) -> dict:
    """`{"reward_model": score_fn, "rm_tokenizer": ..., "<function name>": (fn, ...)}`: the loaded judges.

    The reward model scores `(prompts, answers)` with its own chat template, texts cut at `args.max_length` tokens
    (`rlhfkit.reward.reward_scorer`); the function is called with TRL's signature.
    """
    judge = {}
    if args.reward_model_path:
        model, tokenizer = load_reward_model(args.reward_model_path, ensemble=args.reward_ensemble)
        judge["reward_model"] = reward_scorer(model, tokenizer, batch_size=args.batch_size,
                                              max_length=args.max_length or 10 ** 6)
        judge["rm_tokenizer"] = tokenizer
    if reward_function is not None:
        judge["function"] = reward_function
    return judge


def score_answers(judge: dict, rows: list[dict], results: list[dict]) -> None:
    """Add `scores` (per judge) and `score` (their sum) to each generation result, in place. The reward function
    gets each row's columns besides `prompt` as keyword arguments (`rlhfkit.reward.call_reward_function`).
    """
    prompts, texts = [row["prompt"] for row in rows], [r["answer"] for r in results]
    per_judge = {}
    if "reward_model" in judge:
        per_judge["reward_model"] = [float(s) for s in judge["reward_model"](prompts, texts)]
    if "function" in judge:
        function = judge["function"]
        per_judge[getattr(function, "__name__", "reward_function")] = call_reward_function(
            function, prompts, texts, [r["token_ids"] for r in results], rows)
    for i, result in enumerate(results):
        result["scores"] = {name: values[i] for name, values in per_judge.items()}
        result["score"] = sum(result["scores"].values())


def count_judge_cut(judge: dict, prompts: list, answers: dict[str, list[dict]], max_length: int | None) -> int:
    """How many (prompt, answer) texts are longer than `max_length` reward-model tokens (scored cut at the end)."""
    if "rm_tokenizer" not in judge or not max_length:
        return 0
    rows = [{"prompt": p, "answer": [{"role": "assistant", "content": r["answer"]}]}
            for results in answers.values() for p, r in zip(prompts, results)]
    return count_too_long(judge["rm_tokenizer"], rows, max_length, answers=("answer",))


# ----------------------------------------------------------------------------------------------------------
# Step 4: numbers and files


def model_metrics(results: list[dict], path: str) -> dict:
    """Mean score (and per judge), mean length in tokens, EOS rate, share of empty answers, mean distinct-2."""
    mean = lambda values: statistics.fmean(values) if values else None  # noqa: E731
    judges = results[0]["scores"] if results else {}
    distinct = [d for d in (distinct_n(r["answer"], 2) for r in results) if d is not None]
    return {"path": path, "n": len(results), "mean_score": mean([r["score"] for r in results]),
            "mean_score_by_judge": {j: mean([r["scores"][j] for r in results]) for j in judges},
            "mean_length": mean([r["length"] for r in results]), "eos_rate": mean([r["ended"] for r in results]),
            "empty_share": mean([not r["answer"] for r in results]), "distinct_2": mean(distinct)}


def write_outputs(output_dir: str, prompts: list, answers: dict[str, list[dict]], summary: dict) -> None:
    """summary.json and report.html in `output_dir`, and with answers generations.jsonl and arena.png."""
    os.makedirs(output_dir, exist_ok=True)
    if answers:
        with open(os.path.join(output_dir, "generations.jsonl"), "w", encoding="utf-8") as f:
            for name, results in answers.items():
                for i, (prompt, r) in enumerate(zip(prompts, results)):
                    f.write(json.dumps({"prompt_index": i, "prompt": prompt, "model": name, "answer": r["answer"],
                                        "score": r["score"], "scores": r["scores"], "length": r["length"],
                                        "ended": r["ended"]}, ensure_ascii=False) + "\n")
        plot_arena(summary, os.path.join(output_dir, "arena.png"))
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    write_report(output_dir, prompts, answers, summary)


def plot_arena(summary: dict, path: str) -> None:
    """Left: each model's win rate vs the baseline with its 95% interval, and the length-controlled win rate.
    Right: each model's mean answer length (tokens), with its EOS rate written on the bar.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 0.6 * max(len(summary["models"]), 3) + 1.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    names = list(summary["vs_baseline"])
    for y, name in enumerate(names):
        c = summary["vs_baseline"][name]
        low, high = c["win_rate_ci"]
        left.errorbar(c["win_rate"], y, xerr=[[c["win_rate"] - low], [high - c["win_rate"]]], fmt="o", capsize=4,
                      color="tab:blue", label="win rate (95% CI)" if y == 0 else None)
        left.plot(c["lc_win_rate"], y, "D", color="tab:orange", label="length-controlled" if y == 0 else None)
    left.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(xlim=(0, 1), yticks=range(len(names)), yticklabels=names, xlabel="share of prompts won (ties 0.5)",
             title=f"vs baseline {summary['baseline']}")
    if names:
        left.legend(fontsize=8, loc="lower right")
    metrics = summary["models"]
    bars = right.barh(list(metrics), [m["mean_length"] or 0 for m in metrics.values()], color="tab:green")
    right.bar_label(bars, [f"EOS {100 * (m['eos_rate'] or 0):.0f}%" for m in metrics.values()], fontsize=8)
    right.set(xlabel="mean answer length (tokens)", title="answer length")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def verifier_accuracy(answers: dict[str, list[dict]], baseline: str | None) -> dict:
    """Per model, the accuracy under the reward function when it is a verifier (every score in [0, 1], no NaN):
    the share of answers scored 1 with its Wilson 95% interval, and against the baseline the exact McNemar test on
    the same prompts. Returns `{}` when there is no such function, else `{name: {"function", "n", "correct",
    "accuracy", "accuracy_ci", "vs_baseline": {...} | None}}` (`rlhfkit.report.arena`).
    """
    first = next(iter(answers.values()), [])
    names = [j for j in (first[0]["scores"] if first else {}) if j != "reward_model"]
    if not names or not all(0 <= r["scores"][names[0]] <= 1 for results in answers.values() for r in results):
        return {}
    correct = {model: [r["scores"][names[0]] == 1 for r in results] for model, results in answers.items()}
    return {model: {"function": names[0], **accuracy_interval(c),
                    "vs_baseline": paired_accuracy_test(c, correct[baseline]) if model != baseline else None}
            for model, c in correct.items()}


LENGTH_BAND = (0.7, 1.5)  # a model whose mean answer length leaves this band x the baseline's gets a warning


def length_warnings(summary: dict) -> list[str]:
    """One line per model whose mean answer length is outside `LENGTH_BAND` x the baseline's: its raw win rate then
    mostly measures length, and the length-controlled win rate is the one to read.
    """
    models, baseline = summary["models"], summary["baseline"]
    base = models[baseline]["mean_length"] if baseline else None
    warnings = []
    for name, m in models.items():
        if name == baseline or not base or m["mean_length"] is None:
            continue
        ratio = m["mean_length"] / base
        if not LENGTH_BAND[0] <= ratio <= LENGTH_BAND[1]:
            warnings.append(f"{name}'s mean answer length {m['mean_length']:.1f} tokens is {ratio:.2f}x the baseline's "
                            f"{base:.1f} (outside {LENGTH_BAND[0]:g}x-{LENGTH_BAND[1]:g}x): its raw win rate mostly "
                            f"measures length; read the length-controlled win rate")
    return warnings


def summary_rows(summary: dict) -> list[list]:
    """One row per model for the summary table (report.html and the printout)."""
    rows = []
    for name, m in summary["models"].items():
        c = summary["vs_baseline"].get(name)
        versus = (f"{c['win_rate']:.3f} [{c['win_rate_ci'][0]:.3f}, {c['win_rate_ci'][1]:.3f}]" if c
                  else "baseline")
        lc = f"{c['lc_win_rate']:.3f}" + (" (length separates)" if c["lc_separated"] else "") if c else ""
        length = "" if m["mean_length"] is None else f"{m['mean_length']:.1f}"
        rows.append([name, m["mean_score"], versus, lc, length, m["eos_rate"], m["empty_share"], m["distinct_2"]])
    return rows


def accuracy_table(summary: dict) -> list[list[str]]:
    """One row per model for the verifier accuracy table: accuracy [Wilson 95% CI], right / n, change vs the
    baseline, exact McNemar p-value.
    """
    rows = []
    for name, a in summary["accuracy"].items():
        versus = a["vs_baseline"]
        rows.append([name, f"{a['accuracy']:.3f} [{a['accuracy_ci'][0]:.3f}, {a['accuracy_ci'][1]:.3f}]",
                     f"{a['correct']} / {a['n']}", f"{versus['difference']:+.3f}" if versus else "baseline",
                     f"{versus['p_value']:.2g}" if versus else ""])
    return rows


ACCURACY_HEADERS = ["model", "accuracy [95% CI]", "right / prompts", "vs baseline", "p (exact McNemar)"]
SUMMARY_HEADERS = ["model", "mean score", "win rate vs baseline [95% CI]", "length-controlled win rate",
                   "mean length (tokens)", "EOS rate", "empty answers", "distinct-2"]


def write_report(output_dir: str, prompts: list, answers: dict[str, list[dict]], summary: dict) -> str:
    """report.html: how to read it, the summary table, the plot, the reward-model accuracy, the answers per prompt."""
    s = summary["settings"]
    sections = [f'<p class="meta">{summary["n_prompts"]} prompts from {escape(s["eval_data_path"])}; judge: '
                f'{escape(s["reward_model_path"] or "")} {escape(s["reward_function"] or "")}; '
                f'{"greedy" if not s["temperature"] else "temperature " + str(s["temperature"])}, at most '
                f'{s["max_new_tokens"]} new tokens; {summary["judge_cut"]} texts cut at the judge\'s max_length.</p>',
                "<p>Win rate: share of prompts where the model's answer scores above the baseline's (ties count "
                "half), with a 95% bootstrap interval over prompts; an interval that contains 0.5 means no "
                "measurable difference. Length-controlled win rate: the win rate the judge would give if both "
                "answers had the same length; a win rate far above it means the judge mostly rewards length. "
                "EOS rate: share of answers that ended before the token cap. Distinct-2: unique word pairs / word "
                "pairs per answer (1 = no repetition).</p>"]
    if summary["models"]:
        sections += ["<h2>Summary</h2>", table(SUMMARY_HEADERS, summary_rows(summary), numeric={1, 4, 5, 6, 7})]
        sections += [f'<div class="finding">{escape(w)}</div>' for w in summary["length_warnings"]]
        sections.append(image(os.path.join(output_dir, "arena.png"), "win rates and lengths"))
    if summary.get("accuracy"):
        function = next(iter(summary["accuracy"].values()))["function"]
        sections += [f"<h2>Accuracy under the verifier {escape(function)}</h2>",
                     table(ACCURACY_HEADERS, accuracy_table(summary), numeric={2, 3, 4}),
                     "<p>Accuracy: share of answers the verifier scores 1, with a Wilson 95% interval. p: exact "
                     "McNemar test against the baseline on the same prompts (only prompts where exactly one of the "
                     "two is right count).</p>"]
    accuracy = summary.get("reward_model_accuracy")
    if accuracy:
        sections += ["<h2>The judge's own accuracy on the preference pairs</h2>",
                     table(["measure", "value", "n (pairs or answers)"], accuracy_rows(accuracy), numeric={1, 2}),
                     f"<p>{escape(accuracy['reading'])}</p>"]
    if answers:
        sections.append("<h2>Answers side by side</h2>")
    names = list(answers)
    for i, prompt in enumerate(prompts):
        turns = "<br>".join(f"<b>{escape(m['role'])}</b>: {escape(m['content'])}" for m in prompt)
        cells = [f"{escape(answers[n][i]['answer']) or '<i>(empty)</i>'}<div class=\"meta\">score "
                 f"{answers[n][i]['score']:.3f}, {answers[n][i]['length']} tokens"
                 f"{'' if answers[n][i]['ended'] else ', cut at the cap'}</div>" for n in names]
        sections += [f"<h3>Prompt {i + 1}</h3><p>{turns}</p>",
                     table(names, [cells], css_class="answers", raw=set(range(len(names))))]
    return write_page(os.path.join(output_dir, "report.html"), "Evaluation: did training help?", sections)


def print_summary(summary: dict, output_dir: str) -> None:
    """The summary table as text, and where the files are."""
    if summary["models"]:
        widths = [12, 10, 30, 26, 12, 8, 8, 10]
        line = lambda cells: "  ".join(  # noqa: E731
            (f"{c:.3f}" if isinstance(c, float) else str(c)).ljust(w) for c, w in zip(cells, widths))
        info_rank0("[eval] " + line(SUMMARY_HEADERS[:3] + ["LC win rate", "mean length", "EOS rate", "empty",
                                                           "distinct-2"]))
        for row in summary_rows(summary):
            info_rank0("[eval] " + line(row))
        if summary["accuracy"]:
            info_rank0("[eval] " + "  ".join(h.ljust(w) for h, w in zip(ACCURACY_HEADERS, (12, 24, 16, 12, 8))))
            for row in accuracy_table(summary):
                info_rank0("[eval] " + "  ".join(c.ljust(w) for c, w in zip(row, (12, 24, 16, 12, 8))))
        for warning in summary["length_warnings"]:
            info_rank0(f"[eval] WARNING: {warning}")
    files = "generations.jsonl, summary.json, arena.png and report.html" if summary["models"] else \
        "summary.json and report.html"
    info_rank0(f"[eval] wrote {files} to {output_dir}")


if __name__ == "__main__":
    run_cli(main)
