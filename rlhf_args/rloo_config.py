"""RLOO: REINFORCE Leave-One-Out (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019), on TRL's `RLOOConfig`.

Needs: prompts, and a reward model from reward_model.py (`--reward_model_path`) and/or a Python reward function
(`--reward_function file.py:name`). No value model. For each prompt `num_generations` responses are sampled; the
advantage of one is its reward minus the mean reward of the others (the leave-one-out baseline). The KL penalty
(`beta`) against the reference (LoRA/QLoRA: the policy with its adapter off) is subtracted from the sequence reward.
Each device step holds per_device_train_batch_size / num_generations prompts.

The reward fields shared with PPO and GRPO (`reward_model_path`, `reward_function`, `max_prompt_length`,
`min_new_tokens`, `missing_eos_penalty`) are in `rlhf_args/online_config.py` (`OnlineConfig`); set them here or on
the command line as any other field.
"""

from dataclasses import dataclass, field

from trl import RLOOConfig as TRLRLOOConfig

from rlhf_args.online_config import OnlineConfig


@dataclass
class RLOOConfig(OnlineConfig, TRLRLOOConfig):
    output_dir: str = field(
        default="output/rloo", metadata={"help": "where the policy (model/adapter), curves and checkpoints go"})
    num_generations: int | None = field(
        default=2, metadata={"help": "responses per prompt, >= 2 (TRL default 2; Ahmadian et al. 2024: k = 2 or 4)"})
    max_completion_length: int | None = field(
        default=256, metadata={"help": "max new tokens per response (TRL default 512)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (TRL default 1.0)"})
    beta: float = field(default=0.05, metadata={"help": "KL penalty on the sequence reward (TRL default 0.05); 0 "
                                                        "loads no reference model"})
    learning_rate: float = field(
        default=1e-5, metadata={"help": "LoRA (toolkit); full fine-tuning: 1e-6 (TRL default)"})
