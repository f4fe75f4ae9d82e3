"""What the online methods (PPO, RLOO, GRPO) use besides the policy: rewards, PPO's value and reference models.

The online runs (`rlhfkit/ppo/run.py`, `rloo_grpo_trainer` in `trl_online.py`) call:
* `online_inputs` (step 1, no weights yet): checks the reward-model and value-model folders and the layout, prints
  the degenerate-answer probe saved with the reward model, imports the reward function (and checks the prompt rows
  hold its gold columns) and reads PPO-ptx's rows;
* `ppo_models` / `rloo_models` (step 2): load the reward model (and, for PPO, the value and reference models) and
  return the trainer's keyword arguments.
PPO's value model ("separate" layout) starts from the reward model (Huang et al. 2024, arXiv:2403.17031), or from the
policy checkpoint with a fresh head when there is no reward model or its tokenizer differs from the policy's.
"""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import torch

from rlhfkit.data.prompts import prompt_data
from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0
from rlhfkit.model import load_frozen_model, load_tokenizer, load_value_model
from rlhfkit.model_folders import is_adapter_dir, resolve_checkpoint, reward_model_paths
from rlhfkit.reward import (
    check_gold_columns,
    check_reward_model_path,
    load_reward_function,
    load_reward_model,
    missing_eos_reward,
)
from rlhfkit.reward_ensemble import RewardEnsemble


def ppo_prompt_data(args, config, tokenizer, too_long: str) -> tuple[list[dict], list[dict]]:
    """PPO's data loader: `rlhfkit.data.prompts.prompt_data`, and the check that one rollout's prompts are there. Raises
    `ConfigError` if the training set is smaller than one rollout on every process, before any weights load.
    """
    train, held_out = prompt_data(args, config, tokenizer, too_long)
    config.check_prompt_count(len(train))
    return train, held_out


def online_inputs(args, config, tokenizer, rows: list[dict]) -> dict:
    """Step 1 of PPO / RLOO / GRPO, before any weights load: the checks of the reward and value models' folders and
    of the layout, the saved probe (printed), the reward function (imported; its gold columns checked on the prompt
    `rows`) and PPO-ptx's rows (read and checked).

    Returns `{"reward_function": callable | None, "ptx_rows": list | None}`. Raises `PathNotFoundError`,
    `ConfigError` or `DataFormatError` naming the flag or the file.
    """
    if config.reward_model_path:
        check_reward_model_path(config.reward_model_path)
        from rlhfkit.report.probe_table import print_saved_probe  # here: a run with a reward function loads none

        for member in reward_model_paths(config.reward_model_path):
            print_saved_probe(member)
    value_path = getattr(config, "value_model_path", None)
    if value_path:
        check_reward_model_path(value_path, "--value_model_path")
    if getattr(config, "model_mode", "separate") != "separate" and args.train_mode == "full":
        raise ConfigError(f"--model_mode {config.model_mode} puts policy and value on one base as LoRA adapters: use "
                          f"--train_mode lora or qlora (or --model_mode separate for full fine-tuning)")
    ptx_rows = None
    if getattr(config, "ptx_data_path", None):  # PPO-ptx: any SFT shape, all rows, no eval split
        from rlhfkit.data.offline import sft_data  # here: only PPO-ptx reads SFT rows

        ptx_args = dataclasses.replace(args, train_data_path=config.ptx_data_path, train_data_ratios=None,
                                       eval_data_path=None, eval_split_size=0)
        limits = SimpleNamespace(seed=config.seed, max_length=config.max_prompt_length + config.response_length)
        ptx_rows = sft_data(ptx_args, limits, tokenizer, "PPO-ptx keeps their first tokens")[0]
        info_rank0(f"[PPO] ptx: {len(ptx_rows)} supervised rows from {config.ptx_data_path}, ptx_coef "
                   f"{config.ptx_coef}")
    reward_function = load_reward_function(config.reward_function) if config.reward_function else None
    if reward_function is not None:
        check_gold_columns(reward_function, rows, config.reward_function)
    return {"reward_function": reward_function, "ptx_rows": ptx_rows}


def same_vocabulary(a, b) -> bool:
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def ppo_models(args, config, tokenizer, reward_function=None, ptx_rows=None) -> dict:
    """Step 2 of PPO: the `PPOTrainer` keyword arguments: the reward model (a separate frozen model, or in the
    adapters / shared layouts a frozen adapter on the policy's base), the reward function, PPO-ptx's rows, the value
    model (separate layout) and, for full fine-tuning, the frozen reference.
    """
    extra = {"reward_funcs": [reward_function] if reward_function else [], "ptx_dataset": ptx_rows}
    rm_path, rm_tokenizer = config.reward_model_path, None
    if rm_path:
        adapter_base = resolve_checkpoint(rm_path).base if is_adapter_dir(rm_path) else None
        shares_base = adapter_base and os.path.realpath(adapter_base) == os.path.realpath(args.model_name_or_path)
        if config.model_mode in ("adapters", "shared") and shares_base:
            info_rank0(f"[PPO] reward model {rm_path}: a frozen LoRA adapter on the policy's base (one copy of the "
                       f"weights)")
            extra["reward_adapter_path"] = rm_path
            rm_tokenizer = load_tokenizer(rm_path)
        else:
            if config.model_mode in ("adapters", "shared"):
                info_rank0(f"[PPO] reward model {rm_path} is not one LoRA adapter on {args.model_name_or_path}: "
                           f"loaded as a separate model")
            extra["reward_model"], rm_tokenizer = load_reward_model(rm_path, "cpu", config, merge=True,
                                                                    ensemble=config.reward_ensemble)
        extra["reward_processing_class"] = rm_tokenizer
    if config.model_mode == "separate" and config.uses_critic:
        first_rm = rm_path and reward_model_paths(rm_path)[0]  # an ensemble's value model starts from its first
        value_path = config.value_model_path or first_rm
        if value_path == first_rm and (rm_tokenizer is None or not same_vocabulary(rm_tokenizer, tokenizer)):
            if rm_path:
                info_rank0("[PPO] the reward model's tokenizer differs from the policy's: the value model starts "
                           "from the policy checkpoint with a fresh head instead")
            value_path = args.model_name_or_path
        value_mode = config.value_train_mode or args.train_mode
        info_rank0(f"[PPO] value model: {value_path} ({value_mode})")
        extra["value_model"] = load_value_model(value_path, args, config, tokenizer, value_mode)
    if config.model_mode == "separate" and args.train_mode == "full" and (config.kl_coef > 0 or config.kl_target):
        # fp32 weights like the fully fine-tuned policy's (load_model), so that KL(policy || reference) starts at 0
        extra["ref_model"] = load_frozen_model(args.model_name_or_path, config, task_type="CAUSAL_LM",
                                               tokenizer=tokenizer, dtype=torch.float32)
    return extra


def rloo_models(args, config, tokenizer, reward_function=None, ptx_rows=None) -> dict:
    """Step 2 of RLOO / GRPO: TRL's `reward_funcs` (the reward model, merged if LoRA, and/or the function; with
    `--missing_eos_penalty` one more) and their tokenizers (TRL renders prompt + completion with each reward model's
    own chat template). `--min_new_tokens` goes into TRL's generation kwargs (EOS suppressed for the first tokens).
    """
    funcs, tokenizers = [], []
    if config.reward_model_path:
        model, rm_tokenizer = load_reward_model(config.reward_model_path, "cpu", config, merge=True,
                                                ensemble=config.reward_ensemble)
        if isinstance(model, RewardEnsemble):  # TRL places only PreTrainedModel rewards on the device
            model = model.to(config.device)
        funcs.append(model)
        tokenizers.append(rm_tokenizer)
    if reward_function:
        funcs.append(reward_function)
        tokenizers.append(None)
    if config.missing_eos_penalty:  # one more reward, as PPO subtracts it from the score
        funcs.append(missing_eos_reward(tokenizer.eos_token_id, config.missing_eos_penalty))
        tokenizers.append(None)
    if config.min_new_tokens:
        config.generation_kwargs = {"min_new_tokens": config.min_new_tokens, **(config.generation_kwargs or {})}
    return {"reward_funcs": funcs, "reward_processing_classes": tokenizers}
