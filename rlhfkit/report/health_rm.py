"""Run health of a reward model's run (reward_model.py): held-out accuracy near chance, degenerate answers the probe
found preferred (rm_probe.json), and the accuracy table of rm_accuracy.json in report.html. Their vocabulary:
`health_base.py`.
"""

from __future__ import annotations

from rlhfkit.report.health_base import Finding, Health, RunInfo, series, trend
from rlhfkit.report.html_report import escape, table
from rlhfkit.report.probe_table import DESCRIPTIONS, WARN_ABOVE
from rlhfkit.report.rm_accuracy import accuracy_rows


def rule_rm_accuracy_near_chance(history, run, t) -> Finding | None:
    """Reward model: held-out accuracy within `rm_accuracy_band` of 0.5."""
    if run.method != "reward model":
        return None
    evals = [v for _, v in series(history, "eval_accuracy")]
    accuracy, where = (evals[-1], "held-out") if evals else (None, "")
    if run.rm_accuracy:
        accuracy, where = run.rm_accuracy["accuracy"], f"held-out ({run.rm_accuracy['n']} pairs)"
    if accuracy is None:
        ends_ = trend(history, "accuracy", t)
        accuracy, where = (ends_[1], "training (last logs)") if ends_ else (None, "")
    if accuracy is None or abs(accuracy - 0.5) > t.rm_accuracy_band:
        return None
    return Finding("reward-model accuracy near chance",
                   f"{where} accuracy is {accuracy:.3f}, within {t.rm_accuracy_band} of a coin flip (0.5).",
                   "check the padding (the score is read at the last non-pad token: the model config needs the "
                   "tokenizer's pad_token_id) and that the chat template renders prompt + answer as the data "
                   "expects; then train longer or raise --learning_rate.")


def rule_probe_degenerate(history, run, t) -> Finding | None:
    """Reward model: a degenerate answer beats the chosen one on more than 10% of the probe's prompts."""
    if not run.probe:
        return None
    bad = [(v, s["win_rate"]) for v, s in run.probe.get("variants", {}).items()
           if s.get("win_rate") is not None and s["win_rate"] > WARN_ABOVE]
    if not bad:
        return None
    listed = ", ".join(f"{DESCRIPTIONS.get(v, v)} {100 * r:.0f}%" for v, r in bad)
    return Finding("reward model prefers degenerate answers",
                   f"share of {run.probe.get('n_prompts')} probe prompts where a degenerate answer scores above the "
                   f"chosen one: {listed} (should be about 0%).",
                   "PPO/RLOO/GRPO will learn these; retrain with --degenerate_negatives_ratio 0.5 or give the kind "
                   "more weight with --degenerate_variant_weights.")


def accuracy_section(output_dir: str, run: RunInfo) -> list[str]:
    """report.html's reward-model accuracy table (rm_accuracy.json), if the run has one."""
    if not run.rm_accuracy:
        return []
    return ["<h2>Reward-model accuracy</h2>", table(["measure", "value", "n (pairs or answers)"],
                                                    accuracy_rows(run.rm_accuracy), numeric={1, 2}),
            f"<p>{escape(run.rm_accuracy.get('reading', ''))}</p>"]


RULES = (rule_rm_accuracy_near_chance, rule_probe_degenerate)
HEALTH = Health(RULES, (accuracy_section,))
