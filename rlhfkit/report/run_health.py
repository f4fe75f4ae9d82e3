"""Run health of any finished run, from the command line (every training script also runs it after saving):

    python -m rlhfkit.report.run_health OUTPUT_DIR [--kl_max_per_answer 30 ...]

Reads the run's method from `run_config.json` (or its logged keys) and checks it with that family's `Health`
(`health_offline.py`, `health_online.py`, `health_rm.py`; all of them when the method is unknown); the engine and the
thresholds are in `health_base.py`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields

from rlhfkit.args import parse_args
from rlhfkit.errors import PathNotFoundError, run_cli
from rlhfkit.report import health_base, health_offline, health_online, health_rm
from rlhfkit.report.health_base import ONLINE, Finding, Health, HealthThresholds


@dataclass
class HealthArgs(HealthThresholds):
    output_dir: str = field(default="", metadata={"help": "the run's output_dir (also the first positional argument)"})


def health_for(method: str | None) -> Health:
    """The `Health` of a run of `method` ("DPO", "PPO", "reward model", ...; None when unknown: every family's)."""
    if method in ONLINE:
        return health_online.HEALTH
    if method == "reward model":
        return health_rm.HEALTH
    if method is None:
        families = (health_offline.HEALTH, health_rm.HEALTH, health_online.HEALTH)
        return Health(sum((h.rules for h in families), ()), sum((h.sections for h in families), ()))
    return health_offline.HEALTH


def main(argv: list[str] | None = None) -> list[Finding]:
    """`python -m rlhfkit.report.run_health OUTPUT_DIR [--THRESHOLD value ...]` (thresholds: `HealthThresholds`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("--"):
        argv = ["--output_dir", argv[0], *argv[1:]]
    (thresholds,) = parse_args((HealthArgs,), argv)
    if not thresholds.output_dir:
        raise PathNotFoundError("usage: python -m rlhfkit.report.run_health OUTPUT_DIR [--THRESHOLD value ...]; "
                                "thresholds: " + ", ".join(f.name for f in fields(HealthThresholds)))
    method = health_base.run_info(thresholds.output_dir, health_base.read_history(thresholds.output_dir)).method
    return health_base.run_health(thresholds.output_dir, health_for(method), thresholds)


if __name__ == "__main__":
    run_cli(main)
