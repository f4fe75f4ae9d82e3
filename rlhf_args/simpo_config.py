"""SimPO: Simple Preference Optimization (Meng et al. 2024, arXiv:2405.14734) = TRL's CPO trainer with
loss_type="simpo" and cpo_alpha=0.

Needs: prompt/chosen/rejected pairs. No reference model, no reward model.
Loss: -log sigmoid(beta * [avg log pi(y_w|x) - avg log pi(y_l|x)] - simpo_gamma), where avg log pi is the mean
log-probability per answer token (length normalisation: long answers earn no extra reward).

Which flag is what: `--beta` is the paper's beta (reward scale; SimPO needs a much larger beta than DPO, 2 to 10);
`--simpo_gamma` is the paper's gamma, the target reward margin, in the same units as beta * avg log-prob.
The SimPO repository tunes gamma through gamma_beta_ratio = simpo_gamma / beta (0.55 here; try 0 to 1).

Collapse into repetition or gibberish is almost always a too-high learning rate (SimPO README: "A large learning
rate (e.g., 1e-5) can significantly degrade performance ... incoherent sentences or completely repetitive
responses"; they grid-search 3e-7, 5e-7, 1e-6 for full fine-tuning). Lower `--learning_rate` first; CPO-SimPO
(cposimpo_config.py) adds an NLL term on the chosen answers that also counters it.
"""

from dataclasses import dataclass, field

from rlhf_args.cpo_config import CPOConfig
from rlhfkit.errors import ConfigError


@dataclass
class SimPOConfig(CPOConfig):
    output_dir: str = field(
        default="output/simpo", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    loss_type: str = field(
        default="simpo", metadata={"help": 'must stay "simpo" (length-normalised reward with a target margin)'})
    cpo_alpha: float = field(default=0.0, metadata={"help": "no NLL term: that is what separates SimPO from CPO-SimPO"})
    beta: float = field(default=2.5, metadata={"help": "reward scale; SimPO README, Llama3-Instruct and "
                                                       "Mistral-Instruct rows: 2.5 (base models: 2.0)"})
    simpo_gamma: float = field(default=1.375, metadata={"help": "target margin gamma = 0.55 * beta (SimPO README, "
                                                                "Llama3-Instruct: gamma/beta 0.55)"})
    learning_rate: float = field(
        default=1e-5, metadata={"help": "LoRA; full fine-tuning: 3e-7 to 1e-6 (SimPO README); higher -> repetition"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer answers are cut at the end, the prompt is kept"})

    def __post_init__(self):
        if self.loss_type != "simpo" or self.cpo_alpha != 0:
            raise ConfigError(f"--rlhf_type SimPO means --loss_type simpo and --cpo_alpha 0 (got --loss_type "
                              f"{self.loss_type} --cpo_alpha {self.cpo_alpha}); cpo_alpha=0 is what separates it "
                              f"from CPO-SimPO: for an NLL term use --rlhf_type CPOSimPO, for other losses "
                              f"--rlhf_type CPO")
        super().__post_init__()
