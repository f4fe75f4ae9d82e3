"""Everything the online methods (PPO, RLOO, GRPO) load besides the policy: rewards, value model, reference.

* Rewards: the reward model saved by reward_model.py (`--reward_model_path`, full or LoRA, loaded with its score
  head by `utils.reward.load_reward_model`) and/or a Python reward function (`--reward_function file.py:name`, TRL's
  signature `f(prompts, completions, completion_ids, **columns) -> list[float]`; see script/example_reward.py).
  Both score the decoded response re-rendered with the reward model's own tokenizer and chat template, exactly as it
  was trained, so a reward model with another tokenizer than the policy's works too.
* PPO's value model ("separate" layout): by default initialised from the reward model (Huang et al. 2024,
  arXiv:2403.17031, and TRL's example); from the policy checkpoint with a fresh head when there is no reward model
  or its tokenizer differs from the policy's (values are per policy token).
* `ppo_extra` / `rloo_extra` are train_rlhf.py's `extra` hooks: `(args, config, tokenizer) -> trainer kwargs`.
* `RLOOTrainer` / `GRPOTrainer`: TRL's, plus left truncation of prompts at `max_prompt_length` and a PNG of the
  score, KL and response-length curves.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from types import SimpleNamespace
from typing import Callable

import torch
import trl

from utils.data import prompt_data, sft_data
from utils.errors import ConfigError, PathNotFoundError
from utils.log import info_rank0
from utils.model import check_reward_model_path, is_adapter_dir, load_frozen_model, resolve_checkpoint
from utils.outputs import plot_log_history
from utils.samples import is_sampled_rollout, write_samples

# --------------------------------------------------------------------------------------------------------------
# Rewards


def load_reward_function(spec: str) -> Callable:
    """Import a reward function from `"path/to/file.py:name"` or `"package.module:name"`.

    Raises `ConfigError` (no ":name", no such module or function, not callable) or `PathNotFoundError` (no such
    file). Errors inside the user's file propagate with their traceback."""
    if ":" not in spec:
        raise ConfigError(f"--reward_function {spec!r}: expected FILE.py:NAME or MODULE:NAME")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise PathNotFoundError(f"--reward_function: no such file {where}")
        module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(where))[0], where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as error:
            raise ConfigError(f"--reward_function {spec!r}: no module {error.name!r} (for a file, give its path "
                              f"ending in .py)") from error
    if not hasattr(module, name):
        raise ConfigError(f"--reward_function: {where} has no function {name!r}")
    function = getattr(module, name)
    if not callable(function):
        raise ConfigError(f"--reward_function: {where}:{name} is not callable")
    return function


def check_online_settings(args, config) -> None:
    """train_rlhf.py's `check` step for PPO, RLOO and GRPO, run before any weights load.

    The reward model (and PPO's value model) folders exist, the reward function imports and is callable, and PPO's
    shared-base layouts have a LoRA policy. Raises `PathNotFoundError` or `ConfigError` naming the flag.
    """
    if config.reward_model_path:
        check_reward_model_path(config.reward_model_path)
    if config.reward_function:
        load_reward_function(config.reward_function)
    value_path = getattr(config, "value_model_path", None)
    if value_path:
        if not (os.path.isfile(os.path.join(value_path, "config.json")) or is_adapter_dir(value_path)):
            raise PathNotFoundError(f"--value_model_path {value_path}: no model there (no config.json / adapter_config"
                                    f".json); leave it unset to start the value model from the reward model")
        resolve_checkpoint(value_path)  # an adapter's base must be there too
    if getattr(config, "model_mode", "separate") != "separate" and args.train_mode == "full":
        raise ConfigError(f"--model_mode {config.model_mode} puts policy and value on one base as LoRA adapters: use "
                          f"--train_mode lora or qlora (or --model_mode separate for full fine-tuning)")


def ppo_prompt_data(args, config, tokenizer, too_long: str, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """PPO's data loader: `utils.data.prompt_data`, plus the check that one rollout's prompts are there and, with
    `--ptx_data_path`, of PPO-ptx's supervised rows (`ppo_ptx_data`).

    Raises `ConfigError` if the training set is smaller than one rollout (per_device_train_batch_size x
    gradient_accumulation_steps x num_mini_batches x processes), before any weights load.
    """
    train, held_out = prompt_data(args, config, tokenizer, too_long, log)
    if config.ptx_data_path:  # PPO-ptx's rows are checked before any weights load too (ppo_extra reads them again)
        ppo_ptx_data(args, config, tokenizer)
    config.check_prompt_count(len(train))
    return train, held_out


def show_reward_probe(path: str) -> None:
    """Print the degenerate-answer probe saved with the reward model (rm_probe.json), if there is one."""
    try:
        from utils import rm_probe

        if hasattr(rm_probe, "print_saved_probe"):
            rm_probe.print_saved_probe(path)
    except Exception as e:  # the probe is informative only; never block training on it
        info_rank0(f"[reward model] could not read the probe saved with {path}: {e}")


def load_rm(path: str, config):
    """The reward model as one `PreTrainedModel` (a LoRA adapter merged in) + its tokenizer, frozen, on CPU (the
    trainer places it), in the run's compute dtype."""
    from utils.reward import load_reward_model

    model, tokenizer = load_reward_model(path, device="cpu", config=config, merge=True)
    model.config._name_or_path = path  # TRL names the reward after it: rewards/<dir name>/mean
    return model, tokenizer


def same_vocabulary(a, b) -> bool:
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


# --------------------------------------------------------------------------------------------------------------
# PPO's value model and reference model


def load_value_model(path: str, args, config, tokenizer, train_mode: str):
    """A `*ForSequenceClassification(num_labels=1)` value model from `path`, trainable in `train_mode`.

    `path` is a full checkpoint (a reward model, or a causal LM that gets a fresh score head) or a LoRA reward model
    from reward_model.py. LoRA / QLoRA: a LoRA reward adapter keeps training as the value adapter (with its score
    head); a full checkpoint gets a new LoRA adapter (the policy's LoRA settings) plus a trainable head.
    Full: every weight trains (a LoRA reward adapter is merged first)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification

    from utils.model import load_model, lora_config

    base_path = resolve_checkpoint(path).base
    base = load_model(AutoModelForSequenceClassification,
                      dataclasses.replace(args, model_name_or_path=base_path, train_mode=train_mode), config,
                      tokenizer, num_labels=1)
    if train_mode == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if is_adapter_dir(path):
        model = PeftModel.from_pretrained(base, path, is_trainable=train_mode != "full")
        if train_mode == "full":  # PEFT froze the base weights; the merged model trains as a whole
            return model.merge_and_unload().requires_grad_(True)
        return model
    if train_mode == "full":
        return base
    return get_peft_model(base, lora_config(dataclasses.replace(args, train_mode=train_mode), "SEQ_CLS"))


def ppo_ptx_data(args, config, tokenizer) -> list[dict]:
    """PPO-ptx's supervised rows from `--ptx_data_path`: `utils.data.sft_data` on that file (any SFT shape: messages,
    ShareGPT, alpaca, prompt/completion), all rows, no eval split. Returns `[{"prompt": [...], "completion": [...]}]`;
    raises what `sft_data` raises (`DataFormatError`, `PathNotFoundError`, `ConfigError`)."""
    ptx_args = dataclasses.replace(args, train_data_path=config.ptx_data_path, train_data_ratios=None,
                                   eval_data_path=None, eval_split_size=0)
    limits = SimpleNamespace(seed=config.seed, max_length=config.max_prompt_length + config.response_length)
    rows, _ = sft_data(ptx_args, limits, tokenizer, "PPO-ptx keeps their first tokens", log=info_rank0)
    info_rank0(f"[PPO] ptx: {len(rows)} supervised rows from {config.ptx_data_path}, ptx_coef {config.ptx_coef}")
    return rows


def ppo_extra(args, config, tokenizer) -> dict:
    """train_rlhf.py's `extra` hook for PPO: reward model / adapter, reward function, value model, reference."""
    extra = {"reward_funcs": [load_reward_function(config.reward_function)] if config.reward_function else []}
    rm_path, rm_tokenizer = config.reward_model_path, None
    if rm_path:
        check_reward_model_path(rm_path)
        show_reward_probe(rm_path)
        from transformers import AutoTokenizer

        rm_tokenizer = AutoTokenizer.from_pretrained(rm_path)
        extra["reward_processing_class"] = rm_tokenizer
        adapter_base = resolve_checkpoint(rm_path).base if is_adapter_dir(rm_path) else None
        if (config.model_mode in ("adapters", "shared") and adapter_base
                and os.path.realpath(adapter_base) == os.path.realpath(args.model_name_or_path)):
            info_rank0(f"[PPO] reward model {rm_path}: a frozen LoRA adapter on the policy's base (one copy of the "
                       f"weights)")
            extra["reward_adapter_path"] = rm_path
        else:
            if config.model_mode in ("adapters", "shared"):
                info_rank0(f"[PPO] reward model {rm_path} is not a LoRA adapter on {args.model_name_or_path}: "
                           f"loaded as a separate model")
            extra["reward_model"] = load_rm(rm_path, config)[0]
    if config.ptx_data_path:
        extra["ptx_dataset"] = ppo_ptx_data(args, config, tokenizer)
    if config.model_mode == "separate" and config.uses_critic:
        value_path = config.value_model_path or rm_path
        if value_path == rm_path and (rm_tokenizer is None or not same_vocabulary(rm_tokenizer, tokenizer)):
            if rm_path:
                info_rank0(f"[PPO] the reward model's tokenizer differs from the policy's: the value model starts "
                           f"from the policy checkpoint with a fresh head instead")
            value_path = args.model_name_or_path
        value_mode = config.value_train_mode or args.train_mode
        info_rank0(f"[PPO] value model: {value_path} ({value_mode})")
        extra["value_model"] = load_value_model(value_path, args, config, tokenizer, value_mode)
    if config.model_mode == "separate" and args.train_mode == "full" and (config.kl_coef > 0 or config.kl_target):
        # fp32 weights like the fully fine-tuned policy's (load_model), so that KL(policy || reference) starts at 0
        extra["ref_model"] = load_frozen_model(args.model_name_or_path, config, task_type="CAUSAL_LM",
                                               tokenizer=tokenizer, dtype=torch.float32)
    return extra


# --------------------------------------------------------------------------------------------------------------
# RLOO and GRPO: TRL's trainers, with this toolkit's rewards, prompt truncation and curves


def rloo_extra(args, config, tokenizer) -> dict:
    """train_rlhf.py's `extra` hook for RLOO / GRPO: `reward_funcs` (reward model and/or function) and their
    tokenizers (TRL renders prompt + completion with each reward model's own chat template)."""
    funcs, tokenizers = [], []
    if config.reward_model_path:
        check_reward_model_path(config.reward_model_path)
        show_reward_probe(config.reward_model_path)
        model, rm_tokenizer = load_rm(config.reward_model_path, config)
        funcs.append(model)
        tokenizers.append(rm_tokenizer)
    if config.reward_function:
        funcs.append(load_reward_function(config.reward_function))
        tokenizers.append(None)
    if config.missing_eos_penalty:  # one more reward, as PPO subtracts it from the score
        funcs.append(missing_eos_reward(tokenizer.eos_token_id, config.missing_eos_penalty))
        tokenizers.append(None)
    if config.min_new_tokens:  # EOS suppressed for the first tokens, as in PPO (seed 002's trick)
        config.generation_kwargs = {"min_new_tokens": config.min_new_tokens, **(config.generation_kwargs or {})}
    return {"reward_funcs": funcs, "reward_processing_classes": tokenizers}


def missing_eos_reward(eos_token_id: int, penalty: float) -> Callable:
    """A reward function (TRL's signature) giving `-penalty` to each completion that does not end with
    `eos_token_id` (cut at the length limit) and 0 to the others: RLOO/GRPO's `--missing_eos_penalty`.
    TRL logs it as `rewards/missing_eos/mean`."""
    def missing_eos(prompts, completions, completion_ids, **kwargs) -> list[float]:
        return [0.0 if len(ids) and ids[-1] == eos_token_id else -penalty for ids in completion_ids]

    return missing_eos


class _OnlineExtras:
    """Left-truncate prompts at `args.max_prompt_length` tokens; write `online_curves.png` with the final model;
    write a few prompts with their answers to `samples.jsonl` every `sample_every` rollouts (`utils.samples`)."""

    curves = ("reward", "kl", "completions/mean_length", "completions/clipped_ratio")
    rollouts_done = 0

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.rollouts_done += 1
            if self.accelerator.is_main_process and is_sampled_rollout(self.rollouts_done, self.args.sample_every):
                self._write_samples(len(inputs) * self.accelerator.num_processes)
        return output

    def _write_samples(self, n_rollout: int) -> None:
        """The first `num_samples_logged` prompts of the rollout just scored, each with its `num_generations`
        answers, their total reward (TRL's weighted sum of the reward functions) and the KL TRL logged last."""
        group, logs = self.num_generations, self._logs
        n = min(n_rollout, self.args.num_samples_logged * group, len(logs["prompt"]))
        first = len(logs["prompt"]) - min(n_rollout, len(logs["prompt"]))
        weights = self.reward_weights.tolist()
        totals = [sum(w * v for w, v in zip(weights, values) if v == v)  # v == v skips NaN (a function gave None)
                  for values in zip(*(list(logs["rewards"][name])[first:first + n] for name in self.reward_func_names))]
        answers = [c[-1]["content"] if isinstance(c, list) else c for c in list(logs["completion"])[first:first + n]]
        kl = self._metrics["train"].get("kl") if self.beta else None
        write_samples(self.args.output_dir, self.state.global_step, self.rollouts_done,
                      list(logs["prompt"])[first:first + n], answers, totals, [kl[-1] if kl else None] * n,
                      "mean nats per token in the rollout (TRL's kl)" if self.beta else None)

    def _tokenize_prompts(self, prompts: list):
        prompt_ids, *rest = super()._tokenize_prompts(prompts)
        limit = getattr(self.args, "max_prompt_length", None)
        if limit:
            prompt_ids = [ids[-limit:] for ids in prompt_ids]
        return (prompt_ids, *rest)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.args.should_save and os.path.abspath(output_dir or self.args.output_dir) == os.path.abspath(
                self.args.output_dir):
            history = [{k: v for k, v in e.items() if k == "step" or k.removeprefix("eval_") in self.curves}
                       for e in self.state.log_history]
            plot_log_history(history, os.path.join(self.args.output_dir, "online_curves.png"),
                             title=type(self).__name__.removesuffix("Trainer"))


class RLOOTrainer(_OnlineExtras, trl.RLOOTrainer):
    """TRL's RLOOTrainer (REINFORCE Leave-One-Out, Ahmadian et al. 2024, arXiv:2402.14740) with prompt truncation."""


class GRPOTrainer(_OnlineExtras, trl.GRPOTrainer):
    """TRL's GRPOTrainer (Group Relative Policy Optimization, Shao et al. 2024, arXiv:2402.03300) with prompt
    truncation."""
