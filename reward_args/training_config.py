"""Step 1 (reward model): training hyper-parameters, on top of TRL's `RewardConfig`.

Loss: -log sigmoid(r_chosen - r_rejected) (Bradley-Terry; Ouyang et al. 2022, eq. 1). Every TRL/transformers
training field can be overridden on the command line, e.g. `python reward_model.py --learning_rate 5e-5`.
"""

from dataclasses import dataclass

from trl import RewardConfig as TRLRewardConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class RewardConfig(BaseConfig, TRLRewardConfig):
    output_dir: str = "output/reward_model"  # where the model/adapter, curves and checkpoints go
    learning_rate: float = 1e-4  # LoRA: 1e-4 to 3e-4; full fine-tuning: about 1e-5
    max_length: int | None = 512  # pairs longer than this (prompt + answer, in tokens) are dropped by TRL
    center_rewards_coefficient: float | None = None  # e.g. 0.01 keeps scores centred on 0 (Eisenstein et al. 2023)
    eval_strategy: str = "no"  # the held-out accuracy is always computed once at the end
