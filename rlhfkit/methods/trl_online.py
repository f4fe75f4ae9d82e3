"""RLOO and GRPO for train_rlhf.py: their run (`rloo_grpo_trainer`: prompts -> reward sources -> policy, reward
model -> trainer) and TRL's trainers with what this toolkit adds to every online method: prompts left-truncated at
`max_prompt_length` tokens, the score's correlation with answer length logged per rollout and, with
`--length_control batch`, its length trend removed before the advantages; `samples.jsonl` every `sample_every`
rollouts (`rlhfkit.report.samples`), and `online_curves.png` (score, KL, answer length, share cut at the cap)
written with the final model.
"""

from __future__ import annotations

import os

import torch
import trl
from transformers import AutoModelForCausalLM

from rlhfkit.data.prompts import prompt_data
from rlhfkit.log import show_dataset_progress
from rlhfkit.methods.online import online_inputs, rloo_models
from rlhfkit.methods.trainer_inputs import trainer_inputs
from rlhfkit.model import load_model
from rlhfkit.outputs import plot_log_history
from rlhfkit.report.preflight import preflight
from rlhfkit.report.samples import is_sampled_rollout, write_samples
from rlhfkit.reward import remove_length_trend, tensor_pearson


def rloo_grpo_trainer(rlhf_type: str, args, config, tokenizer) -> tuple[object, list[dict]] | None:
    """Steps 1-3 of an RLOO or GRPO run (`rlhf_type`): the prompts, the reward sources (checked against them), the
    policy and the reward model, the trainer. Returns `(trainer, eval_rows)`, or None with `--check` (the preflight
    report printed, no weights loaded). Raises a `UserError` for bad input before any weights load.
    """
    # 1. Data: the prompts, then the reward model's folder and the reward function (its gold columns in the rows).
    train_rows, eval_rows = prompt_data(args, config, tokenizer, f"{rlhf_type}Trainer keeps their last tokens")
    sources = online_inputs(args, config, tokenizer, train_rows + eval_rows)
    if args.check:  # --check: show what would be trained, load no weights
        preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, rlhf_type)
        return None
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Models: the policy (LoRA: the reference is the policy with its adapter off), the reward model.
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    rewards = rloo_models(args, config, tokenizer, **sources)

    # 3. Trainer.
    inputs = trainer_inputs(model, args, config, tokenizer, train_rows, eval_rows)
    if rlhf_type == "RLOO":
        return RLOOTrainer(**inputs, **rewards), eval_rows
    return GRPOTrainer(**inputs, **rewards), eval_rows


class OnlineExtras:
    """Left-truncate prompts at `args.max_prompt_length` tokens; write `online_curves.png` with the final model;
    write a few prompts with their answers to `samples.jsonl` every `sample_every` rollouts (`rlhfkit.report.samples`).
    """

    curves = ("reward", "kl", "completions/mean_length", "completions/clipped_ratio")
    rollouts_done = 0

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.rollouts_done += 1
            if self.accelerator.is_main_process and is_sampled_rollout(self.rollouts_done, self.args.sample_every):
                self._write_samples(len(inputs) * self.accelerator.num_processes)
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards (every process's answers, one column per reward function), then the correlation of the
        summed score with answer length is logged and, with `--length_control batch`, the sum's length trend is
        removed (`rlhfkit.reward.remove_length_trend`; the shift goes into the first column, so TRL's weighted sum is
        the detrended one). The missing-EOS penalty is not part of the score here and is left as it is.
        """
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        scored = [i for i, name in enumerate(self.reward_func_names) if name != "missing_eos"]
        if not scored:
            return rewards
        lengths = self.accelerator.gather(torch.tensor([len(ids) for ids in completion_ids_list],
                                                       device=rewards.device)).float()
        weights = self.reward_weights.to(rewards.device)[scored]
        score = (rewards[:, scored] * weights).nansum(1)
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["completions/score_length_corr"].append(tensor_pearson(score, lengths).item())
        if self.args.length_control == "batch":
            adjusted, slope = remove_length_trend(score, lengths)
            rewards[:, scored[0]] += (adjusted - score) / weights[0]
            metrics["length_control/slope"].append(slope)
            metrics["length_control/mean_abs_change"].append((adjusted - score).abs().mean().item())
        return rewards

    def _write_samples(self, n_rollout: int) -> None:
        """The first `num_samples_logged` prompts of the rollout just scored, each with its `num_generations`
        answers, their total reward (TRL's weighted sum of the reward functions) and the KL TRL logged last.
        """
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


class RLOOTrainer(OnlineExtras, trl.RLOOTrainer):
    """TRL's RLOOTrainer (REINFORCE Leave-One-Out, Ahmadian et al. 2024, arXiv:2402.14740) with prompt truncation."""


class GRPOTrainer(OnlineExtras, trl.GRPOTrainer):
    """TRL's GRPOTrainer (Group Relative Policy Optimization, Shao et al. 2024, arXiv:2402.03300) with prompt
    truncation.
    """
