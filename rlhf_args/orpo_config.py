"""ORPO: Odds Ratio Preference Optimization (Hong et al. 2024, arXiv:2403.07691), on top of TRL's `ORPOConfig`.

Needs: prompt/chosen/rejected pairs. No reference model, no reward model, and no SFT stage first: ORPO does SFT
and preference alignment in one loss, so it can start from a base model.
Loss: NLL(y_w|x) - beta * log sigmoid(log odds(y_w|x) - log odds(y_l|x)), odds(y|x) = p / (1 - p) with p the
length-normalised (per-token mean) probability of the answer. `--beta` is the paper's lambda.
"""

from dataclasses import dataclass, field

from trl.experimental.orpo import ORPOConfig as TRLORPOConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class ORPOConfig(BaseConfig, TRLORPOConfig):
    output_dir: str = field(
        default="output/orpo", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    beta: float = field(default=0.1, metadata={"help": "lambda, weight of the odds-ratio term (paper; xfactlab/orpo "
                                                       "run_mistral_orpo_beta.sh: 0.1)"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "LoRA; full fine-tuning: 5e-6 (Mistral-ORPO-beta, run_mistral_orpo_beta.sh)"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer answers are cut at the end, the prompt is kept"})
