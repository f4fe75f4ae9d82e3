r"""Rejection sampling (best-of-N): sample N answers per prompt from a policy, score them with a reward model and/or a
reward function (e.g. a verifier with gold answers, `rlhfkit/verifiers.py`), keep the best as SFT data and best vs
worst as preference pairs, so you can iterate SFT or DPO on your model's own outputs.

    python reward_model.py --output_dir output/reward_model                   # step 1: a reward model
    python rejection_sampling.py --policy_name_or_path models/SmolLM2-135M-Instruct \\
        --reward_model_path output/reward_model --prompts_path data_example/data.jsonl --num_samples 4
    python train_rlhf.py --rlhf_type DPO --train_data_path output/rejection_sampling/pairs.jsonl
    python rejection_sampling.py --reward_model_path none --reward_function rlhfkit.verifiers:exact_number \
        --prompts_path arithmetic_train.jsonl          # scored by a verifier: each row's `answer` column is the gold

Method: best-of-N sampling scored by a reward model (Nakano et al. 2021, WebGPT), kept as fine-tuning data
(rejection-sampling fine-tuning, Touvron et al. 2023, Llama 2, sec. 3.2.3); the highest- vs lowest-scored answer
of each prompt as a preference pair (Yuan et al. 2024, Self-Rewarding Language Models).

Writes to `output_dir` (an existing non-empty folder is never overwritten):
    best_of_n.jsonl   {"messages": prompt + [best answer]}                        SFT data
    pairs.jsonl       {"prompt": [...], "chosen": [best], "rejected": [worst]}    train_rlhf.py / reward_model.py data
    samples.jsonl     every sampled answer with its score and whether it ended    for inspection
    summary.json      settings, counts, score statistics, timings;   score_distribution.png   a histogram
`--pairs best_worst` (default) gives one pair per prompt; `--pairs all` every (higher, lower) pair of different
texts, at most `max_pairs_per_prompt` per prompt (largest score gaps first, ties in a seeded random order): from 8
answers of which 2 are right, a verifier gives 12 pairs. A prompt gives no pair when its answers are the same text
(train_rlhf.py refuses identical pairs) or their score gap is below `min_score_gap`. Answers that did not end (no
end-of-turn token within `max_new_tokens`) are left out of the SFT rows and the pairs unless `--keep_unfinished`:
a right answer cut mid-sentence taught DPO to keep talking (docs/results.md). Empty answers are not kept (the data
loaders refuse them).
"""

from rlhfkit.log import info_rank0, quiet_libraries

quiet_libraries()  # before PEFT, TRL and DeepSpeed load: they print known-harmless messages while loading

import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from itertools import permutations
from types import SimpleNamespace
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from transformers import set_seed

from common_args import DEMO_MODEL, check_reward_sources, check_sampling_ranges
from rlhfkit.args import parse_args
from rlhfkit.data.prompts import load_prompt_file
from rlhfkit.errors import ConfigError, run_cli
from rlhfkit.generation import generate_answers
from rlhfkit.model import load_policy, load_tokenizer
from rlhfkit.model_folders import check_model_path, resolve_checkpoint
from rlhfkit.outputs import prepare_output_dir
from rlhfkit.report.preflight import preflight
from rlhfkit.reward import (
    call_reward_function,
    check_gold_columns,
    check_reward_model_path,
    load_reward_function,
    load_reward_model,
    reward_scorer,
)


@dataclass
class RejectionSamplingArgs:
    policy_name_or_path: str = field(
        default=DEMO_MODEL, metadata={"help": "the model that writes answers: a checkpoint dir or a LoRA adapter dir"})
    reward_model_path: str | None = field(
        default="output/reward_model", metadata={"help": 'a reward model saved by reward_model.py (full or LoRA); '
                                                         '"none": the reward function only'})
    reward_function: str | None = field(
        default=None, metadata={"help": '"file.py:name" / "module:name" (TRL signature; the rows\' other columns as '
                                        'keyword arguments), added to the RM score'})
    reward_ensemble: Literal["mean", "min", "mean_minus_std"] = field(
        default="mean", metadata={"help": 'several --reward_model_path folders (rm_a,rm_b): their scores\' mean, '
                                          'min or mean minus std'})
    prompts_path: str = field(
        default="data_example/data.jsonl", metadata={"help": "'prompt' / 'messages' / hh-rlhf rows; their answers are "
                                                             "ignored"})
    output_dir: str = field(
        default="output/rejection_sampling", metadata={"help": "where the SFT file, the pairs and the summary go"})
    num_samples: int = field(
        default=4, metadata={"help": "N answers per prompt (best-of-N); more gives better best answers but costs N x "
                                     "time"})
    max_prompts: int | None = field(
        default=None, metadata={"help": "use only the first N prompts of the file (None: all)"})
    max_new_tokens: int = field(
        default=128, metadata={"help": "longest answer, in tokens; longer answers are cut (counted in the summary)"})
    temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature (Llama 2: the best value shifts with the model; try "
                                       "0.7-1.2)"})
    top_p: float = field(
        default=1.0, metadata={"help": "nucleus sampling: keep the smallest token set with this much probability (1.0: "
                                       "off)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call (each gives num_samples answers)"})
    min_score_gap: float = field(
        default=0.0, metadata={"help": "write a pair only if best - worst score >= this (1 with a 0/1 verifier)"})
    pairs: Literal["best_worst", "all"] = field(
        default="best_worst", metadata={"help": "best_worst: one pair per prompt; all: every (higher, lower) pair "
                                                "of different texts, up to max_pairs_per_prompt"})
    max_pairs_per_prompt: int = field(
        default=16, metadata={"help": "--pairs all: at most this many pairs per prompt (largest score gaps first)"})
    keep_unfinished: bool = field(
        default=False, metadata={"help": "False: answers cut at max_new_tokens make no SFT row and no pair; True: "
                                         "keep them"})
    drop_bad_rows: bool = field(
        default=False, metadata={"help": "False: stop on bad rows in prompts_path; True: skip them and count them"})
    prompt_turns: Literal["last", "all"] = field(
        default="last", metadata={"help": "chats as prompts: the last user turn, or each one"})
    check: bool = field(
        default=False, metadata={"help": "preflight: tokenizer and prompts only, print them, exit 0 (no weights, no "
                                         "output)"})
    seed: int = field(default=42, metadata={"help": "sampling seed"})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow custom model code from the checkpoint dirs"})
    def __post_init__(self):
        check_reward_sources(self, "rejection sampling needs a score:")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0 (best-of-N samples its answers), got {self.temperature}")
        if self.num_samples < 2:
            raise ConfigError(f"--num_samples must be >= 2 to pick a best and a worst answer, got {self.num_samples}")
        check_sampling_ranges(self, ("max_prompts", "max_new_tokens", "batch_size"))
        if self.max_pairs_per_prompt < 1:
            raise ConfigError(f"--max_pairs_per_prompt must be >= 1, got {self.max_pairs_per_prompt}")


def sample_answers(model, tokenizer, prompts: list[list[dict]], args) -> tuple[list[list[dict]], int]:
    """Sample `args.num_samples` answers for each prompt (lists of messages, rendered with the chat template).

    Returns `(answers, cut)`: `answers[i]` holds the N results of prompt i (`rlhfkit.generation.generate_answers`:
    `answer` decoded without special tokens, `token_ids`, ...), `cut` the number of answers that reached
    `max_new_tokens` without an end-of-turn token.
    """
    n = args.num_samples
    results = generate_answers(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size,
                               seed=args.seed, num_return_sequences=n, progress="sampling")
    return [results[i:i + n] for i in range(0, len(results), n)], sum(not r["ended"] for r in results)


def score_all(args, rows: list[dict], flat: list[tuple[int, dict]], function=None, chunk: int = 256) -> list[float]:
    """The score of each `(prompt index, result)` in `flat`: the reward model's and/or the reward `function`'s (which
    gets the prompt rows' other columns, e.g. a gold `answer`), summed as in PPO; `chunk` answers at a time under a
    progress bar.
    """
    score_fn = None
    if args.reward_model_path:
        reward, reward_tokenizer = load_reward_model(args.reward_model_path, ensemble=args.reward_ensemble)
        score_fn = reward_scorer(reward, reward_tokenizer, batch_size=max(args.batch_size, 8))
    scores = []
    for start in tqdm(range(0, len(flat), chunk), desc="scoring", unit="chunk"):
        part = flat[start:start + chunk]
        prompts, texts = [rows[i]["prompt"] for i, _ in part], [r["answer"] for _, r in part]
        values = [0.0] * len(part)
        if score_fn is not None:
            values = [a + b for a, b in zip(values, score_fn(prompts, texts))]
        if function is not None:
            values = [a + b for a, b in zip(values, call_reward_function(
                function, prompts, texts, [r["token_ids"] for _, r in part], [rows[i] for i, _ in part]))]
        scores += values
    return scores


def best_and_worst(answers: list[str], scores: list[float]) -> tuple[int, int]:
    """Indices of the highest- and lowest-scored answers; the worst is taken among answers whose text differs from
    the best one's, if any (else best == worst text: no pair). Ties keep the earlier sample.
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    others = [i for i in range(len(answers)) if answers[i] != answers[best]] or [best]
    worst = min(others, key=lambda i: (scores[i], i))
    return best, worst


def pairs_of(texts: list[str], scores: list[float], args, rng: random.Random) -> tuple[list[tuple[int, int]], str]:
    """One prompt's pairs as `(chosen index, rejected index)`, and why there are none ("identical" texts, a
    "small_gap"; "" when there are pairs). `best_worst`: the best and worst answer (`best_and_worst`); `all`: every
    pair of different texts whose scores differ by > 0 and >= `min_score_gap`, each text pair once, largest gaps
    first (ties shuffled by `rng`), at most `max_pairs_per_prompt`.
    """
    if args.pairs == "best_worst":
        b, w = best_and_worst(texts, scores)
        if texts[b].strip() == texts[w].strip():
            return [], "identical"
        return ([(b, w)], "") if scores[b] - scores[w] >= args.min_score_gap else ([], "small_gap")
    found = {}
    for i, j in permutations(range(len(texts)), 2):
        gap = scores[i] - scores[j]
        if gap > 0 and gap >= args.min_score_gap and texts[i].strip() != texts[j].strip():
            found.setdefault((texts[i].strip(), texts[j].strip()), (i, j))
    if not found:
        return [], "identical" if len({t.strip() for t in texts}) == 1 else "small_gap"
    pairs = list(found.values())
    rng.shuffle(pairs)
    pairs.sort(key=lambda p: scores[p[0]] - scores[p[1]], reverse=True)  # stable: ties keep the shuffled order
    return pairs[:args.max_pairs_per_prompt], ""


def score_statistics(values: list[float]) -> dict:
    """mean, standard deviation, min and max of a list of scores."""
    if not values:
        return {}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}


def plot_scores(groups: dict[str, list[float]], path: str) -> None:
    """Histogram of the scores of all answers, the best and the worst answer of each prompt."""
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, values in groups.items():
        if values:
            ax.hist(values, bins=20, alpha=0.5, label=f"{name} (mean {statistics.fmean(values):.2f})")
    ax.set_xlabel("score")
    ax.set_ylabel("answers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv=None):
    (args,) = parse_args((RejectionSamplingArgs,), argv)
    prepare_output_dir(SimpleNamespace(output_dir=args.output_dir, resume_from_checkpoint=None))
    if args.policy_name_or_path == DEMO_MODEL:
        check_model_path(args.policy_name_or_path)  # says how to make the demo model
    resolve_checkpoint(args.policy_name_or_path)  # a full model or a LoRA adapter whose base exists
    if args.reward_model_path:
        check_reward_model_path(args.reward_model_path)
    function = load_reward_function(args.reward_function) if args.reward_function else None  # a bad spec stops here
    set_seed(args.seed)

    # 1. Prompts: every row is checked before any model is loaded.
    rows = load_prompt_file(args.prompts_path, args.drop_bad_rows, prompt_turns=args.prompt_turns)[:args.max_prompts]
    if function is not None:
        check_gold_columns(function, rows, args.reward_function)
    prompts = [row["prompt"] for row in rows]
    if args.check:  # --check: show the prompts as the policy will read them, load no weights
        tokenizer = load_tokenizer(args.policy_name_or_path, args.trust_remote_code)
        return preflight(tokenizer, rows, [], args.policy_name_or_path, "rejection sampling")

    # 2. Sample N answers per prompt from the policy.
    started = time.time()
    policy, tokenizer = load_policy(args.policy_name_or_path, trust_remote_code=args.trust_remote_code)
    answers, cut = sample_answers(policy, tokenizer, prompts, args)
    del policy
    sampled = time.time()

    # 3. Score every (prompt, answer) with the reward model and/or function; empty answers are not kept.
    flat = [(i, r) for i, group in enumerate(answers) for r in group if r["answer"]]
    flat_scores = score_all(args, rows, flat, function)
    scored = [[] for _ in prompts]
    for (i, result), score in zip(flat, flat_scores):
        scored[i].append((result["answer"], score, result["ended"]))
    empty = len(prompts) * args.num_samples - len(flat)
    scoring_done = time.time()

    # 4. Best-of-N as SFT data; preference pairs (best vs worst, or all); unfinished answers left out of both.
    sft, pairs, samples, best_scores, worst_scores, gaps = [], [], [], [], [], []
    skipped, no_answer, rng = {"identical": 0, "small_gap": 0}, 0, random.Random(args.seed)
    for prompt, group in zip(prompts, scored):
        samples.append({"prompt": prompt, "answers": [{"text": a, "score": s, "ended": e} for a, s, e in group]})
        group = [g for g in group if args.keep_unfinished or g[2]]
        if not group:
            no_answer += 1
            continue
        texts, scores = [a for a, _, _ in group], [s for _, s, _ in group]
        b, w = best_and_worst(texts, scores)
        best_scores.append(scores[b])
        sft.append({"messages": prompt + [{"role": "assistant", "content": texts[b]}]})
        if texts[b].strip() != texts[w].strip():
            worst_scores.append(scores[w])
            gaps.append(scores[b] - scores[w])
        chosen_rejected, why = pairs_of(texts, scores, args, rng)
        if why:
            skipped[why] += 1
        pairs += [{"prompt": prompt, "chosen": [{"role": "assistant", "content": texts[c]}],
                   "rejected": [{"role": "assistant", "content": texts[r]}]} for c, r in chosen_rejected]
    unfinished_left_out = 0 if args.keep_unfinished else sum(not e for group in scored for _, _, e in group)

    os.makedirs(args.output_dir, exist_ok=True)
    write_jsonl(os.path.join(args.output_dir, "best_of_n.jsonl"), sft)
    write_jsonl(os.path.join(args.output_dir, "pairs.jsonl"), pairs)
    write_jsonl(os.path.join(args.output_dir, "samples.jsonl"), samples)
    summary = {
        "settings": asdict(args),
        "counts": {"prompts": len(prompts), "answers_sampled": len(prompts) * args.num_samples,
                   "empty_answers_dropped": empty, "answers_cut_at_max_new_tokens": cut,
                   "unfinished_answers_left_out": unfinished_left_out, "prompts_without_any_answer": no_answer,
                   "sft_rows": len(sft), "pairs": len(pairs), "prompts_without_pair_identical_texts":
                   skipped["identical"], "prompts_without_pair_small_gap": skipped["small_gap"]},
        "scores": {"all_answers": score_statistics(list(flat_scores)), "best_per_prompt": score_statistics(best_scores),
                   "worst_per_prompt": score_statistics(worst_scores), "best_minus_worst": score_statistics(gaps)},
        "seconds": {"sampling": round(sampled - started, 1), "scoring": round(scoring_done - sampled, 1)},
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_scores({"all answers": list(flat_scores), "best": best_scores, "worst": worst_scores},
                os.path.join(args.output_dir, "score_distribution.png"))

    s = summary["scores"]
    info_rank0(f"[rejection sampling] {len(prompts)} prompts x {args.num_samples} answers: sampling "
          f"{summary['seconds']['sampling']} s, scoring {summary['seconds']['scoring']} s; {empty} empty answers "
          f"dropped, {cut} cut at max_new_tokens={args.max_new_tokens}"
          + ("" if args.keep_unfinished else " (left out of the SFT rows and pairs: --keep_unfinished true keeps them)"
             + (f"; {no_answer} prompts had no finished answer" if no_answer else "")))
    if best_scores:
        info_rank0(f"[rejection sampling] scores: all answers mean {s['all_answers']['mean']:.3f} "
              f"(std {s['all_answers']['std']:.3f}); best per prompt mean {s['best_per_prompt']['mean']:.3f}; "
              + (f"worst per prompt mean {s['worst_per_prompt']['mean']:.3f}; mean gap "
                 f"{s['best_minus_worst']['mean']:.3f}" if gaps else "no prompt had two different answers"))
    info_rank0(f"[rejection sampling] wrote {len(sft)} SFT rows (best_of_n.jsonl) and {len(pairs)} pairs (pairs.jsonl, "
               f"--pairs {args.pairs}; prompts without a pair: {skipped['identical']} with identical answers, "
               f"{skipped['small_gap']} below min_score_gap) to {args.output_dir}")
    return summary


if __name__ == "__main__":
    run_cli(main)
