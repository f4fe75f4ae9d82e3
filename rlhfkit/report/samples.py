"""A few prompts with their sampled answers, scores and KL, written during online training (PPO, RLOO, GRPO).

`output_dir/samples.jsonl` gets one line per answer, at the first rollout and every `sample_every` rollouts after:

    {"step": 8, "rollout": 3, "prompt": [messages], "answer": "...", "score": 1.25, "kl": 2.1, "kl_unit": "..."}

`step` is the optimizer step the rollout was sampled at, `score` the total reward of the answer (all reward
sources), `kl` the KL to the reference model (its unit in `kl_unit`; None when the run has no reference).
`samples_section` shows the latest ones in the run's `report.html` (`rlhfkit.report.health_online`).
"""

from __future__ import annotations

import json
import os

from rlhfkit.report.html_report import table

SAMPLES_FILE = "samples.jsonl"


def is_sampled_rollout(rollout: int, every: int) -> bool:
    """True for the rollouts whose answers are written: the first (`rollout` 1) and every `every`-th after it
    (1, 1 + every, 1 + 2 every, ...). `every` 0 writes none.
    """
    return every > 0 and rollout >= 1 and (rollout - 1) % every == 0


def write_samples(output_dir: str, step: int, rollout: int, prompts: list, answers: list[str], scores: list,
                  kls: list | None = None, kl_unit: str | None = None) -> str:
    """Append one line per (prompt, answer) to `output_dir/samples.jsonl`; returns the file's path.

    `prompts` (messages or text), `answers`, `scores` (floats, None where unscored) and `kls` (floats or None) are
    parallel lists of one rollout. Creates `output_dir` if needed. Raises `ValueError` if the lists differ in length.
    """
    kls = [None] * len(answers) if kls is None else list(kls)
    if not len(prompts) == len(answers) == len(scores) == len(kls):
        raise ValueError(f"got {len(prompts)} prompts, {len(answers)} answers, {len(scores)} scores, {len(kls)} KLs")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, SAMPLES_FILE)
    as_float = lambda x: None if x is None else float(x)  # noqa: E731
    with open(path, "a", encoding="utf-8") as f:
        for prompt, answer, score, kl in zip(prompts, answers, scores, kls):
            f.write(json.dumps({"step": step, "rollout": rollout, "prompt": prompt, "answer": answer,
                                "score": as_float(score), "kl": as_float(kl), "kl_unit": kl_unit},
                               ensure_ascii=False) + "\n")
    return path


def read_samples(output_dir: str) -> list[dict]:
    """The lines of `output_dir/samples.jsonl` (an empty list when there is none); unreadable lines are skipped."""
    path = os.path.join(output_dir, SAMPLES_FILE)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def samples_section(output_dir: str, run, n_samples: int = 8) -> list[str]:
    """report.html's table of the latest rollout's sampled answers (at most `n_samples`); empty without samples."""
    samples = read_samples(output_dir)
    if not samples:
        return []
    last = max(s.get("step", 0) for s in samples)
    latest = [s for s in samples if s.get("step", 0) == last][:n_samples]
    prompt_text = lambda p: p[-1]["content"] if isinstance(p, list) and p else p  # noqa: E731
    return [f"<h2>Latest samples (step {last}, {len(samples)} in samples.jsonl)</h2>",
            table(["prompt", "answer", "score", "KL"],
                  [[prompt_text(s["prompt"]), s["answer"], s.get("score"), s.get("kl")] for s in latest],
                  css_class="answers", numeric={2, 3})]
