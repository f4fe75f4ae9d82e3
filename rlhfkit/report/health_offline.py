"""Run-health rules of the policy methods that train on fixed data (DPO, CPO, SimPO, ORPO, KTO, SFT; GKD): DPO's
likelihood displacement and flat margins, SFT's rising loss. Their vocabulary: `health_base.py`; a reward model's
rules: `health_rm.py`.
"""

from __future__ import annotations

from rlhfkit.report.health_base import Finding, Health, trend


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


RULES = (rule_dpo_likelihood_displacement, rule_dpo_margins_flat, rule_sft_loss_rising)
HEALTH = Health(RULES)
