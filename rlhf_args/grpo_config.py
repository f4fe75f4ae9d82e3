"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300), on TRL's `GRPOConfig`.

Needs: prompts, and a reward model from reward_model.py (`--reward_model_path`) and/or a Python reward function
(`--reward_function file.py:name`). No value model. For each prompt `num_generations` responses are sampled; a
response's advantage is its reward minus the group mean, divided by the group std (`scale_rewards`). TRL's default
has no KL term (`beta` 0, no reference model loaded); the loss is DAPO's token-level clipped surrogate
(Yu et al. 2025). Each device step holds per_device_train_batch_size / num_generations prompts.

The reward fields shared with PPO and RLOO (`reward_model_path`, `reward_function`, `max_prompt_length`,
`min_new_tokens`, `missing_eos_penalty`) are in `rlhf_args/online_config.py` (`OnlineConfig`); set them here or on
the command line as any other field.
"""

from dataclasses import dataclass, field

from trl import GRPOConfig as TRLGRPOConfig

from rlhf_args.online_config import OnlineConfig


@dataclass
class GRPOConfig(OnlineConfig, TRLGRPOConfig):
    output_dir: str = field(
        default="output/grpo", metadata={"help": "where the policy (model/adapter), curves and checkpoints go"})
    num_generations: int | None = field(
        default=4, metadata={"help": "group size, >= 2, must divide the batch (TRL default 8; paper: 64)"})
    max_completion_length: int | None = field(
        default=256, metadata={"help": "max new tokens per response (TRL default 512)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (TRL default 1.0)"})
    beta: float = field(
        default=0.0, metadata={"help": "KL penalty; 0 loads no reference model (TRL default; paper: 0.04)"})
    loss_type: str = field(
        default="dapo", metadata={"help": '"dapo" (TRL default), "grpo" (paper), "dr_grpo", "bnpo", ...'})
    loss_types = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16 GRPOConfig help
    learning_rate: float = field(
        default=1e-5, metadata={"help": "LoRA (toolkit); full fine-tuning: 1e-6 (TRL default)"})
