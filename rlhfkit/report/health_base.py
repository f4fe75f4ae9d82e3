"""What every run-health rule uses: the thresholds (`HealthThresholds`, flags of `python -m
rlhfkit.report.run_health`), a `Finding`, what is known of the run (`RunInfo`), the trends of its log history, and
the rule of every run (a NaN or infinite loss). The other rules: `health_offline.py` (reward model, DPO, SFT),
`health_online.py` (PPO, RLOO, GRPO).

A rule is a small function `(history, run, thresholds) -> Finding | None` over the log history (`trainer_state.json`'s
`log_history`); its threshold is a field of `HealthThresholds`. Trends compare the mean of the first and of the last
`window` share of the logged points, so one noisy batch does not fire a rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlhfkit.outputs import non_finite_values

ONLINE = ("PPO", "RLOO", "GRPO")


@dataclass
class HealthThresholds:
    min_points: int = field(default=3, metadata={"help": "logged points a trend rule needs before it says anything"})
    window: float = field(
        default=0.25, metadata={"help": "share of the logged points averaged at each end of a trend (at least one "
                                        "point)"})
    rm_accuracy_band: float = field(
        default=0.05, metadata={"help": "reward model: eval accuracy within 0.5 +- this is \"stuck near chance\""})
    dpo_logratio_drop: float = field(
        default=5.0, metadata={"help": "DPO: chosen and rejected log pi - log ref both below -this (nats) = "
                                       "displacement"})
    dpo_margin_min_gain: float = field(
        default=0.1, metadata={"help": "DPO: margin rising by less than this (nats of log-ratio) = flat margins"})
    kl_max_per_answer: float = field(
        default=20.0, metadata={"help": "PPO: objective/kl (nats summed over an answer) above this = KL running away"})
    kl_max_per_token: float = field(
        default=0.5, metadata={"help": "RLOO/GRPO: kl (mean nats per token) above this = KL running away"})
    min_mean_length: float = field(
        default=2.0, metadata={"help": "online: mean answer length at or below this many tokens = collapsed to empty"})
    length_drop_ratio: float = field(
        default=0.3, metadata={"help": "online: last / first mean answer length below this = length collapsing"})
    length_ratio_min: float = field(
        default=0.7, metadata={"help": "online: last / first mean answer length below this = answers getting shorter"})
    length_ratio_max: float = field(
        default=1.5, metadata={"help": "online: last / first mean answer length above this = answers getting longer"})
    score_length_corr_max: float = field(
        default=0.5, metadata={"help": "online: |correlation of the score with answer length| in a rollout above this "
                                       "= the reward tracks length"})
    cut_share_max: float = field(
        default=0.9, metadata={"help": "online: share of answers cut at the length cap above this = pinned at the cap"})
    eos_rate_drop: float = field(
        default=0.3, metadata={"help": "online: EOS rate falling by more than this (absolute share) = EOS rate "
                                       "falling"})
    score_change_min: float = field(
        default=0.05, metadata={"help": "online: train score up and eval score down, each by more than this (reward "
                                        "units)"})
    entropy_drop_ratio: float = field(
        default=0.2, metadata={"help": "online: last / first entropy below this = entropy collapsing"})
    sft_loss_rise: float = field(
        default=0.05, metadata={"help": "SFT: last loss above the first by more than this share of it = loss rising"})


@dataclass
class Finding:
    """One problem a rule found: its name, what is wrong (with the numbers) and what to try."""

    rule: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}" + (f" Hint: {self.hint}" if self.hint else "")


@dataclass
class RunInfo:
    """What the rules know besides the log history (all optional)."""

    method: str | None = None  # "DPO", "PPO", ..., "reward model", "GKD"
    beta: float | None = None  # the method's beta (DPO: KL strength; rewards/* are beta x log-ratios)
    probe: dict | None = None  # rm_probe.json
    rm_accuracy: dict | None = None  # rm_accuracy.json


# ----------------------------------------------------------------------------------------------------------
# Reading the log


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """`(step, value)` of every log entry holding a number under `key`, in order (NaN and inf kept)."""
    return [(e.get("step", 0), float(e[key])) for e in history
            if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)]


def ends(values: list[float], t: HealthThresholds) -> tuple[float, float] | None:
    """Mean of the first and of the last `t.window` share of finite `values` (at least one point each), or None
    with fewer than `t.min_points` finite values.
    """
    values = [v for v in values if math.isfinite(v)]
    if len(values) < t.min_points:
        return None
    k = max(1, int(len(values) * t.window))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def trend(history: list[dict], key: str, t: HealthThresholds) -> tuple[float, float] | None:
    """`ends` of the values logged under `key` (train entries only), or None."""
    return ends([v for _, v in series(history, key)], t)


def first_key(history: list[dict], *keys: str) -> str | None:
    """The first of `keys` that some log entry holds."""
    return next((k for k in keys if any(k in e for e in history)), None)


# ----------------------------------------------------------------------------------------------------------
# The rule of every run


def rule_nonfinite_loss(history, run, t) -> Finding | None:
    """Any logged loss (or gradient norm) that is NaN or infinite, as the NaN guard judges it (`non_finite_values`)."""
    for entry in history:
        if bad := non_finite_values(entry):
            key, value = next(iter(bad.items()))
            return Finding("loss NaN/inf", f"{key} is {value} at step {entry.get('step')}: the run diverged "
                           f"and the weights saved after it are unusable.",
                           "lower --learning_rate, use bf16 or fp32 instead of fp16, check the data for empty "
                           "or huge rows, and keep --max_grad_norm set.")
    return None
