"""Step 1 (reward model): which base model, full / LoRA / QLoRA, and which preference data.

The fields and their meaning are shared with train_rlhf.py (see `common_args.py`); change the defaults here
for reward-model runs only, or override on the command line: `python reward_model.py --train_mode full`.
"""

from dataclasses import dataclass

from common_args import ModelArgs


@dataclass
class RewardModelArgs(ModelArgs):
    eval_split_size: float = 0.1  # held-out pairs for the accuracy reported at the end
