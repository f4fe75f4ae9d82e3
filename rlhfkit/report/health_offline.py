"""Run-health rules of the methods that train on fixed data: reward model (held-out accuracy, the probe's degenerate
answers), DPO (likelihood displacement, flat margins), SFT (loss rising). Their vocabulary: `health_base.py`.
"""

from __future__ import annotations

from rlhfkit.report.health_base import Finding, series, trend


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


def rule_dpo_likelihood_displacement(history, run, t) -> Finding | None:
    """DPO: the chosen and the rejected log-ratios to the reference both fall below -`dpo_logratio_drop` nats."""
    if run.method != "DPO":
        return None
    beta = run.beta or 0.1
    chosen, rejected = trend(history, "rewards/chosen", t), trend(history, "rewards/rejected", t)
    if not chosen or not rejected:
        return None
    chosen_nats, rejected_nats = chosen[1] / beta, rejected[1] / beta
    if chosen_nats >= -t.dpo_logratio_drop or rejected_nats >= -t.dpo_logratio_drop:
        return None
    return Finding("DPO likelihood displacement",
                   f"the policy lowers the log-probability of both answers: log pi - log ref of the chosen answer "
                   f"{chosen_nats:.1f} nats, of the rejected one {rejected_nats:.1f} nats in the last logs "
                   f"(rewards/chosen and rewards/rejected / beta {beta:g}); the margin grows by pushing both down, "
                   f"and probability goes to answers that are neither (Razin et al. 2024).",
                   "raise --beta, lower --learning_rate, or add an NLL term on the chosen answers "
                   "(--loss_type sigmoid sft --loss_weights 1 0.5, RPO).")


def rule_dpo_margins_flat(history, run, t) -> Finding | None:
    """DPO: the reward margin gains less than `dpo_margin_min_gain` nats from the first to the last logs."""
    if run.method != "DPO":
        return None
    margins = trend(history, "rewards/margins", t)
    if not margins:
        return None
    beta = run.beta or 0.1
    gain = (margins[1] - margins[0]) / beta
    if gain >= t.dpo_margin_min_gain:
        return None
    return Finding("DPO margins flat",
                   f"the chosen-minus-rejected margin moved {gain:+.3f} nats of log-ratio (rewards/margins "
                   f"{margins[0]:.4f} -> {margins[1]:.4f}, beta {beta:g}): the policy is not learning the preferences.",
                   "raise --learning_rate or train longer; check that chosen and rejected differ in the data.")


def rule_sft_loss_rising(history, run, t) -> Finding | None:
    """SFT: the training loss ends above its start by more than `sft_loss_rise` of it."""
    if run.method != "SFT":
        return None
    loss = trend(history, "loss", t)
    if not loss or loss[1] <= loss[0] * (1 + t.sft_loss_rise):
        return None
    return Finding("SFT loss rising", f"the training loss rose from {loss[0]:.3f} to {loss[1]:.3f}.",
                   "lower --learning_rate (LoRA: 1e-4 to 2e-4; full: 1e-5) or raise --warmup_steps.")


def rule_probe_degenerate(history, run, t) -> Finding | None:
    """Reward model: a degenerate answer beats the chosen one on more than 10% of the probe's prompts."""
    if not run.probe:
        return None
    from rlhfkit.report.probe_table import DESCRIPTIONS, WARN_ABOVE  # here: only a reward model's run has a probe

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


RULES = (rule_rm_accuracy_near_chance, rule_dpo_likelihood_displacement, rule_dpo_margins_flat, rule_sft_loss_rising,
         rule_probe_degenerate)
