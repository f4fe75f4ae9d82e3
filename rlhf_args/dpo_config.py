"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290), on top of TRL's `DPOConfig`.

Needs: prompt/chosen/rejected pairs and a reference model (with LoRA/QLoRA the reference is the same weights
with the adapter switched off, so no second copy is loaded). No reward model.
Loss (sigmoid): -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]).
"""

from dataclasses import dataclass, field

from trl import DPOConfig as TRLDPOConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class DPOConfig(BaseConfig, TRLDPOConfig):
    output_dir: str = "output/dpo"  # where the model/adapter, curves and checkpoints go
    beta: float = 0.1  # KL strength: higher keeps the policy closer to the reference (paper: 0.1 to 0.5)
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])  # "sigmoid" (DPO), "ipo", "hinge", ...
    label_smoothing: float = 0.0  # > 0 assumes that share of labels is flipped (cDPO / robust DPO)
    learning_rate: float = 5e-5  # LoRA: 5e-6 to 5e-5; full fine-tuning: 5e-7 to 1e-6
    max_length: int | None = 512  # prompt + answer tokens; longer pairs are cut at the end (keep_start)
    precompute_ref_log_probs: bool = False  # full fine-tuning: score the reference once, then free it
