"""Run health: read a finished run's log and say in plain English what looks wrong, with the numbers behind it.

    run_health(config.output_dir, health_offline.HEALTH)     # the step after saving, with the method's rules

`run_health` reads `OUTPUT_DIR/trainer_state.json` (the log history), `run_config.json` (which method, its beta),
`rm_probe.json` and `rm_accuracy.json` (reward models) when present, checks it with the rule of every run (a NaN or
infinite loss) and the rules of the run's family of methods, prints one line per finding and writes
`OUTPUT_DIR/report.html` (findings, curves and the family's sections), a self-contained page. The caller picks the
family, a `Health` (rules and report sections): `health_offline.py` (DPO, SFT and the other offline methods, GKD),
`health_online.py` (PPO, RLOO, GRPO: with their samples), `health_rm.py` (reward models); `run_health.py` is the
command that reads any run folder. This module also holds what every rule uses: the thresholds (`HealthThresholds`,
flags of `python -m rlhfkit.report.run_health`), a `Finding`, what is known of the run (`RunInfo`) and the trends of
its log history.

A rule is a small function `(history, run, thresholds) -> Finding | None` over the log history (`trainer_state.json`'s
`log_history`); its threshold is a field of `HealthThresholds`. Trends compare the mean of the first and of the last
`window` share of the logged points, so one noisy batch does not fire a rule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from rlhfkit.errors import PathNotFoundError, read_json
from rlhfkit.log import info_rank0
from rlhfkit.outputs import non_finite_values
from rlhfkit.report.html_report import escape, image, write_page

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


# ----------------------------------------------------------------------------------------------------------
# A run folder: read, check, print, report

REPORT_FILE = "report.html"


class Health(NamedTuple):
    """What run health checks and shows for a family of methods."""

    rules: tuple = ()  # `(history, run, thresholds) -> Finding | None`, besides `rule_nonfinite_loss`
    sections: tuple[Callable[[str, RunInfo], list[str]], ...] = ()  # (output_dir, run) -> HTML blocks of report.html


def check_history(history: list[dict], run: RunInfo, health: Health,
                  thresholds: HealthThresholds | None = None) -> list[Finding]:
    """`rule_nonfinite_loss` and every rule of `health` on one log history; the findings (empty for a healthy run)."""
    thresholds = thresholds or HealthThresholds()
    rules = (rule_nonfinite_loss, *health.rules)
    return [f for f in (rule(history, run, thresholds) for rule in rules) if f is not None]


def read_json_if_present(path: str) -> dict | None:
    """The JSON in `path`, None if there is no such file; a cut or unreadable file is a `ConfigError` naming it."""
    return read_json(path) if os.path.isfile(path) else None


def read_history(output_dir: str) -> list[dict]:
    """The log history of `output_dir/trainer_state.json`. Raises `PathNotFoundError` if there is none (not a
    finished training run).
    """
    state = read_json_if_present(os.path.join(output_dir, "trainer_state.json"))
    if state is None:
        raise PathNotFoundError(f"{output_dir}: no trainer_state.json (run health reads a finished training run)")
    return state.get("log_history", [])


def run_info(output_dir: str, history: list[dict]) -> RunInfo:
    """The method, beta and reward-model files of a run folder (from run_config.json, else the logged keys)."""
    settings = read_json_if_present(os.path.join(output_dir, "run_config.json")) or {}
    training = settings.get("training", {})
    method = settings.get("method")
    if method is None:  # no run_config.json (a checkpoint folder, a run stopped before saving): guess from the log
        keys = {k for e in history for k in e}
        method = ("reward model" if "margin" in keys else "PPO" if "objective/kl" in keys
                  else "GRPO" if "completions/clipped_ratio" in keys else "DPO" if "rewards/margins" in keys else None)
    return RunInfo(method=method, beta=training.get("beta"),
                   probe=read_json_if_present(os.path.join(output_dir, "rm_probe.json")),
                   rm_accuracy=read_json_if_present(os.path.join(output_dir, "rm_accuracy.json")))


def write_report(output_dir: str, findings: list[Finding], run: RunInfo, history: list[dict], health: Health) -> str:
    """Write `output_dir/report.html`: the findings, the curves and `health`'s sections; returns its path."""
    steps = [e["step"] for e in history if "step" in e]
    sections = [f'<p class="meta">{escape(run.method or "unknown method")} run in {escape(output_dir)}; '
                f'{len(history)} log entries, last step {max(steps) if steps else "n/a"}.</p>', "<h2>Findings</h2>"]
    sections += [f'<div class="finding"><b>{escape(f.rule)}</b>: {escape(f.message)}'
                 + (f"<br><i>Hint:</i> {escape(f.hint)}" if f.hint else "") + "</div>" for f in findings]
    if not findings:
        sections.append(f'<div class="finding ok">No problems found ({1 + len(health.rules)} rules checked).</div>')
    sections.append("<h2>Curves</h2>")
    sections += [image(os.path.join(output_dir, name), name) for name in
                 ("training_curves.png", "online_curves.png", "rm_probe.png")]
    for section in health.sections:
        sections += section(output_dir, run)
    return write_page(os.path.join(output_dir, REPORT_FILE), f"Run health: {os.path.basename(output_dir.rstrip('/'))}",
                      sections)


def run_health(output_dir: str, health: Health, thresholds: HealthThresholds | None = None,
               log=info_rank0) -> list[Finding]:
    """Check a run folder with `health`'s rules, print the findings (or that none were found) and write `report.html`.

    Returns the findings. Raises `PathNotFoundError` as `read_history` does.
    """
    history = read_history(output_dir)
    run = run_info(output_dir, history)
    findings = check_history(history, run, health, thresholds)
    for finding in findings:
        log(f"[run health] WARNING: {finding}")
    if not findings:
        log(f"[run health] no problems found ({1 + len(health.rules)} rules on {len(history)} log entries)")
    log(f"[run health] report: {write_report(output_dir, findings, run, history, health)}")
    return findings
