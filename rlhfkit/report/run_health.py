"""Run health: read a finished run's log and say in plain English what looks wrong, with the numbers behind it.

    python -m rlhfkit.report.run_health OUTPUT_DIR [--kl_max_per_answer 30 ...]     # any run of this toolkit

Reads `OUTPUT_DIR/trainer_state.json` (the log history), `run_config.json` (which method, its beta),
`samples.jsonl` (online methods' sampled answers), `rm_probe.json` and `rm_accuracy.json` (reward models) when
present; prints one line per finding and writes `OUTPUT_DIR/report.html` (findings, curves, latest samples), a
self-contained page. Every training script runs it as the step after saving.

The rules: `health_base.py` (their thresholds and vocabulary, and the NaN rule of every run), `health_offline.py`
(reward model, DPO, SFT), `health_online.py` (PPO, RLOO, GRPO); a run loads the rules of its method.
"""

from __future__ import annotations

from rlhfkit.log import info_rank0  # first: filters known-harmless library messages

import os
import sys
from dataclasses import dataclass, field, fields

from rlhfkit.args import parse_args
from rlhfkit.errors import PathNotFoundError, read_json, run_cli
from rlhfkit.report.health_base import ONLINE, Finding, HealthThresholds, RunInfo, rule_nonfinite_loss
from rlhfkit.report.html_report import escape, image, table, write_page

REPORT_FILE = "report.html"


@dataclass
class HealthArgs(HealthThresholds):
    output_dir: str = field(default="", metadata={"help": "the run's output_dir (also the first positional argument)"})


def rules_for(method: str | None) -> list:
    """The rules that apply to a run of `method` ("DPO", "PPO", ...; None when unknown: all of them)."""
    rules = [rule_nonfinite_loss]
    if method not in ONLINE:
        from rlhfkit.report import health_offline  # here: a PPO, RLOO or GRPO run loads no offline rules

        rules += health_offline.RULES
    if method in ONLINE or method is None:
        from rlhfkit.report import health_online  # here: a DPO, SFT or reward-model run loads no online rules

        rules += health_online.RULES
    return rules


def check_history(history: list[dict], run: RunInfo | None = None,
                  thresholds: HealthThresholds | None = None) -> list[Finding]:
    """Every rule of `rules_for(run.method)` on one log history; returns the findings (empty for a healthy run)."""
    run, thresholds = run or RunInfo(), thresholds or HealthThresholds()
    return [f for f in (rule(history, run, thresholds) for rule in rules_for(run.method)) if f is not None]


# ----------------------------------------------------------------------------------------------------------
# A run folder: read, check, print, report


def read_json_if_present(path: str) -> dict | None:
    """The JSON in `path`, None if there is no such file; a cut or unreadable file is a `ConfigError` naming it."""
    return read_json(path) if os.path.isfile(path) else None


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


def check_run(output_dir: str, thresholds: HealthThresholds | None = None) -> tuple[list[Finding], RunInfo, list]:
    """Read `output_dir/trainer_state.json` and run every rule. Returns `(findings, run_info, log_history)`.

    Raises `PathNotFoundError` if the folder has no trainer_state.json (not a finished training run).
    """
    state = read_json_if_present(os.path.join(output_dir, "trainer_state.json"))
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
        n_rules = len(rules_for(run.method))
        sections.append(f'<div class="finding ok">No problems found ({n_rules} rules checked).</div>')
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
        log(f"[run health] no problems found ({len(rules_for(run.method))} rules on {len(history)} log entries)")
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
