"""The reward-model probe's table (`rm_probe.json`, written by `rlhfkit.report.rm_probe`) as text, and the saved
table printed by the online methods before they start. The probe itself is in rm_probe.py.
"""

from __future__ import annotations

import os

from rlhfkit.errors import UserError, read_json
from rlhfkit.log import info_rank0

DESCRIPTIONS = {
    "empty": 'empty answer ""',
    "filler": 'filler answer "Ok."',
    "truncated": "chosen answer cut to its first quarter of words",
    "repeated": "chosen answer repeated 3 times",
    "off_topic": "chosen answer of another prompt",
}
WARN_ABOVE = 0.10  # a variant that beats the chosen answer on more than this share of prompts gets a WARNING
PROBE_FILE = "rm_probe.json"


def format_probe_table(result: dict) -> str:
    """A `run_probe` result (or a loaded rm_probe.json) as a plain-text table.

    One line per variant (win rate in %, mean gap, n, description), then a `WARNING:` line for each variant that
    wins on more than 10% of prompts, or an `OK:` line if none does.
    """
    lines = [f"Reward-model probe: does a degenerate answer score above the chosen one? ({result['n_prompts']} "
             f"prompts; win rate should be ~0%, mean gap = score(chosen) - score(variant) should be > 0)",
             f"{'variant':<10} {'win rate':>9} {'mean gap':>9} {'n':>5}  answer"]
    warnings = []
    for v, stats in result["variants"].items():
        rate, gap = stats["win_rate"], stats["mean_gap"]
        lines.append(f"{v:<10} {'n/a' if rate is None else f'{100 * rate:.1f}%':>9} "
                     f"{'n/a' if gap is None else f'{gap:+.3f}':>9} {stats['n']:>5}  {DESCRIPTIONS.get(v, '')}")
        if rate is not None and rate > WARN_ABOVE:
            warnings.append(f"WARNING: [{v}] the reward model scores the {DESCRIPTIONS.get(v, v)} above the chosen "
                            f"answer for {100 * rate:.1f}% of prompts (> {100 * WARN_ABOVE:.0f}%). PPO/RLOO/GRPO "
                            f"will learn to exploit this. Retrain it with reward_model.py "
                            f"--degenerate_negatives_ratio 0.5 if it was trained without degenerate negatives; "
                            f"if it was trained with them, give this kind more weight "
                            f"(--degenerate_variant_weights), raise the ratio or train longer."
                            + (" An off-topic answer winning about half the time means the score barely depends "
                               "on the prompt." if v == "off_topic" else ""))
    return "\n".join(lines + (warnings or [f"OK: no degenerate answer beats the chosen one on more than "
                                           f"{100 * WARN_ABOVE:.0f}% of prompts."]))


def print_saved_probe(reward_model_path: str, log=info_rank0) -> str | None:
    """Print the probe table saved with a reward model (`RM_DIR/rm_probe.json`), for PPO/RLOO/GRPO to call first.

    Returns the printed table (it contains "WARNING:" lines if a degenerate answer wins too often), or None,
    printing nothing, if `reward_model_path` has no rm_probe.json (e.g. a model trained elsewhere).
    """
    path = os.path.join(str(reward_model_path), PROBE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        table = format_probe_table(read_json(path))
    except UserError as error:  # the probe only informs: a cut file is no reason to stop
        log(f"[reward model] WARNING: the saved probe is not shown: {error}")
        return None
    log(f"[reward model] degenerate-answer probe saved with {reward_model_path}:\n{table}")
    return table
