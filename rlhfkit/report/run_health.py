"""Run health: read a finished run's log and say in plain English what looks wrong, with the numbers behind it.

    python -m rlhfkit.report.run_health OUTPUT_DIR [--kl_max_per_answer 30 ...]     # any run of this toolkit

Reads `OUTPUT_DIR/trainer_state.json` (the log history), `run_config.json` (which method, its beta),
`samples.jsonl` (online methods' sampled answers), `rm_probe.json` and `rm_accuracy.json` (reward models) when
present; prints one line per finding and writes `OUTPUT_DIR/report.html` (findings, curves, latest samples), a
self-contained page. Every training script runs it as the step after saving.

Each rule is a small function `(history, run, thresholds) -> Finding | None` over the log history; its threshold is
a field of `HealthThresholds`. Trends compare the mean of the first and of the last `window` share of the logged
points, so one noisy batch does not fire a rule.
"""

from __future__ import annotations

from rlhfkit.log import info_rank0  # first: filters known-harmless library messages

import math
import os
import sys
from dataclasses import dataclass, field, fields

from rlhfkit.args import parse_args
from rlhfkit.errors import PathNotFoundError, read_json, run_cli
from rlhfkit.report.html_report import escape, image, table, write_page

REPORT_FILE = "report.html"
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
class HealthArgs(HealthThresholds):
    output_dir: str = field(default="", metadata={"help": "the run's output_dir (also the first positional argument)"})

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
# Rules


def rule_nonfinite_loss(history, run, t) -> Finding | None:
    """Any logged loss (or gradient norm) that is NaN or infinite."""
    for entry in history:
        for key, value in entry.items():
            if ("loss" in key or key == "grad_norm") and isinstance(value, float) and not math.isfinite(value):
                return Finding("loss NaN/inf", f"{key} is {value} at step {entry.get('step')}: the run diverged "
                               f"and the weights saved after it are unusable.",
                               "lower --learning_rate, use bf16 or fp32 instead of fp16, check the data for empty "
                               "or huge rows, and keep --max_grad_norm set.")
    return None


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


RULES = (rule_nonfinite_loss, rule_rm_accuracy_near_chance, rule_dpo_likelihood_displacement, rule_dpo_margins_flat,
         rule_kl_runaway, rule_length_collapse, rule_length_drift, rule_score_tracks_length, rule_length_pinned_at_cap,
         rule_eos_rate_falling,
         rule_train_up_eval_down, rule_entropy_collapse, rule_sft_loss_rising, rule_probe_degenerate)


def check_history(history: list[dict], run: RunInfo | None = None,
                  thresholds: HealthThresholds | None = None) -> list[Finding]:
    """Every rule of `RULES` on one log history; returns the findings (empty for a healthy run)."""
    run, thresholds = run or RunInfo(), thresholds or HealthThresholds()
    return [f for f in (rule(history, run, thresholds) for rule in RULES) if f is not None]


# ----------------------------------------------------------------------------------------------------------
# A run folder: read, check, print, report


def _read_json(path: str) -> dict | None:
    """The JSON in `path`, None if there is no such file; a cut or unreadable file is a `ConfigError` naming it."""
    return read_json(path) if os.path.isfile(path) else None


def run_info(output_dir: str, history: list[dict]) -> RunInfo:
    """The method, beta and reward-model files of a run folder (from run_config.json, else the logged keys)."""
    settings = _read_json(os.path.join(output_dir, "run_config.json")) or {}
    training = settings.get("training", {})
    method = settings.get("method")
    if method is None:  # no run_config.json (a checkpoint folder, a run stopped before saving): guess from the log
        keys = {k for e in history for k in e}
        method = ("reward model" if "margin" in keys else "PPO" if "objective/kl" in keys
                  else "GRPO" if "completions/clipped_ratio" in keys else "DPO" if "rewards/margins" in keys else None)
    return RunInfo(method=method, beta=training.get("beta"),
                   probe=_read_json(os.path.join(output_dir, "rm_probe.json")),
                   rm_accuracy=_read_json(os.path.join(output_dir, "rm_accuracy.json")))


def check_run(output_dir: str, thresholds: HealthThresholds | None = None) -> tuple[list[Finding], RunInfo, list]:
    """Read `output_dir/trainer_state.json` and run every rule. Returns `(findings, run_info, log_history)`.

    Raises `PathNotFoundError` if the folder has no trainer_state.json (not a finished training run).
    """
    state = _read_json(os.path.join(output_dir, "trainer_state.json"))
    if state is None:
        raise PathNotFoundError(f"{output_dir}: no trainer_state.json (run health reads a finished training run)")
    history = state.get("log_history", [])
    run = run_info(output_dir, history)
    return check_history(history, run, thresholds), run, history


def write_report(output_dir: str, findings: list[Finding], run: RunInfo, history: list[dict],
                 n_samples: int = 8) -> str:
    """Write `output_dir/report.html`: the findings, the curves, the latest samples and the reward-model tables."""
    steps = [e["step"] for e in history if "step" in e]
    sections = [f'<p class="meta">{escape(run.method or "unknown method")} run in {escape(output_dir)}; '
                f'{len(history)} log entries, last step {max(steps) if steps else "n/a"}.</p>', "<h2>Findings</h2>"]
    sections += [f'<div class="finding"><b>{escape(f.rule)}</b>: {escape(f.message)}'
                 + (f"<br><i>Hint:</i> {escape(f.hint)}" if f.hint else "") + "</div>" for f in findings]
    if not findings:
        sections.append(f'<div class="finding ok">No problems found ({len(RULES)} rules checked).</div>')
    sections.append("<h2>Curves</h2>")
    sections += [image(os.path.join(output_dir, name), name) for name in
                 ("training_curves.png", "online_curves.png", "rm_probe.png")]
    if run.rm_accuracy:
        from rlhfkit.report.rm_accuracy import accuracy_rows  # here: a policy run loads no reward-model code

        sections += ["<h2>Reward-model accuracy</h2>", table(["measure", "value", "n (pairs or answers)"],
                                                             accuracy_rows(run.rm_accuracy), numeric={1, 2}),
                     f"<p>{escape(run.rm_accuracy.get('reading', ''))}</p>"]
    samples = []
    if os.path.isfile(os.path.join(output_dir, "samples.jsonl")):  # PPO, RLOO, GRPO
        from rlhfkit.report.samples import read_samples  # here: a run that samples no answers loads no sample code

        samples = read_samples(output_dir)
    if samples:
        last = max(s.get("step", 0) for s in samples)
        latest = [s for s in samples if s.get("step", 0) == last][:n_samples]
        prompt_text = lambda p: p[-1]["content"] if isinstance(p, list) and p else p  # noqa: E731
        sections += [f"<h2>Latest samples (step {last}, {len(samples)} in samples.jsonl)</h2>",
                     table(["prompt", "answer", "score", "KL"],
                           [[prompt_text(s["prompt"]), s["answer"], s.get("score"), s.get("kl")] for s in latest],
                           css_class="answers", numeric={2, 3})]
    return write_page(os.path.join(output_dir, REPORT_FILE), f"Run health: {os.path.basename(output_dir.rstrip('/'))}",
                      sections)


def run_health(output_dir: str, thresholds: HealthThresholds | None = None, log=info_rank0) -> list[Finding]:
    """Check a run folder, print the findings (or that none were found) and write `report.html`.

    Returns the findings. Raises `PathNotFoundError` as `check_run` does.
    """
    findings, run, history = check_run(output_dir, thresholds)
    for finding in findings:
        log(f"[run health] WARNING: {finding}")
    if not findings:
        log(f"[run health] no problems found ({len(RULES)} rules on {len(history)} log entries)")
    log(f"[run health] report: {write_report(output_dir, findings, run, history)}")
    return findings


def main(argv: list[str] | None = None) -> list[Finding]:
    """`python -m rlhfkit.report.run_health OUTPUT_DIR [--THRESHOLD value ...]` (thresholds: `HealthThresholds`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("--"):
        argv = ["--output_dir", argv[0], *argv[1:]]
    (thresholds,) = parse_args((HealthArgs,), argv)
    if not thresholds.output_dir:
        raise PathNotFoundError("usage: python -m rlhfkit.report.run_health OUTPUT_DIR [--THRESHOLD value ...]; "
                                "thresholds: " + ", ".join(f.name for f in fields(HealthThresholds)))
    return run_health(thresholds.output_dir, thresholds)


if __name__ == "__main__":
    run_cli(main)
