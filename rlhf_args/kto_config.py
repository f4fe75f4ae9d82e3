"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024, arXiv:2402.01306), on top of TRL's `KTOConfig`.

Needs: unpaired rows {prompt, completion, label} (label true = desirable, false = undesirable), or preference
pairs, which are split into one desirable (chosen) and one undesirable (rejected) row each. A reference model
(LoRA/QLoRA: the policy with its adapter off; full: a frozen copy of the checkpoint). No reward model.
Loss (paper eq. 7), with r = log pi(y|x) - log ref(y|x) and z0 = the KL(pi || ref) estimate of the batch:
    desirable:   desirable_weight   * (1 - sigmoid(beta * (r - z0)))
    undesirable: undesirable_weight * (1 - sigmoid(beta * (z0 - r)))
z0 is estimated from mismatched (prompt, completion) pairs inside each batch, hence at least 2 rows per device.
"""

from dataclasses import dataclass

from trl import KTOConfig as TRLKTOConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class KTOConfig(BaseConfig, TRLKTOConfig):
    output_dir: str = "output/kto"  # where the model/adapter, curves and checkpoints go
    beta: float = 0.1  # KL strength, as in DPO (KTO paper; ContextualAI/HALOs config/loss/kto.yaml: 0.1)
    desirable_weight: float | None = None  # None: auto, 1.0 unless desirable rows are the rarer class (HALOs: 1.0)
    undesirable_weight: float | None = None  # None: auto, w_D*n_D / (w_U*n_U) in [1, 4/3] (KTO paper sec. 4)
    per_device_train_batch_size: int = 8  # completions per device per step (= 4 pairs); >= 2: z0 is estimated per batch
    learning_rate: float = 5e-5  # LoRA; full fine-tuning: 5e-7 to 5e-6 (HALOs README 5e-6; TRL default 1e-6)
    max_length: int | None = 512  # prompt + completion tokens; longer rows are cut at the end
    loss_type: str = "kto"  # "kto" (paper) or "apo_zero_unpaired" (APO-zero, D'Oosterlinck et al. 2024; no KL term)

    def __post_init__(self):
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            raise ValueError(
                f"KTO needs per_device_train_batch_size >= 2 (got {self.per_device_train_batch_size}): it estimates "
                f"its KL reference point z0 from each row's prompt paired with another row's completion in the same "
                f"batch; with one row per batch that pair is the row itself and z0 equals the row's own reward "
                f"(KTO paper sec. 4: micro-batch >= 2, 8 to 128 in total). Use --per_device_train_batch_size 2 or "
                f"more (and lower --gradient_accumulation_steps to keep the effective batch).")
        super().__post_init__()
