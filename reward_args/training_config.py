"""Step 1 (reward model): training hyper-parameters, on top of TRL's `RewardConfig`.

Loss: -log sigmoid(r_chosen - r_rejected) (Bradley-Terry; Ouyang et al. 2022, eq. 1). Every TRL/transformers
training field can be overridden on the command line, e.g. `python reward_model.py --learning_rate 5e-5`.
"""

from dataclasses import dataclass, field
from typing import Literal

from trl import RewardConfig as TRLRewardConfig

from rlhf_args.base_config import BaseConfig
from rlhfkit.errors import ConfigError


@dataclass
class RewardConfig(BaseConfig, TRLRewardConfig):
    output_dir: str = field(
        default="output/reward_model", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    learning_rate: float = field(default=1e-4, metadata={"help": "LoRA: 1e-4 to 3e-4; full fine-tuning: about 1e-5"})
    max_length: int | None = field(
        default=512, metadata={"help": "pairs longer than this (prompt + answer, in tokens) are dropped by TRL"})
    center_rewards_coefficient: float | None = field(
        default=None, metadata={"help": "e.g. 0.01 keeps scores centred on 0 (Eisenstein et al. 2023)"})
    eval_strategy: str = field(
        default="no", metadata={"help": "the held-out accuracy is always computed once at the end"})
    length_debias: Literal["none", "odin"] = field(
        default="none", metadata={"help": "odin: a quality head and a length head (Chen et al. 2024, ODIN); the saved "
                                          "model scores with the quality head only (rlhfkit/methods/odin.py)"})
    odin_length_weight: float = field(
        default=1.0, metadata={"help": "ODIN: weight of |corr(quality, length)| - corr(length head, length)"})
    odin_orthogonal_weight: float = field(
        default=1.0, metadata={"help": "ODIN: weight of |w_quality . w_length|, the two heads kept orthogonal"})

    def __post_init__(self):
        if self.length_debias == "odin" and self.center_rewards_coefficient:
            raise ConfigError("--center_rewards_coefficient does nothing with --length_debias odin (ODIN's loss "
                              "replaces the centring term): drop one of the two")
        super().__post_init__()
