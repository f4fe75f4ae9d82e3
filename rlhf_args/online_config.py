"""What PPO, RLOO and GRPO share on top of `BaseConfig`: the reward sources, the prompt length, the guards against
degenerate answers and the logged samples. Each online method's config is `class XConfig(OnlineConfig, trl.XConfig)`.
"""

from dataclasses import dataclass, field
from typing import Literal

from common_args import check_reward_sources
from rlhf_args.base_config import BaseConfig
from rlhfkit.errors import ConfigError


@dataclass
class OnlineConfig(BaseConfig):
    """What PPO, RLOO and GRPO share: where the reward comes from, how long a prompt may be, and the two guards
    against a reward model that loves degenerate answers (docs/online-rl.md, "Reward hacking").
    """

    reward_model_path: str | None = field(
        default="output/reward_model", metadata={"help": 'reward_model.py output (full/LoRA); "none": functions only'})
    reward_function: str | None = field(default=None, metadata={"help": '"file.py:name" / "module:name", added to '
                                                                        'the score; the rows\' other columns, e.g. a '
                                                                        'gold answer, as keyword arguments '
                                                                        '(rlhfkit/verifiers.py)'})
    reward_ensemble: Literal["mean", "min", "mean_minus_std"] = field(
        default="mean", metadata={"help": 'several --reward_model_path folders (rm_a,rm_b): their scores\' mean, '
                                          'min or mean minus std (Coste et al. 2024)'})
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "prompts are left-truncated to this many tokens (toolkit; TRL: no limit)"})
    min_new_tokens: int = field(default=1, metadata={"help": "no EOS in the first N tokens: 1 forbids empty answers, "
                                                             "which weak RMs may love (toolkit)"})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "subtracted from the reward of answers cut at the length limit (TRL)"})
    sample_every: int = field(default=10, metadata={"help": "prompts, answers, scores, KL to "
                                                            "output_dir/samples.jsonl at rollout 1, 1+N, ...; 0: off"})
    num_samples_logged: int = field(
        default=4, metadata={"help": "prompts (each with its answer) written per sampled rollout"})
    length_control: Literal["none", "batch"] = field(
        default="none", metadata={"help": "batch: remove each rollout's linear trend of score on answer length "
                                          "before the advantages, so no answer earns anything by its length alone"})

    def __post_init__(self):
        super().__post_init__()
        check_reward_sources(self, f"{type(self).__name__.removesuffix('Config')} needs a reward: set")
        if self.min_new_tokens < 0:
            raise ConfigError(f"--min_new_tokens must be >= 0, got {self.min_new_tokens}")
        for name in ("sample_every", "num_samples_logged"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ConfigError(f"--missing_eos_penalty is subtracted, so it must be >= 0, got "
                              f"{self.missing_eos_penalty}")
