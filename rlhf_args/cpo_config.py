"""CPO: Contrastive Preference Optimization (Xu et al. 2024, arXiv:2401.08417), on top of TRL's `CPOConfig`.

Needs: prompt/chosen/rejected pairs. No reference model, no reward model (reference-free: half the memory of DPO).
Loss (loss_type="sigmoid"): -log sigmoid(beta * [log pi(y_w|x) - log pi(y_l|x)])  +  cpo_alpha * NLL(y_w|x),
with log pi summed over the answer tokens and NLL the mean token cross-entropy of the chosen answer (the
behaviour-cloning term that keeps the policy on the chosen answers). `--beta` is beta; `--cpo_alpha` is the NLL weight.

SimPO and CPO-SimPO are the same trainer with other defaults: see simpo_config.py and cposimpo_config.py.
"""

from dataclasses import dataclass, field

from trl.experimental.cpo import CPOConfig as TRLCPOConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class CPOConfig(BaseConfig, TRLCPOConfig):
    output_dir: str = field(
        default="output/cpo", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    loss_type: str = field(default="sigmoid", metadata={"help": '"sigmoid" (CPO paper eq. 3), "hinge", "ipo", '
                                                                '"simpo" (length-normalised + margin)'})
    loss_types = ("sigmoid", "hinge", "ipo", "simpo")  # what TRL 1.16 CPOTrainer.cpo_loss accepts
    beta: float = field(
        default=0.1, metadata={"help": "temperature of the preference term (CPO paper and ALMA-R runs/cpo_ft.sh: 0.1)"})
    cpo_alpha: float = field(default=1.0, metadata={"help": "weight of the NLL term on the chosen answer (CPO paper: "
                                                            "L_prefer + L_NLL, i.e. 1.0)"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "> 0 assumes that share of labels is flipped (sigmoid / simpo losses only)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "LoRA: 1e-4 as in ALMA-R (fe1ixxu/ALMA "
                                                                 "runs/cpo_ft.sh); full fine-tuning: ~1e-6"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer answers are cut at the end, the prompt is kept"})
