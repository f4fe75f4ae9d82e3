"""Run-health rules of the online methods (PPO, RLOO, GRPO): KL to the reference, answer length and EOS rate, the
score's link to length, training vs held-out score, entropy; report.html shows the latest sampled answers. Their
vocabulary: `health_base.py`.
"""

from __future__ import annotations

import math

from rlhfkit.report.health_base import ONLINE, Finding, Health, first_key, series, trend
from rlhfkit.report.samples import samples_section


def rule_kl_runaway(history, run, t) -> Finding | None:
    """Online: the KL to the reference above `kl_max_per_answer` (PPO) or `kl_max_per_token` (RLOO/GRPO)."""
    if run.method not in ONLINE + (None,):
        return None
    for key, limit, unit in (("objective/kl", t.kl_max_per_answer, "nats per answer"),
                             ("kl", t.kl_max_per_token, "nats per token")):
        values = trend(history, key, t)
        if values and values[1] > limit:
            return Finding("KL running away",
                           f"{key} is {values[1]:.3g} {unit} in the last logs (first logs {values[0]:.3g}; limit "
                           f"{limit:g}): the policy has moved far from the reference model, usually to exploit the "
                           f"reward model.",
                           "raise the KL coefficient (--kl_coef for PPO, --beta for RLOO/GRPO) or --kl_target, lower "
                           "--learning_rate, and read the latest samples.")
    return None


def rule_length_collapse(history, run, t) -> Finding | None:
    """Online: mean answer length at or below `min_mean_length`, or below `length_drop_ratio` x its start."""
    length = trend(history, "completions/mean_length", t)
    if not length:
        return None
    first, last = length
    if last > t.min_mean_length and (first <= 0 or last / first >= t.length_drop_ratio):
        return None
    return Finding("answer length collapsing",
                   f"mean answer length fell from {first:.1f} to {last:.1f} tokens: the policy is learning to say "
                   f"(almost) nothing, which the reward model must be scoring high.",
                   "read the reward model's probe (rm_probe.json: does an empty or 'Ok.' answer win?), retrain it "
                   "with --degenerate_negatives_ratio, keep --min_new_tokens >= 1.")


def rule_length_drift(history, run, t) -> Finding | None:
    """Online: mean answer length leaves `length_ratio_min`-`length_ratio_max` x its start (collapse: its own rule)."""
    length = trend(history, "completions/mean_length", t)
    if not length or length[0] <= 0:
        return None
    first, last = length
    ratio = last / first
    if t.length_ratio_min <= ratio <= t.length_ratio_max or ratio < t.length_drop_ratio or last <= t.min_mean_length:
        return None
    way = "shorter" if ratio < 1 else "longer"
    return Finding(f"answers getting {way}",
                   f"mean answer length went from {first:.1f} to {last:.1f} tokens ({ratio:.2f}x its start, outside "
                   f"{t.length_ratio_min:g}x-{t.length_ratio_max:g}x): a score that rises with it may be buying "
                   f"length, not quality.",
                   "compare with a judge at equal length (evaluate.py's length-controlled win rate), train with "
                   "--length_control batch, or use a reward model trained with --length_debias odin.")


def rule_score_tracks_length(history, run, t) -> Finding | None:
    """Online: the rollouts' score correlates with answer length beyond `score_length_corr_max` (either sign)."""
    values = trend(history, "completions/score_length_corr", t)
    if not values or abs(values[1]) <= t.score_length_corr_max:
        return None
    way = "longer" if values[1] > 0 else "shorter"
    return Finding("reward tracks length",
                   f"the correlation of the score with answer length is {values[1]:+.2f} in the last rollouts (first "
                   f"{values[0]:+.2f}; limit {t.score_length_corr_max:g}): the reward favours {way} answers, and "
                   f"the policy can raise it by length alone.",
                   "train with --length_control batch (removes each rollout's linear trend of score on length), or "
                   "retrain the reward model with --length_debias odin.")


def _cut_shares(history, run, t):
    """First/last share of answers cut at the length cap: PPO logs 1 - completions/eos_rate, TRL clipped_ratio."""
    if first_key(history, "completions/clipped_ratio"):
        return trend(history, "completions/clipped_ratio", t)
    eos = trend(history, "completions/eos_rate", t)
    return (1 - eos[0], 1 - eos[1]) if eos else None


def rule_length_pinned_at_cap(history, run, t) -> Finding | None:
    """Online: more than `cut_share_max` of the answers cut at the length cap."""
    cut = _cut_shares(history, run, t)
    if not cut or cut[1] <= t.cut_share_max:
        return None
    length = trend(history, "completions/mean_length", t)
    return Finding("length pinned at the cap",
                   f"{100 * cut[1]:.0f}% of answers are cut at the length cap in the last logs (first logs "
                   f"{100 * cut[0]:.0f}%)" + (f", mean length {length[1]:.1f} tokens" if length else "") +
                   ": the reward model may reward length, and cut answers get scored mid-sentence.",
                   "raise the cap (--response_length / --max_completion_length), add --missing_eos_penalty 1.0, and "
                   "check whether the reward model prefers longer or repeated answers (rm_probe.json).")


def rule_eos_rate_falling(history, run, t) -> Finding | None:
    """Online: the share of answers that end with EOS falls by more than `eos_rate_drop`."""
    cut = _cut_shares(history, run, t)
    if not cut or (cut[1] - cut[0]) <= t.eos_rate_drop:
        return None
    return Finding("EOS rate falling",
                   f"the share of answers that end before the cap fell from {1 - cut[0]:.2f} to {1 - cut[1]:.2f}: "
                   f"the policy is learning to ramble.", "add --missing_eos_penalty 1.0 or raise the KL coefficient.")


def rule_train_up_eval_down(history, run, t) -> Finding | None:
    """Online: the training score rises while the held-out score falls, each by more than `score_change_min`."""
    for train_key, eval_key in (("objective/scores", "eval_objective/scores"), ("reward", "eval_reward")):
        train = trend(history, train_key, t)
        evals = [v for _, v in series(history, eval_key) if math.isfinite(v)]
        if not train or len(evals) < 2:
            continue
        if train[1] - train[0] > t.score_change_min and evals[-1] - evals[0] < -t.score_change_min:
            return Finding("training score up, eval score down",
                           f"{train_key} rose {train[0]:.3f} -> {train[1]:.3f} while {eval_key} fell "
                           f"{evals[0]:.3f} -> {evals[-1]:.3f}: the policy fits the training prompts (or the reward "
                           f"model's quirks on them), not the task.",
                           "stop earlier (use the checkpoint where the eval score peaked), add prompts, raise the KL "
                           "coefficient.")
    return None


def rule_entropy_collapse(history, run, t) -> Finding | None:
    """Online: the policy's entropy falls below `entropy_drop_ratio` x its starting value."""
    if run.method not in ONLINE:
        return None
    key = first_key(history, "policy/entropy_avg", "objective/entropy", "entropy")
    values = trend(history, key, t) if key else None
    if not values or values[0] <= 0 or values[1] / values[0] >= t.entropy_drop_ratio:
        return None
    return Finding("entropy collapsing",
                   f"{key} fell from {values[0]:.3g} to {values[1]:.3g} ({100 * values[1] / values[0]:.0f}% of its "
                   f"start): the policy samples nearly the same answer every time, and exploration has stopped.",
                   "lower --learning_rate, raise the KL coefficient, or raise --temperature.")


RULES = (rule_kl_runaway, rule_length_collapse, rule_length_drift, rule_score_tracks_length, rule_length_pinned_at_cap,
         rule_eos_rate_falling, rule_train_up_eval_down, rule_entropy_collapse)
HEALTH = Health(RULES, (samples_section,))
