"""PPO: Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) for RLHF (Ziegler et al. 2019,
arXiv:1909.08593; Ouyang et al. 2022), trained by this toolkit's own `rlhfkit.ppo.trainer.PPOTrainer`
(TRL 1.16 has no PPO any more). Field names and defaults follow TRL's last `PPOConfig` so old runs compare directly;
changes are marked "toolkit".

Needs: prompts, a reward model from reward_model.py (`--reward_model_path`) and/or a Python reward function
(`--reward_function file.py:name`), a reference model (LoRA/QLoRA: the policy with its adapter off) and a value
model (default: initialised from the reward model). One rollout = per_device_train_batch_size x
gradient_accumulation_steps x num_mini_batches prompts per process, then num_ppo_epochs x num_mini_batches optimizer
steps on it. Per-token reward: -kl_coef * KL(policy || reference) on every response token, plus the reward-model
score on the last real token; advantages by GAE (Schulman et al. 2016, arXiv:1506.02438) or, without a value model,
REINFORCE++ (Hu 2025, arXiv:2501.03262).

The fields shared with RLOO and GRPO (`reward_model_path`, `reward_function`, `max_prompt_length`,
`min_new_tokens`, `missing_eos_penalty`, `sample_every`, `num_samples_logged`, `length_control`) are in
`rlhf_args/online_config.py` (`OnlineConfig`); set them here or on the command line as any other field.
"""

import math
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from rlhf_args.online_config import OnlineConfig
from rlhfkit.errors import ConfigError


@dataclass
class PPOConfig(OnlineConfig, TrainingArguments):
    output_dir: str = field(
        default="output/ppo", metadata={"help": "where the policy (model/adapter), curves and checkpoints go"})
    # --- models
    model_mode: Literal["separate", "adapters", "shared"] = field(
        default="separate", metadata={"help": '"separate": policy, value model, RM; "adapters": one base + '
                                              'policy/value LoRA adapters; "shared": one adapter for policy and '
                                              "value, the value head on the policy's last hidden state (toolkit; "
                                              'see rlhfkit/ppo/models.py, adapters.py)'})
    value_model_path: str | None = field(
        default=None, metadata={"help": "None: the reward model (critic initialised from the RM: TRL, Huang et al.)"})
    value_train_mode: Literal["full", "lora", "qlora"] | None = field(
        default=None, metadata={"help": 'None: as --train_mode; "full": whole value model trained under a LoRA policy'})
    save_value_model: bool = field(
        default=False, metadata={"help": "also write the value model (or value adapter + head) to output_dir/value/"})
    value_learning_rate: float | None = field(
        default=None, metadata={"help": "critic's learning rate; None: learning_rate (OpenRLHF: 9e-6 vs 1e-6)"})
    value_weight_decay: float | None = field(
        default=None, metadata={"help": "critic's weight decay; None: weight_decay (OpenRLHF, safe-rlhf: separate)"})
    # --- batch sizes and length of the run
    per_device_train_batch_size: int = field(default=8, metadata={"help": "prompts per micro-batch (TRL default 8)"})
    num_mini_batches: int = field(
        default=1, metadata={"help": "mini-batches per rollout; each is one optimizer step (TRL default 1)"})
    num_ppo_epochs: int = field(
        default=4, metadata={"help": "passes over each rollout (TRL default 4; Ouyang et al. 2022: 4)"})
    num_samples_per_prompt: int = field(
        default=1, metadata={"help": "responses per prompt in a rollout, which keeps its size (OpenRLHF default 1)"})
    total_episodes: int | None = field(
        default=None, metadata={"help": "prompts to roll out in total; None: num_train_epochs x dataset size (TRL)"})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "sequences per no-grad generate/forward chunk (TRL default 64)"})
    learning_rate: float = field(
        default=1e-5, metadata={"help": "LoRA (toolkit); full fine-tuning: 3e-6 (TRL #5174) to 1e-6 (OpenRLHF)"})
    # --- sampling
    response_length: int = field(
        default=53, metadata={"help": "max new tokens per response (TRL default 53, from lm-human-preferences)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature; training log-probs use the same "
                                                              "scaling (TRL default 0.7)"})
    stop_token: Literal["eos", "none"] = field(
        default="eos", metadata={"help": "\"eos\": stop at the tokenizer's EOS (toolkit); \"none\": response_length "
                                         "tokens (old TRL)"})
    stop_token_id: int | None = field(default=None, metadata={"help": "stop at this token id instead of the EOS"})
    # --- reward shaping
    kl_coef: float = field(
        default=0.05, metadata={"help": "KL penalty per nat (TRL default 0.05; Ouyang et al. 2022: 0.02)"})
    kl_estimator: Literal["k1", "k2", "k3"] = field(
        default="k1", metadata={"help": '"k1" (log-ratio, TRL default), "k2" or "k3" (always >= 0), see '
                                        'rlhfkit/ppo/core.py'})
    kl_target: float | None = field(default=None, metadata={"help": "e.g. 6.0: adapt kl_coef so the per-response KL "
                                                                    "tracks it (Ziegler et al. 2019)"})
    kl_horizon: float = field(default=10000, metadata={"help": "adaptive KL horizon in episodes (Ziegler et al. 2019)"})
    reward_clip: float | None = field(
        default=None, metadata={"help": "clip scores to [-c, c] (safe-rlhf uses 50, OpenRLHF 10); None: no clipping"})
    normalize_scores: bool = field(default=False, metadata={"help": "standardise scores with their running mean/std "
                                                                    "over all rollouts (safe-rlhf)"})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "scale per-token rewards to unit variance, mean kept (TRL default False)"})
    # --- advantages
    advantage_estimator: Literal["gae", "reinforce_pp"] = field(
        default="gae", metadata={"help": '"gae" (critic, Schulman et al. 2016) or "reinforce_pp" (no critic, Hu 2025)'})
    # --- PPO loss
    whiten_advantages: bool = field(
        default=True, metadata={"help": "advantages to mean 0 / std 1 per rollout (Huang et al. 2024, detail 7)"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip (Schulman et al. 2017)"})
    vf_coef: float = field(default=0.1, metadata={"help": "value-loss weight (TRL default 0.1)"})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "value clip around the rollout values, in reward units (TRL default 0.2)"})
    gamma: float = field(default=1.0, metadata={"help": "discount (TRL / Huang et al. 2024)"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (TRL default 0.95; OpenRLHF uses 1.0)"})
    ptx_data_path: str | None = field(
        default=None, metadata={"help": "SFT rows (messages, prompt/completion, ...) for PPO-ptx (Ouyang et al. 2022)"})
    ptx_coef: float = field(default=0.05, metadata={"help": "weight of the policy's LM loss on a ptx batch, with "
                                                            "ptx_data_path (OpenRLHF default 0.05)"})
    # --- other
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run code shipped with a checkpoint (TRL's field; off for safety)"})
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "ZeRO-3: gather the weights for generation (TRL default True)"})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "keep extra data columns: they are passed to reward functions"})
    eval_on_start: bool = field(default=True, metadata={"help": "score the eval prompts before training too, so the "
                                                                "eval score shows the change"})
    logging_steps: float = field(
        default=4, metadata={"help": "log every N optimizer steps (with defaults: once per rollout)"})

    def __post_init__(self):
        """Check the PPO settings, after the shared ones (`check_training_values`: sizes >= 1, choices, ...)."""
        super().__post_init__()
        if self.total_episodes and self.max_steps <= 0:  # TRL's run length, in optimizer steps for the Trainer
            rollouts = math.ceil(self.total_episodes / (self.prompts_per_rollout * self.world_size))
            self.max_steps = rollouts * self.optimizer_steps_per_rollout
        if not self.uses_critic and (self.save_value_model or self.value_learning_rate is not None
                                     or self.value_weight_decay is not None or self.value_model_path):
            raise ConfigError("--advantage_estimator reinforce_pp trains no value model: drop --save_value_model, "
                              "--value_model_path, --value_learning_rate and --value_weight_decay")
        if self.value_model_path and self.model_mode != "separate":
            raise ConfigError(f"--value_model_path is for --model_mode separate; {self.model_mode} builds its value "
                              f"model on the policy's base (from the reward adapter, or fresh)")
        if self.value_learning_rate is not None and self.value_learning_rate <= 0:
            raise ConfigError(f"--value_learning_rate must be > 0, got {self.value_learning_rate}")
        if self.value_weight_decay is not None and self.value_weight_decay < 0:
            raise ConfigError(f"--value_weight_decay must be >= 0, got {self.value_weight_decay}")
        if self.ptx_coef < 0:
            raise ConfigError(f"--ptx_coef must be >= 0, got {self.ptx_coef}")
        if self.rollout_batch_size % self.num_samples_per_prompt:
            raise ConfigError(f"--num_samples_per_prompt {self.num_samples_per_prompt} must divide the rollout's "
                              f"{self.rollout_batch_size} responses (--per_device_train_batch_size x "
                              f"--gradient_accumulation_steps x --num_mini_batches)")
        if self.max_prompt_length is None:
            raise ConfigError("--max_prompt_length: PPO needs a prompt length limit (in tokens), got None")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0 (PPO samples), got {self.temperature}")

    @property
    def optimizer_steps_per_rollout(self) -> int:
        """num_mini_batches x num_ppo_epochs: the optimizer steps made on one rollout."""
        return self.num_mini_batches * self.num_ppo_epochs

    @property
    def rollout_batch_size(self) -> int:
        """Responses per rollout on one process: micro-batch x accumulation x mini-batches."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def prompts_per_rollout(self) -> int:
        """Distinct prompts per rollout on one process: rollout_batch_size / num_samples_per_prompt."""
        return self.rollout_batch_size // max(self.num_samples_per_prompt, 1)

    def check_prompt_count(self, n_prompts: int) -> None:
        """Raise `ConfigError` if `n_prompts` training prompts cannot fill one rollout on every process."""
        per_rollout = self.prompts_per_rollout * self.world_size
        if n_prompts < per_rollout:
            raise ConfigError(f"one rollout takes {per_rollout} prompts (--per_device_train_batch_size x "
                              f"--gradient_accumulation_steps x --num_mini_batches x processes / "
                              f"--num_samples_per_prompt) but the training set has {n_prompts}; lower those settings "
                              f"or add prompts")

    @property
    def uses_critic(self) -> bool:
        """True when the advantage estimator needs a value model (GAE)."""
        return self.advantage_estimator == "gae"
