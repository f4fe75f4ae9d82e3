"""CPO-SimPO: the SimPO loss plus CPO's NLL term on the chosen answer (fe1ixxu/CPO_SIMPO; Xu et al. 2024 and
Meng et al. 2024) = TRL's CPO trainer with loss_type="simpo" and cpo_alpha > 0.

Needs: prompt/chosen/rejected pairs. No reference model, no reward model.
Loss: -log sigmoid(beta * [avg log pi(y_w|x) - avg log pi(y_l|x)] - simpo_gamma) + cpo_alpha * NLL(y_w|x).
`--beta` is beta (reward scale), `--simpo_gamma` the target margin gamma, `--cpo_alpha` the NLL weight.
The NLL term keeps the policy close to the chosen answers, which guards against the drift into repetitive text
that pure SimPO shows at high learning rates.
"""

from dataclasses import dataclass, field

from rlhf_args.cpo_config import CPOConfig
from rlhfkit.errors import ConfigError


@dataclass
class CPOSimPOConfig(CPOConfig):
    output_dir: str = field(
        default="output/cposimpo", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    loss_type: str = field(default="simpo", metadata={"help": 'must stay "simpo"'})
    beta: float = field(default=10.0, metadata={"help": "reward scale (CPO_SIMPO "
                                                        "training_configs/llama-3-8b-instruct-cpo-simpo.yaml: 10)"})
    simpo_gamma: float = field(default=5.4, metadata={"help": "target margin, gamma/beta = 0.54 (same file: 5.4)"})
    cpo_alpha: float = field(
        default=0.05, metadata={"help": "NLL weight on the chosen answer, must be > 0 (same file: 0.05)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "LoRA; full fine-tuning: 1e-6 (same file)"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer answers are cut at the end, the prompt is kept"})

    def __post_init__(self):
        if self.loss_type != "simpo" or self.cpo_alpha <= 0:
            raise ConfigError(f"--rlhf_type CPOSimPO means --loss_type simpo and --cpo_alpha > 0 (got --loss_type "
                              f"{self.loss_type} --cpo_alpha {self.cpo_alpha}); for --cpo_alpha 0 use --rlhf_type "
                              f"SimPO")
        super().__post_init__()
