"""PPO for RLHF on the stock `transformers.Trainer` loop (TRL 1.16 has no PPO any more); the maths is in core.py.

PPO (Schulman et al. 2017, arXiv:1707.06347) with GAE (arXiv:1506.02438), a per-token KL penalty against a reference
(Ziegler et al. 2019, arXiv:1909.08593) and Huang et al. 2024's details (arXiv:2403.17031): dropout off, critic from
the reward model, whitened advantages, EOS handling. With b / g / M / E / N = per_device_train_batch_size /
gradient_accumulation_steps / num_mini_batches / num_ppo_epochs / num_samples_per_prompt, each process's rollout:
1. generates N responses to each of b*g*M / N prompts (explicit `GenerationConfig`), masked up to the first EOS;
2. scores them: reward model (text re-rendered with its own tokenizer) + reward functions; EOS penalty, clip, norm;
3. recomputes old log-probs, values and reference log-probs, no grad (ratio 1 and KL 0 at the first step);
4. turns -kl_coef * KL_t + the score on the last real token into GAE (whitened) or REINFORCE++ advantages;
5. trains E epochs x M mini-batches x g micro-batches: M*E optimizer steps, token-mean losses (+ PPO-ptx).
The Trainer runs the loop, clipping, schedule, logging, checkpoints, DeepSpeed: its dataloader repeats the rollout's
prompts g*M*E times, `_prepare_inputs` builds the rollout on the first. Metrics keep TRL's names, computed masked.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import defaultdict

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, Trainer
from transformers.trainer_utils import get_last_checkpoint
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler, disable_dropout_in_model, entropy_from_logits, pad, selective_log_softmax

from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0
from rlhfkit.outputs import plot_log_history
from rlhfkit.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    compute_reinforce_pp,
    compute_rewards,
    masked_mean,
    masked_whiten,
    normalize_with_moments,
    ppo_policy_loss,
    ppo_value_loss,
    shape_scores,
    truncate_after_stop,
    update_running_moments,
)
from rlhfkit.ppo.models import PolicyAndValue, _is_peft, base_of, build_separate_model
from rlhfkit.report.samples import is_sampled_rollout, write_samples
from rlhfkit.reward import call_reward_function, remove_length_trend, reward_scorer, tensor_pearson

TRAINABLE_FILE = "ppo_trainable.safetensors"  # in checkpoint-N/: every trainable tensor (policy, value), for resume
STATE_FILE = "ppo_state.json"  # in checkpoint-N/: KL coefficient and running score statistics
CURVES = ("objective/scores", "objective/kl", "completions/mean_length", "objective/rlhf_reward")


def identity_collator(rows: list[dict]) -> list[dict]:
    """Rows stay python dicts: prompts are tokenised in the rollout."""
    return rows


class PPOTrainer(Trainer):
    """`transformers.Trainer` whose micro-batches are slices of on-policy rollouts; `args` is a `PPOConfig`.

    `model`: the policy causal LM, wrapped with `peft_config` (LoRA; needed by the adapters and shared layouts).
    Datasets have a `prompt` column; other columns go to `reward_funcs` (TRL's signature), added to the score of
    `reward_model` or of the frozen LoRA at `reward_adapter_path`. `value_model`: separate layout with GAE.
    `ref_model`: separate, full (None: a policy copy). `ptx_dataset`: PPO-ptx rows. ValueError: no pad token, reward.
    """

    loss_is_scaled_for_ga = True  # compute_loss divides by the mini-batch's token count itself

    # --- Construction
    def __init__(self, model, args, train_dataset, eval_dataset=None, processing_class=None, peft_config=None,
                 reward_model=None, reward_processing_class=None, reward_adapter_path=None, reward_funcs=None,
                 value_model=None, ref_model=None, ptx_dataset=None, callbacks=None, optimizers=(None, None)):
        tokenizer = processing_class
        if tokenizer is None or tokenizer.pad_token_id is None:
            raise ValueError("PPOTrainer needs the policy's tokenizer with a pad token (processing_class)")
        self.reward_funcs = list(reward_funcs or [])
        if model.generation_config is not None and getattr(model.generation_config, "suppress_tokens", None):
            info_rank0(f"[PPO] ignoring the checkpoint's generation_config (e.g. suppress_tokens="
                       f"{model.generation_config.suppress_tokens}): rollouts use an explicit GenerationConfig")
        wrapper, reward_model = self._build_models(model, args, peft_config, value_model, ref_model, reward_model,
                                                   reward_adapter_path)
        super().__init__(model=wrapper, args=args, data_collator=identity_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks,
                         optimizers=optimizers)
        self._place_frozen_models(reward_model, reward_processing_class or tokenizer)
        # Sampling: an explicit config, so nothing is inherited from the checkpoint's generation_config.
        self.stop_ids = ([args.stop_token_id if args.stop_token_id is not None else tokenizer.eos_token_id]
                         if args.stop_token == "eos" else None)
        min_new_tokens = (args.min_new_tokens or None) if self.stop_ids else None  # EOS suppression (seed 002)
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length, min_new_tokens=min_new_tokens, do_sample=True,
            temperature=args.temperature, top_k=0, top_p=1.0, eos_token_id=self.stop_ids,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, use_cache=True,
            return_dict_in_generate=True, output_logits=True)  # raw logits: the old log-probs, without a forward
        # Rollout bookkeeping.
        self.kl_ctl = (AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target
                       else FixedKLController(args.kl_coef))
        self.score_stats = {"count": 0, "mean": 0.0, "m2": 0.0}  # running score statistics (Welford)
        self.micro_steps_per_rollout = args.gradient_accumulation_steps * args.optimizer_steps_per_rollout
        self._step, self._rollout, self._micro_batches = 0, None, None
        self._metrics, self.rollouts_done = defaultdict(list), 0
        # Value forward + backward before the policy's (separate passes), so one pass's activations live at a time.
        # One process without DeepSpeed only: DDP / DeepSpeed expect one backward per forward (DeepSpeed steps in it).
        self.split_value_backward = (wrapper.has_value and wrapper.layout != "shared" and not self.is_deepspeed_enabled
                                     and self.accelerator.num_processes == 1 and args.n_gpu <= 1)
        self._value_loss_part = None  # the value phase's loss, added back to the logged loss in training_step
        self.ptx = None  # PPO-ptx: batches of supervised rows
        if ptx_dataset:
            from rlhfkit.ppo.ptx import PtxBatches  # here: only a PPO-ptx run reads supervised rows

            self.ptx = PtxBatches(ptx_dataset, tokenizer, args.max_prompt_length + args.response_length,
                                  args.per_device_train_batch_size, args.seed)
        per_rollout = args.optimizer_steps_per_rollout
        if args.save_strategy == "steps" and args.save_steps >= 1 and args.save_steps % per_rollout:
            info_rank0(f"[PPO] note: save_steps={args.save_steps} is not a multiple of the {per_rollout} optimizer "
                       f"steps per rollout; a run resumed from such a checkpoint samples the interrupted rollout anew")

    def _build_models(self, model, args, peft_config, value_model, ref_model, reward_model, reward_adapter_path):
        """`(PolicyAndValue, reward model)`; sets `use_ref` and `ref_model` (None: the PEFT base, adapters off)."""
        if args.model_mode in ("adapters", "shared"):
            from rlhfkit.ppo.adapters import build_adapters_model, build_shared_model  # here: for these layouts only

            build = build_adapters_model if args.model_mode == "adapters" else build_shared_model
            wrapper, adapter_rm = build(model, peft_config, reward_adapter_path, with_value=args.uses_critic)
            reward_model = adapter_rm if adapter_rm is not None else reward_model
        else:
            if args.uses_critic and value_model is None:
                raise ValueError("model_mode 'separate' needs a value_model (rlhfkit.methods.online.load_value_model)")
            wrapper = build_separate_model(model, peft_config, value_model if args.uses_critic else None)
        self.use_ref = args.kl_coef > 0 or args.kl_target is not None
        if self.use_ref and ref_model is None and not _is_peft(wrapper.policy):
            ref_model = copy.deepcopy(base_of(wrapper.policy))  # full fine-tuning: a frozen copy of the start
        self.ref_model = ref_model if self.use_ref and not _is_peft(wrapper.policy) else None
        if reward_model is None and not self.reward_funcs:
            raise ValueError("PPO needs a reward: a reward_model and/or reward_funcs")
        for m in [m for m in (wrapper, self.ref_model, reward_model) if m is not None]:
            disable_dropout_in_model(m)  # dropout would make old and new log-probs differ (Huang et al. 2024)
            if m is not wrapper:
                m.eval().requires_grad_(False)
        return wrapper, reward_model

    def _place_frozen_models(self, reward_model, reward_tokenizer) -> None:
        """Frozen models on the device (DeepSpeed: inference engines, ZeRO-3 sharded); `rm_score(prompts, texts)`."""
        device, a = self.accelerator.device, self.args
        if self.ref_model is not None:
            self.ref_model = (prepare_deepspeed(self.ref_model, self.accelerator) if self.is_deepspeed_enabled
                              else self.ref_model.to(device))
        self.rm_score = None
        if reward_model is not None:
            if hasattr(reward_model, "reward_head"):  # reward adapter: its backbone is inside the trained model
                reward_model.reward_head.to(device)
            elif self.is_deepspeed_enabled:
                reward_model = prepare_deepspeed(reward_model, self.accelerator)
            else:
                reward_model = reward_model.to(device)
            max_len = 2 * (a.max_prompt_length + a.response_length) + 64  # never cut the response off
            self.rm_score = reward_scorer(reward_model, reward_tokenizer, batch_size=a.local_rollout_forward_batch_size,
                                          max_length=max_len)
        self.reward_model = reward_model

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; `value_learning_rate` / `value_weight_decay` give the critic param groups of its
        own (one step and LR schedule for all). Parameters exempt from weight decay (biases, norms) stay exempt.
        """
        optimizer = super().create_optimizer(model)
        a = self.args
        if a.value_learning_rate is None and a.value_weight_decay is None:
            return optimizer
        module = self.accelerator.unwrap_model(self.model if model is None else model)
        names = {id(p): n for n, p in module.named_parameters()}
        value_names, decay_names = set(module.value_parameter_names()), set(self.get_decay_parameter_names(module))
        groups = []
        for group in optimizer.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            policy = [p for p in group["params"] if names[id(p)] not in value_names]
            value = [p for p in group["params"] if names[id(p)] in value_names]
            if policy:
                groups.append({**settings, "params": policy})
            if value:
                decays = names[id(value[0])] in decay_names and a.value_weight_decay is not None
                groups.append({**settings, "params": value,
                               "lr": a.value_learning_rate if a.value_learning_rate is not None else settings["lr"],
                               "weight_decay": a.value_weight_decay if decays else settings["weight_decay"]})
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    # --- Data: each dataloader item is the rollout's prompt batch, repeated once per micro-step.
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt"]

    def _get_train_sampler(self, dataset=None):
        a = self.args  # each prompt num_samples_per_prompt times in a row: its responses stay in one rollout
        return RepeatSampler(data_source=dataset if dataset is not None else self.train_dataset, shuffle=True,
                             mini_repeat_count=a.num_samples_per_prompt, seed=a.seed,
                             batch_size=a.prompts_per_rollout * a.world_size, repeat_count=self.micro_steps_per_rollout)

    def get_train_dataloader(self):
        return self._get_dataloader(dataset=self.train_dataset, description="Training",
                                    batch_size=self.args.rollout_batch_size, sampler_fn=self._get_train_sampler,
                                    is_training=True)

    def _prepare_inputs(self, rows: list[dict]) -> dict:
        """The next micro-batch: a new rollout every g*M*E micro-steps, a new shuffle every g*M."""
        a = self.args
        if self._rollout is None:  # first step, or resumed from a checkpoint
            self._step = self.state.global_step * a.gradient_accumulation_steps
        position = self._step % self.micro_steps_per_rollout
        per_epoch = a.gradient_accumulation_steps * a.num_mini_batches
        if position == 0 or self._rollout is None:
            self._rollout = self._make_rollout(rows)
            self._micro_batches = None
        if position % per_epoch == 0 or self._micro_batches is None:
            self._micro_batches = self._split(self._rollout)
        return self._micro_batches[position % per_epoch]

    def _split(self, rollout: dict) -> list[dict]:
        """Shuffle the rollout and cut it into M mini-batches of g micro-batches of b rows each."""
        a = self.args
        order = torch.randperm(len(rollout["mask"]), device=rollout["mask"].device)
        order = order.view(a.num_mini_batches, a.gradient_accumulation_steps, a.per_device_train_batch_size)
        micro = []
        for mini in order:  # each micro-batch carries its mini-batch's token count, the loss's denominator
            tokens = rollout["mask"][mini.flatten()].sum()
            micro += [{**{k: (v[rows] if torch.is_tensor(v) else v) for k, v in rollout.items()},
                       "minibatch_tokens": tokens} for rows in mini]
        return micro

    # --- Rollout: generate -> score -> log-probs, values, reference -> rewards -> advantages -> metrics
    @torch.no_grad()
    def _make_rollout(self, rows: list[dict]) -> dict:
        """One rollout of (B, R) tensors, no grad; logs the rollout metrics and updates the KL coefficient."""
        a = self.args
        # autocast as in training (accelerate patches only the wrapper's forward), so that the reference and old
        # log-probs have the precision of the new ones: ratio 1 and KL 0 at the first step.
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=a.ds3_gather_for_generation) as model, \
                self.accelerator.autocast():
            gen = self._generate(model, rows)
            mask = gen["mask"]
            attention_mask = torch.cat([gen["prompt_mask"], mask.long()], dim=1)
            batch = dict(input_ids=torch.cat([gen["prompt_ids"], gen["responses"]], dim=1),
                         attention_mask=attention_mask, position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0),
                         responses=gen["responses"], mask=mask, prompt_width=gen["prompt_ids"].shape[1])
            logprobs = gen["logprobs"]
            values, ref_logprobs = self._rollout_forward(model, batch, logprobs)
        score, shaped = self._shape_scores(gen)
        rewards, kl, advantages, returns = self._rewards_and_advantages(shaped, logprobs, ref_logprobs, values, mask)
        kl_sum = (kl * mask).sum(1)
        self._log_rollout(rows, gen, score, shaped, kl_sum, logprobs, values)
        self.kl_ctl.update(self.accelerator.gather(kl_sum).mean(), a.rollout_batch_size * a.world_size)
        return dict(batch, logprobs=logprobs, values=values, advantages=advantages, returns=returns, rewards=rewards,
                    ref_logprobs=ref_logprobs)

    def _generate(self, model: PolicyAndValue, rows: list[dict]) -> dict:
        """Sample and score: prompt_ids/_mask (B, P), responses/mask (B, R), ended (B,), scores per source, texts, and
        the (B, R) fp32 log-probs of the sampled tokens at `temperature`, from the sampling pass's raw logits (the
        rollout's old log-probs: no second policy forward).
        """
        a, tok = self.args, self.processing_class
        prompts = [row["prompt"] for row in rows]
        prompt_ids, prompt_mask = self._tokenize_prompts(prompts)
        width, n = prompt_ids.shape[1], a.local_rollout_forward_batch_size
        base = base_of(model.policy)  # generate() fills unset fields from the model's own config: make it ours
        saved, base.generation_config, responses, logprobs = base.generation_config, self.generation_config, [], []
        try:
            for s in range(0, len(rows), n):
                out = model.generate(input_ids=prompt_ids[s:s + n], attention_mask=prompt_mask[s:s + n],
                                     generation_config=self.generation_config)
                tokens = out.sequences[:, width:]
                responses.extend(tokens)
                logprobs.extend(selective_log_softmax(torch.stack(out.logits, 1).float() / a.temperature, tokens))
        finally:
            base.generation_config = saved
        responses = pad(responses + [prompt_ids.new_zeros(a.response_length)], padding_value=tok.pad_token_id)[:-1]
        logprobs = pad(logprobs + [torch.zeros(a.response_length, device=prompt_ids.device)], padding_value=0.0)[:-1]
        responses, mask, ended = truncate_after_stop(responses, self.stop_ids, tok.pad_token_id)
        texts = tok.batch_decode([r[m] for r, m in zip(responses, mask)], skip_special_tokens=True)
        scores = self._score(rows, prompts, texts, [r[m].tolist() for r, m in zip(responses, mask)])
        return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, responses=responses, mask=mask, ended=ended,
                    scores=scores, texts=texts, logprobs=logprobs)

    def _tokenize_prompts(self, prompts: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-template, tokenise, left-truncate to max_prompt_length and left-pad: ids, mask (B, P)."""
        tok, device = self.processing_class, self.accelerator.device
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list)
                 else p for p in prompts]
        ids = [torch.tensor(x[-self.args.max_prompt_length:]) for x in
               tok(texts, add_special_tokens=False)["input_ids"]]
        prompt_ids = pad(ids, padding_value=tok.pad_token_id, padding_side="left").to(device)
        prompt_mask = pad([torch.ones_like(x) for x in ids], padding_value=0, padding_side="left").to(device)
        return prompt_ids, prompt_mask

    def _score(self, rows, prompts, texts, completion_ids) -> dict[str, torch.Tensor]:
        """One (B,) tensor per reward source: "reward_model" and each reward function's name (None -> NaN)."""
        device, scores = self.accelerator.device, {}
        if self.rm_score is not None:
            scores["reward_model"] = torch.tensor(self.rm_score(prompts, texts), device=device)
        for f in self.reward_funcs:
            scores[getattr(f, "__name__", "reward_function")] = torch.tensor(
                call_reward_function(f, prompts, texts, completion_ids, rows, trainer_state=self.state), device=device)
        return scores

    def _shape_scores(self, gen: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) `(score, shaped)`: the sources' sum (`--length_control batch`: minus the rollout's length trend, over
        all processes) after the EOS penalty (logged), then clipped and normalised.
        """
        a, gather = self.args, self.accelerator.gather
        score = torch.stack([torch.nan_to_num(s) for s in gen["scores"].values()]).sum(0)
        lengths, all_scores = gen["mask"].sum(1).float(), gather(score.float())
        self._metrics["completions/score_length_corr"].append(tensor_pearson(all_scores, gather(lengths)).item())
        if a.length_control == "batch":
            slope = remove_length_trend(all_scores, gather(lengths))[1]
            change = -slope * (lengths - gather(lengths).mean())
            score = score + change
            self._metrics["length_control/slope"].append(slope)
            self._metrics["length_control/mean_abs_change"].append(gather(change.abs()).mean().item())
        score, shaped = shape_scores(score, gen["ended"], a.missing_eos_penalty if self.stop_ids else None,
                                     a.reward_clip)
        if a.normalize_scores:  # running mean / std of every score so far, this rollout included
            self.score_stats = update_running_moments(self.score_stats,
                                                      self.accelerator.gather(shaped.float()).tolist())
            shaped = normalize_with_moments(shaped, self.score_stats)
        return score, shaped

    def _rollout_forward(self, model, batch: dict, logprobs: torch.Tensor):
        """(B, R) values (None without a critic) and reference log-probs (`logprobs`, the old ones, when no reference
        runs), in forward-batch chunks. Only the critic and the reference run: the old log-probs come from sampling.
        """
        n, critic = self.args.local_rollout_forward_batch_size, self.args.uses_critic
        values, ref_logprobs = [], []
        for s in range(0, len(batch["responses"]), n):
            chunk = {k: (v[s:s + n] if torch.is_tensor(v) else v) for k, v in batch.items()}
            if critic:
                values.append(self._logprobs_and_values(model, chunk, part="value")[1])
            if self.use_ref:
                ref_logprobs.append(self._logprobs_and_values(model, chunk, ref=True)[0])
        return torch.cat(values) if critic else None, torch.cat(ref_logprobs) if self.use_ref else logprobs

    def _logprobs_and_values(self, model, batch: dict, ref: bool = False, part: str = "both"):
        """(B, R) fp32 log-probs at `temperature`, (B, R) values V_t (state before token t; None without a critic),
        logits. `ref=True`: the reference's log-probs. `part="policy"` / `"value"`: only that model runs.
        """
        responses, width = batch["responses"], batch["prompt_width"]
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], logits_to_keep=responses.shape[1] + 1)
        values = None
        if ref and self.ref_model is not None:
            logits = self.ref_model(**inputs, use_cache=False).logits
        elif ref:
            with model.reference():
                logits = model.policy(**inputs, use_cache=False).logits
        else:
            logits, values = model(**inputs, part=part)
            values = None if values is None else values[:, width - 1:-1]
        if logits is None:
            return None, values, None
        return selective_log_softmax(logits[:, :-1].float() / self.args.temperature, responses), values, logits

    def _rewards_and_advantages(self, scores, logprobs, ref_logprobs, values, mask):
        """Pure maths, (B, R): `(rewards, kl, advantages, returns)` by GAE, or REINFORCE++ without a critic."""
        a = self.args
        rewards, kl = compute_rewards(scores, logprobs, ref_logprobs, mask, self.kl_ctl.value, a.kl_estimator)
        if a.whiten_rewards and mask.sum() > 1:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        if not a.uses_critic:
            return (rewards, kl, *compute_reinforce_pp(rewards, mask, a.gamma))
        advantages, returns = compute_gae(rewards, values, mask, a.gamma, a.lam)
        if a.whiten_advantages and mask.sum() > 1:
            advantages = masked_whiten(advantages, mask)
        return rewards, kl, advantages, returns

    def _log_rollout(self, rows, gen, score, shaped, kl_sum, logprobs, values) -> None:
        """Rollout metrics, means over all processes (TRL's names); every `sample_every` rollouts, samples.jsonl."""
        a, mask, non_score = self.args, gen["mask"], -self.kl_ctl.value * kl_sum
        metrics = {"objective/kl": kl_sum, "objective/entropy": (-logprobs * mask).sum(1),
                   "objective/non_score_reward": non_score, "objective/rlhf_reward": shaped + non_score,
                   "objective/scores": score, **{f"objective/scores/{k}": torch.nan_to_num(s)
                                                 for k, s in gen["scores"].items()},
                   "objective/kl_coef": self.kl_ctl.value, "completions/mean_length": mask.sum(1),
                   "completions/eos_rate": gen["ended"]}
        if values is not None:
            metrics["val/values_mean"] = masked_mean(values, mask)
        for name, x in metrics.items():  # tensors: means over all processes
            self._metrics[name].append(self.accelerator.gather(x.float()).mean().item() if torch.is_tensor(x) else x)
        self.rollouts_done += 1
        if self.is_world_process_zero() and is_sampled_rollout(self.rollouts_done, a.sample_every):
            k = a.num_samples_logged  # this process's first k prompts, for output_dir/samples.jsonl
            write_samples(a.output_dir, self.state.global_step, self.rollouts_done, [r["prompt"] for r in rows[:k]],
                          gen["texts"][:k], score[:k].tolist(), kl_sum[:k].tolist(), "nats per answer")
        self._metrics["episode"].append(self.rollouts_done * a.rollout_batch_size * a.world_size)

    # --- Loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Policy + vf_coef x value loss (Schulman et al. 2017, eqs. 7, 9), token means weighted by the micro-batch's
        share of the mini-batch's tokens, + ptx_coef / g x LM loss (PPO-ptx). `split_value_backward`: the value
        loss's backward runs here first (same gradient, the value activations freed before the policy pass).
        """
        a, m = self.args, self._metrics
        mask = inputs["mask"]
        share = mask.sum() / inputs["minibatch_tokens"]  # this micro-batch's share of the mini-batch's tokens
        split = self.split_value_backward and torch.is_grad_enabled()
        vf_loss = vf = None
        if split:
            values = self._logprobs_and_values(model, inputs, part="value")[1]
            vf_loss, vf = ppo_value_loss(values, inputs["values"], inputs["returns"], mask, a.cliprange_value)
            value_part = a.vf_coef * vf_loss * share
            self.accelerator.backward(value_part)
            self._value_loss_part, vf_loss, values = value_part.detach(), vf_loss.detach(), values.detach()
            del value_part
        logprobs, joint_values, logits = self._logprobs_and_values(model, inputs, part="policy" if split else "both")
        pg_loss, pg = ppo_policy_loss(logprobs, inputs["logprobs"], inputs["advantages"], mask, a.cliprange)
        loss = pg_loss * share
        if joint_values is not None:
            values = joint_values
            vf_loss, vf = ppo_value_loss(values, inputs["values"], inputs["returns"], mask, a.cliprange_value)
            loss = loss + a.vf_coef * vf_loss * share
        if self.ptx is not None:
            ptx_loss = self.ptx.loss(self.accelerator.unwrap_model(model), self.accelerator.device)
            loss = loss + a.ptx_coef * ptx_loss / a.gradient_accumulation_steps
            m["loss/ptx_avg"].append(ptx_loss.item())
        with torch.no_grad():
            entropy = masked_mean(entropy_from_logits(logits[:, :-1].float()), mask)
            stats = {"policy/approxkl_avg": pg["approxkl"], "policy/clipfrac_avg": pg["clipfrac"],
                     "loss/policy_avg": pg_loss, "val/ratio": pg["ratio_mean"], "policy/entropy_avg": entropy}
            if vf_loss is not None:
                stats.update({"loss/value_avg": vf_loss, "val/clipfrac_avg": vf["clipfrac"]})
            for name, x in stats.items():
                m[name].append(x.item())
        return (loss, {"logprobs": logprobs, "values": values if vf_loss is not None else None}) if return_outputs \
            else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        if self._value_loss_part is not None:  # the value phase ran its own backward inside compute_loss
            loss, self._value_loss_part = loss + self._value_loss_part, None
        return loss

    # --- Logging and evaluation
    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Add the averages of the metrics collected since the last log (not to eval logs)."""
        if not any(k.startswith("eval_") for k in logs):
            for key, values in self._metrics.items():
                valid = [v for v in values if not math.isnan(v)]
                if valid:
                    logs[key] = sum(valid) / len(valid)
            ratios = self._metrics.get("val/ratio", [])
            if len(ratios) > 1:
                mean = sum(ratios) / len(ratios)
                logs["val/ratio_var"] = sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1)
            self._metrics.clear()
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """Mean score, response length and EOS rate of responses sampled (at `temperature`) for the eval prompts."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            return {}
        rows, chunk = list(dataset), self.args.local_rollout_forward_batch_size
        scores, lengths, ended = [], [], []
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model, \
                self.accelerator.autocast():
            for s in range(0, len(rows), chunk):
                gen = self._generate(model, rows[s:s + chunk])
                scores += torch.stack([torch.nan_to_num(v) for v in gen["scores"].values()]).sum(0).tolist()
                lengths += gen["mask"].sum(1).tolist()
                ended += gen["ended"].tolist()
        p = metric_key_prefix
        metrics = {f"{p}_objective/scores": sum(scores) / len(scores),
                   f"{p}_completions/mean_length": sum(lengths) / len(lengths),
                   f"{p}_completions/eos_rate": sum(ended) / len(ended)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # --- Saving and resuming
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Policy + tokenizer; checkpoints add trainable tensors + KL / score state; `save_value_model`: `value/`."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        state_dict = state_dict if state_dict else model.state_dict()
        model.save_policy(output_dir, state_dict)
        if os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):  # a checkpoint-N/ folder
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k in trainable},
                      os.path.join(output_dir, TRAINABLE_FILE))
            with open(os.path.join(output_dir, STATE_FILE), "w") as f:
                json.dump({"kl_coef": self.kl_ctl.value, "score_stats": self.score_stats,
                           "rollouts_done": self.rollouts_done}, f)
        else:
            if self.args.save_value_model:
                model.save_value(output_dir, state_dict)
            history = [{k: v for k, v in e.items() if k in ("step",) + CURVES or k.removeprefix("eval_") in CURVES}
                       for e in self.state.log_history]
            plot_log_history(history, os.path.join(output_dir, "online_curves.png"), title="PPO")
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load every trainable tensor (policy and value) saved by `_save` into the model."""
        path = os.path.join(resume_from_checkpoint, TRAINABLE_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{resume_from_checkpoint} is not a PPO checkpoint (no {TRAINABLE_FILE})")
        result = (model or self.model).load_state_dict(load_file(path), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{path} does not match the model: unexpected {result.unexpected_keys[:3]}")

    def train(self, resume_from_checkpoint=None, **kwargs):
        """`Trainer.train`, after restoring the KL coefficient and score statistics of the checkpoint."""
        path = get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else resume_from_checkpoint
        if path and os.path.isfile(os.path.join(path, STATE_FILE)):
            with open(os.path.join(path, STATE_FILE)) as f:
                state = json.load(f)
            self.kl_ctl.value, self.score_stats = state["kl_coef"], state["score_stats"]
            self.rollouts_done = state["rollouts_done"]
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
