"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024, arXiv:2402.01306), on top of TRL's `KTOConfig`.

Needs: unpaired rows {prompt, completion, label} (label true = desirable, false = undesirable), or preference
pairs, which are split into one desirable (chosen) and one undesirable (rejected) row each. A reference model
(LoRA/QLoRA: the policy with its adapter off; full: a frozen copy of the checkpoint). No reward model.
Loss (paper eq. 7), with r = log pi(y|x) - log ref(y|x) and z0 = the KL(pi || ref) estimate of the batch:
    desirable:   desirable_weight   * (1 - sigmoid(beta * (r - z0)))
    undesirable: undesirable_weight * (1 - sigmoid(beta * (z0 - r)))
z0 is estimated from mismatched (prompt, completion) pairs inside each batch, hence at least 2 rows per device.
"""

from dataclasses import dataclass, field

from trl import KTOConfig as TRLKTOConfig

from rlhf_args.base_config import BaseConfig
from rlhfkit.errors import ConfigError


def kto_class_weights(n_desirable: int, n_undesirable: int, desirable_weight: float | None = None,
                      undesirable_weight: float | None = None) -> tuple[float, float]:
    """KTO's desirable/undesirable loss weights, balanced for the class counts.

    KTO paper (Ethayarajh et al. 2024, sec. 4): pick the weights so that
    `desirable_weight * n_desirable / (undesirable_weight * n_undesirable)` lies in [1, 4/3].
    A weight given by the user (not None) is kept. A weight left at None is 1.0 if the ratio is already in range,
    else it is solved for so that the ratio is 7/6, the middle of the range; with both None the rarer class is
    up-weighted and the other stays at 1.0. Returns `(desirable_weight, undesirable_weight)`; (1, 1) if a class
    is empty.
    """
    d = 1.0 if desirable_weight is None else float(desirable_weight)
    u = 1.0 if undesirable_weight is None else float(undesirable_weight)
    if n_desirable == 0 or n_undesirable == 0 or (desirable_weight is not None and undesirable_weight is not None):
        return d, u
    ratio = d * n_desirable / (u * n_undesirable)
    if 1.0 <= ratio <= 4 / 3:
        return d, u
    if desirable_weight is None and (undesirable_weight is not None or ratio < 1.0):
        return 7 / 6 * u * n_undesirable / n_desirable, u
    return d, d * n_desirable / (7 / 6 * n_undesirable)


@dataclass
class KTOConfig(BaseConfig, TRLKTOConfig):
    output_dir: str = field(
        default="output/kto", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    beta: float = field(default=0.1, metadata={"help": "KL strength, as in DPO (KTO paper; ContextualAI/HALOs "
                                                       "config/loss/kto.yaml: 0.1)"})
    desirable_weight: float | None = field(
        default=None, metadata={"help": "None: auto, 1.0 unless desirable rows are the rarer class (HALOs: 1.0)"})
    undesirable_weight: float | None = field(
        default=None, metadata={"help": "None: auto, w_D*n_D / (w_U*n_U) in [1, 4/3] (KTO paper sec. 4)"})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "completions per device per step (= 4 pairs); >= 2: z0 is estimated per batch"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "LoRA; full fine-tuning: 5e-7 to 5e-6 (HALOs README 5e-6; TRL default 1e-6)"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + completion tokens; longer rows are cut at the end"})
    loss_type: str = field(default="kto", metadata={"help": "\"kto\" (paper) or \"apo_zero_unpaired\" (APO-zero, "
                                                            "D'Oosterlinck et al. 2024; no KL term)"})
    loss_types = ("kto", "apo_zero_unpaired")  # what TRL 1.16 KTOTrainer.kto_loss accepts

    def __post_init__(self):
        for name in ("desirable_weight", "undesirable_weight"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be > 0 (it scales that class's loss), got {getattr(self, name)}")
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            raise ConfigError(
                f"KTO needs --per_device_train_batch_size >= 2 (got {self.per_device_train_batch_size}): it estimates "
                f"its KL reference point z0 from each row's prompt paired with another row's completion in the same "
                f"batch; with one row per batch that pair is the row itself and z0 equals the row's own reward "
                f"(KTO paper sec. 4: micro-batch >= 2, 8 to 128 in total). Use --per_device_train_batch_size 2 or "
                f"more (and lower --gradient_accumulation_steps to keep the effective batch).")
        super().__post_init__()

    def balance_class_weights(self, n_desirable: int, n_undesirable: int) -> float:
        """Set the class weights left at None for these class counts (`kto_class_weights`); weights the user set are
        kept. Returns the weighted ratio desirable_weight x n_desirable / (undesirable_weight x n_undesirable), inf
        without undesirable rows.
        """
        self.desirable_weight, self.undesirable_weight = kto_class_weights(
            n_desirable, n_undesirable, self.desirable_weight, self.undesirable_weight)
        if not n_undesirable:
            return float("inf")
        return self.desirable_weight * n_desirable / (self.undesirable_weight * n_undesirable)
