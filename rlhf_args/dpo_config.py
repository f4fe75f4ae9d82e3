"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290), on top of TRL's `DPOConfig`.

Needs: prompt/chosen/rejected pairs and a reference model (with LoRA/QLoRA the reference is the same weights
with the adapter switched off, so no second copy is loaded). No reward model.
Loss (sigmoid): -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]).

Loss variants (`--loss_type NAME`; several combine as `--loss_type sigmoid sft --loss_weights 1.0 0.5`), as in
TRL 1.16. delta = the bracket above (policy-vs-reference log-ratio of chosen minus that of rejected):
  sigmoid       DPO itself (Rafailov et al. 2023).
  hinge         SLiC (Zhao et al. 2023): max(0, 1 - beta * delta); beta acts as 1 / margin.
  ipo           IPO (Azar et al. 2023): (delta_avg - 1 / (2 * beta))^2 with per-token averaged log-probs; beta is the
                paper's tau, usually smaller than DPO's (e.g. 0.01 to 0.1).
  robust        Robust DPO (Chowdhury et al. 2024): unbiased under label noise; label_smoothing = the assumed share
                of flipped pairs, in [0, 0.5) (paper: 0.1).
  exo_pair      EXO (Ji et al. 2024): needs label_smoothing > 0 (paper: 1e-3).
  nca_pair      NCA (Chen et al. 2024): absolute rewards of chosen and rejected, not only their difference.
  bco_pair      BCO (Jung et al. 2024): chosen and rejected as a binary classifier of the implied reward.
  sppo_hard     SPPO (Wu et al. 2024), hard-label version: pushes chosen to +1/(2 beta), rejected to -1/(2 beta).
  aot, aot_unpaired  AOT (Melnyk et al. 2024): distributional alignment via sorted log-ratios in the batch.
  apo_zero      APO-zero (D'Oosterlinck et al. 2024): raise chosen, lower rejected (chosen better than the policy).
  apo_down      APO-down: lower both, rejected more (chosen answers worse than the policy's own).
  discopop      DiscoPOP (Lu et al. 2024): log-ratio modulated loss, temperature `discopop_tau` (paper: 0.05).
  sft           NLL on the chosen answer; `--loss_type sigmoid sft` is RPO (Pang et al. 2024).
  sigmoid_norm  sigmoid on per-token averaged log-ratios (length-normalised DPO).
Length: `--rdpo_alpha` (R-DPO, Park et al. 2024: alpha x (|chosen| - |rejected|) tokens inside the sigmoid;
rlhfkit/methods/offline.py),
`--ld_alpha` (TRL; LD-DPO, Liu et al. 2024: tokens past the shorter answer's length weigh ld_alpha in the log-probs) and
`--loss_type sigmoid_norm` (per-token averaged log-ratios); docs/length.md says when each helps.
label_smoothing is read only by robust, exo_pair, aot and aot_unpaired; TRL 1.16's sigmoid loss ignores it (there
is no separate cDPO loss), so for noisy labels use `--loss_type robust --label_smoothing 0.1`.
"""

from dataclasses import dataclass, field

from trl import DPOConfig as TRLDPOConfig

from rlhf_args.base_config import BaseConfig
from rlhfkit.errors import ConfigError


@dataclass
class DPOConfig(BaseConfig, TRLDPOConfig):
    output_dir: str = field(
        default="output/dpo", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    beta: float = field(default=0.1, metadata={"help": "KL strength: higher keeps the policy closer to the reference "
                                                       "(paper: 0.1 to 0.5)"})
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"], metadata={"help": '"sigmoid" (DPO), "ipo", "robust", ...: above'})
    loss_types = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")  # TRL 1.16 DPOConfig help
    label_smoothing: float = field(default=0.0, metadata={"help": "robust: share of flipped labels, [0, 0.5), e.g. "
                                                                  "0.1; exo_pair: 1e-3; sigmoid: unused"})
    learning_rate: float = field(default=5e-5, metadata={"help": "LoRA: 5e-6 to 5e-5; full fine-tuning: 5e-7 to 1e-6"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer pairs are cut at the end (keep_start)"})
    rdpo_alpha: float = field(
        default=0.0, metadata={"help": "R-DPO (Park et al. 2024, eq. 9): + alpha x (|chosen| - |rejected|) tokens "
                                       "inside the sigmoid, so a longer chosen answer earns less margin; 0: off"})
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "full fine-tuning: score the reference once, then free it (less memory)"})

    def __post_init__(self):
        if self.rdpo_alpha < 0:
            raise ConfigError(f"--rdpo_alpha must be >= 0 (0: plain DPO), got {self.rdpo_alpha}")
        if self.rdpo_alpha and self.ld_alpha is not None:
            raise ConfigError("--rdpo_alpha and --ld_alpha both change how answer length counts; use one of them")
        if self.rdpo_alpha and "sigmoid_norm" in self.loss_type:
            raise ConfigError("--rdpo_alpha does nothing with --loss_type sigmoid_norm (R-DPO adds a bonus per answer "
                              "token, which sigmoid_norm's per-token averages cancel): drop one of the two")
        super().__post_init__()
