"""Step 1 (reward model): which base model, full / LoRA / QLoRA, and which preference data.

The fields and their meaning are shared with train_rlhf.py (see `common_args.py`); change the defaults here
for reward-model runs only, or override on the command line: `python reward_model.py --train_mode full`.

Degenerate negatives (docs/online-rl.md, "Reward hacking: degenerate answers"): for `degenerate_negatives_ratio` x
the training pairs, one more pair is added whose rejected answer is a degenerate version of the chosen one: empty,
"Ok.", cut to a quarter, repeated 3 times, or another prompt's chosen answer (shares set by
`degenerate_variant_weights`, training rows only). Without them a reward model trained on hh-rlhf scored an empty
answer above the human-chosen one for 79% of prompts.
"""

from dataclasses import dataclass, field

from common_args import ModelArgs


@dataclass
class RewardModelArgs(ModelArgs):
    eval_split_size: float = field(
        default=0.1, metadata={"help": "held-out pairs for the accuracy reported at the end"})
    degenerate_negatives_ratio: float = field(
        default=0.5, metadata={"help": "extra (chosen, degenerate chosen) pairs per training pair; 0 = off"})
    degenerate_variant_weights: str = field(
        default="empty:1,filler:1,truncated:1,repeated:1,off_topic:1", metadata={"help": "relative shares; 0 = none"})
    probe_prompts: int = field(default=200, metadata={"help": "held-out prompts the end-of-training "
                                                              "degenerate-answer probe scores; 0 = no probe"})
