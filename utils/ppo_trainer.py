"""PPO for RLHF on top of the stock `transformers.Trainer` loop (TRL 1.16 has no PPO any more).

The algorithm is PPO (Schulman et al. 2017, arXiv:1707.06347) with GAE (Schulman et al. 2016, arXiv:1506.02438)
and a per-token KL penalty against a reference model (Ziegler et al. 2019, arXiv:1909.08593), with the
implementation details of Huang et al. 2024 ("The N+ Implementation Details of RLHF with PPO", arXiv:2403.17031):
dropout off, value model initialised from the reward model, advantage whitening, EOS handling. The maths lives in
`utils/ppo_core.py`; this file only moves data between models and that maths.

One rollout, on each process (b = per_device_train_batch_size, g = gradient_accumulation_steps,
M = num_mini_batches, E = num_ppo_epochs):

1. Take b*g*M / N prompts, each N times (N = num_samples_per_prompt), left-pad them, sample responses of at most
   `response_length` tokens with an explicit `GenerationConfig` (nothing leaks from the checkpoint's
   generation_config, e.g. its suppress_tokens), stop at EOS.
2. Mask each response up to and including its first EOS (positions, not `!= pad`, so pad == eos works).
3. One no-grad forward each: policy log-probs and values (`PolicyAndValue`; one backbone pass in the shared
   layout, two otherwise), reference log-probs.
   The old log-probs are recomputed, not taken from generation, so at the first step of a rollout the
   probability ratio is exactly 1 and the KL to the reference is 0 before any update.
4. Scores: the reward model (text re-rendered with its own chat template and tokenizer, exactly as reward_model.py
   trained it) and/or Python reward functions; missing-EOS penalty, clipping, running normalisation (all optional).
5. Per-token rewards = -kl_coef * KL_t + score on the last real token; GAE and whitened advantages, or REINFORCE++
   (no value model: reward-to-go normalised over the rollout).
6. E epochs x M mini-batches of g micro-batches: exactly M*E optimizer steps per rollout. Losses are token sums
   divided by the mini-batch's token count, so gradient accumulation does not change the result. Separate policy
   and value passes run value forward + backward first (`split_value_backward`); PPO-ptx adds an LM loss.

Steps 6's loop, gradient clipping, the LR scheduler, logging, checkpoints, resume and DeepSpeed all come from
`transformers.Trainer`: the dataloader repeats each rollout's prompts g*M*E times (TRL's `RepeatSampler`), and
`_prepare_inputs` builds the rollout on the first of them and returns one micro-batch of it each time.
Logged metrics keep TRL's names (objective/kl, objective/scores, objective/rlhf_reward, policy/approxkl_avg, ...),
computed with masks, plus completions/mean_length and completions/eos_rate.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from contextlib import contextmanager

import torch
from transformers import GenerationConfig, Trainer
from transformers.trainer_utils import get_last_checkpoint
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler, disable_dropout_in_model, entropy_from_logits, pad, selective_log_softmax

from utils.ppo_core import (AdaptiveKLController, FixedKLController, compute_gae, compute_reinforce_pp,
                            compute_rewards, masked_mean, masked_whiten, normalize_with_moments, ppo_policy_loss,
                            ppo_value_loss, shape_scores, truncate_after_stop, update_running_moments)
from utils.errors import ConfigError
from utils.log import info_rank0
from utils.ppo_models import (POLICY, PolicyAndValue, _is_peft, base_of, build_adapters_model, build_separate_model,
                               build_shared_model)
from utils.reward import reward_scorer
from utils.samples import is_sampled_rollout, write_samples

TRAINABLE_FILE = "ppo_trainable.safetensors"  # in checkpoint-N/: every trainable tensor (policy, value), for resume
STATE_FILE = "ppo_state.json"  # in checkpoint-N/: KL coefficient and running score statistics
CURVES = ("objective/scores", "objective/kl", "completions/mean_length", "objective/rlhf_reward")


def identity_collator(rows: list[dict]) -> list[dict]:
    """Rows stay python dicts: prompts are tokenised in the rollout."""
    return rows


class PPOTrainer(Trainer):
    """PPO trainer: `transformers.Trainer` whose micro-batches are slices of on-policy rollouts.

    Args:
        model: the policy, a causal LM (not PEFT-wrapped; `peft_config` wraps it).
        args: a `rlhf_args.ppo_config.PPOConfig` (TrainingArguments + PPO fields).
        train_dataset / eval_dataset: `datasets.Dataset` with a `prompt` column (messages or text); other columns
            are passed to reward functions as keyword arguments.
        processing_class: the policy's tokenizer (needs a pad token; a chat template for message prompts).
        peft_config: LoRA config of the policy (None: full fine-tuning). Required for `model_mode` adapters and
            shared.
        reward_model: a sequence-classification reward model (e.g. from `utils.reward.load_reward_model`), or None.
        reward_processing_class: its tokenizer (it renders prompt + response with its own chat template).
        reward_adapter_path: adapters and shared layouts: a LoRA reward model (reward_model.py output) on the same
            base, loaded as a frozen adapter instead of a second model.
        reward_funcs: Python callables `f(prompts, completions, completion_ids, **columns) -> list[float]`
            (TRL's reward-function signature); their outputs are added to the reward-model score.
        value_model: separate layout with GAE: a `*ForSequenceClassification(num_labels=1)` model (full or PEFT),
            trained.
        ref_model: separate layout with full fine-tuning: a frozen reference causal LM (None: a copy of the policy).
        ptx_dataset: PPO-ptx rows `{"prompt": [messages], "completion": [message]}` (`utils.online.ppo_ptx_data`);
            each micro-batch adds `ptx_coef` x the policy's LM loss on `per_device_train_batch_size` of them.

    Raises:
        ValueError: no reward at all, a missing value model, a data set smaller than one rollout.
    """

    loss_is_scaled_for_ga = True  # compute_loss divides by the mini-batch's token count itself

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

        # 1. Policy + value as one module (no value model for a critic-free estimator); the reference model.
        if args.model_mode in ("adapters", "shared"):
            build = build_adapters_model if args.model_mode == "adapters" else build_shared_model
            wrapper, adapter_rm = build(model, peft_config, reward_adapter_path, with_value=args.uses_critic)
            if adapter_rm is not None:
                reward_model, reward_processing_class = adapter_rm, reward_processing_class or tokenizer
        else:
            if args.uses_critic and value_model is None:
                raise ValueError("model_mode 'separate' needs a value_model (utils.online.load_value_model)")
            wrapper = build_separate_model(model, peft_config, value_model if args.uses_critic else None)
        self.use_ref = args.kl_coef > 0 or args.kl_target is not None
        if self.use_ref and ref_model is None and not _is_peft(wrapper.policy):
            import copy  # full fine-tuning without a given reference: a frozen copy of the starting policy

            ref_model = copy.deepcopy(base_of(wrapper.policy))
        self.ref_model = ref_model if self.use_ref and not _is_peft(wrapper.policy) else None
        if reward_model is None and not self.reward_funcs:
            raise ValueError("PPO needs a reward: a reward_model and/or reward_funcs")
        for m in (wrapper, self.ref_model, reward_model):
            if m is not None:
                disable_dropout_in_model(m)  # dropout would make old and new log-probs differ (Huang et al. 2024)
        for m in (self.ref_model, reward_model):
            if m is not None:
                m.eval().requires_grad_(False)

        super().__init__(model=wrapper, args=args, data_collator=identity_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks,
                         optimizers=optimizers)

        # 2. Frozen models on the device (DeepSpeed: as inference engines, sharded under ZeRO-3).
        device = self.accelerator.device
        if self.ref_model is not None:
            self.ref_model = (prepare_deepspeed(self.ref_model, self.accelerator) if self.is_deepspeed_enabled
                              else self.ref_model.to(device))
        if reward_model is not None:
            if hasattr(reward_model, "reward_head"):  # reward adapter: its backbone is inside the trained model
                reward_model.reward_head.to(device)
            elif self.is_deepspeed_enabled:
                reward_model = prepare_deepspeed(reward_model, self.accelerator)
            else:
                reward_model = reward_model.to(device)
            max_len = 2 * (args.max_prompt_length + args.response_length) + 64  # never cut the response off
            self.rm_score = reward_scorer(reward_model, reward_processing_class or tokenizer,
                                          batch_size=args.local_rollout_forward_batch_size, max_length=max_len)
        else:
            self.rm_score = None
        self.reward_model = reward_model

        # 3. Sampling: an explicit config, so nothing is inherited from the checkpoint's generation_config.
        self.stop_ids = None
        if args.stop_token == "eos":
            stop = args.stop_token_id if args.stop_token_id is not None else tokenizer.eos_token_id
            self.stop_ids = [stop]
        min_new_tokens = (args.min_new_tokens or None) if self.stop_ids else None  # EOS suppression (seed 002)
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length, min_new_tokens=min_new_tokens, do_sample=True,
            temperature=args.temperature, top_k=0, top_p=1.0, eos_token_id=self.stop_ids,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, use_cache=True)

        # 4. Rollout bookkeeping.
        self.kl_ctl = (AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target
                       else FixedKLController(args.kl_coef))
        self.score_stats = {"count": 0, "mean": 0.0, "m2": 0.0}  # running score statistics (Welford)
        self.micro_steps_per_rollout = args.gradient_accumulation_steps * args.optimizer_steps_per_rollout
        self._step, self._rollout, self._micro_batches, self._in_checkpoint = 0, None, None, False
        self._metrics = defaultdict(list)
        self.rollouts_done = 0
        # Value loss forward + backward before the policy's, so that only one pass's activations are alive at a time
        # (layouts with separate policy and value passes). One process without DeepSpeed only: DDP and DeepSpeed
        # expect one backward per forward of the wrapped model (DeepSpeed even steps the optimizer in it).
        self.split_value_backward = (wrapper.has_value and wrapper.layout != "shared" and not self.is_deepspeed_enabled
                                     and self.accelerator.num_processes == 1 and args.n_gpu <= 1)
        self._value_loss_part = None  # the value phase's loss, added back to the logged loss in training_step

        # 5. PPO-ptx: tokenised supervised rows, served in a seeded shuffled cycle.
        self.ptx_rows = [self._tokenize_ptx_row(row) for row in ptx_dataset] if ptx_dataset else None
        self._ptx_order, self._ptx_generator = [], torch.Generator().manual_seed(args.seed)
        args.check_prompt_count(len(train_dataset))
        per_rollout = args.optimizer_steps_per_rollout
        if args.save_strategy == "steps" and args.save_steps >= 1 and args.save_steps % per_rollout:
            info_rank0(f"[PPO] note: save_steps={args.save_steps} is not a multiple of the {per_rollout} optimizer "
                       f"steps per rollout; a run resumed from such a checkpoint samples the interrupted rollout anew")

    # ------------------------------------------------------------------------------------------------------
    # Data: each dataloader item is the rollout's prompt batch, repeated once per micro-step.

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt"]

    def _get_train_sampler(self, dataset=None):
        a = self.args
        # Each prompt appears num_samples_per_prompt times in a row, so its responses stay in one process's rollout.
        return RepeatSampler(data_source=dataset if dataset is not None else self.train_dataset,
                             mini_repeat_count=a.num_samples_per_prompt,
                             batch_size=a.prompts_per_rollout * a.world_size, repeat_count=self.micro_steps_per_rollout,
                             shuffle=True, seed=a.seed)

    def get_train_dataloader(self):
        return self._get_dataloader(dataset=self.train_dataset, description="Training",
                                    batch_size=self.args.rollout_batch_size, sampler_fn=self._get_train_sampler,
                                    is_training=True)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        if self._value_loss_part is not None:  # the value phase ran its own backward inside compute_loss
            loss = loss + self._value_loss_part
            self._value_loss_part = None
        return loss

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; with `value_learning_rate` / `value_weight_decay` the value model's parameters
        go into param groups of their own with those settings (one optimizer: one step, one LR schedule for both,
        which scales each group's own learning rate). Parameters that the Trainer exempts from weight decay
        (biases, norms) stay exempt."""
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

    def _prepare_inputs(self, rows: list[dict]) -> dict:
        """Return the next micro-batch: a new rollout every g*M*E micro-steps, a new shuffle every g*M."""
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
        for mini in order:
            tokens = rollout["mask"][mini.flatten()].sum()
            for rows in mini:
                batch = {k: (v[rows] if torch.is_tensor(v) else v) for k, v in rollout.items()}
                batch["minibatch_tokens"] = tokens
                micro.append(batch)
        return micro

    # ------------------------------------------------------------------------------------------------------
    # Rollout

    def _tokenize_prompts(self, prompts: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-template, tokenise, left-truncate to max_prompt_length and left-pad. Returns ids, mask (B, P)."""
        tok = self.processing_class
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list)
                 else p for p in prompts]
        ids = [torch.tensor(x[-self.args.max_prompt_length:]) for x in
               tok(texts, add_special_tokens=False)["input_ids"]]
        device = self.accelerator.device
        prompt_ids = pad(ids, padding_value=tok.pad_token_id, padding_side="left").to(device)
        prompt_mask = pad([torch.ones_like(x) for x in ids], padding_value=0, padding_side="left").to(device)
        return prompt_ids, prompt_mask

    @contextmanager
    def _only_this_generation_config(self, policy):
        """transformers fills unset GenerationConfig fields from the model's own one; make them the same object."""
        base = base_of(policy)
        saved = base.generation_config
        base.generation_config = self.generation_config
        try:
            yield
        finally:
            base.generation_config = saved

    def _generate(self, model: PolicyAndValue, rows: list[dict]) -> dict:
        """Sample responses for `rows` and score them. Returns a dict of (B, ...) tensors and python lists."""
        a, tok = self.args, self.processing_class
        prompts = [row["prompt"] for row in rows]
        prompt_ids, prompt_mask = self._tokenize_prompts(prompts)
        width = prompt_ids.shape[1]
        responses = []
        with self._only_this_generation_config(model.policy):
            for s in range(0, len(rows), a.local_rollout_forward_batch_size):
                chunk = slice(s, s + a.local_rollout_forward_batch_size)
                out = model.generate(input_ids=prompt_ids[chunk], attention_mask=prompt_mask[chunk],
                                     generation_config=self.generation_config)
                responses.extend(out[:, width:])
        responses = pad(responses + [prompt_ids.new_zeros(a.response_length)], padding_value=tok.pad_token_id)[:-1]
        responses, mask, ended = truncate_after_stop(responses, self.stop_ids, tok.pad_token_id)
        texts = tok.batch_decode([r[m] for r, m in zip(responses, mask)], skip_special_tokens=True)
        scores = self._score(rows, prompts, texts, [r[m].tolist() for r, m in zip(responses, mask)])
        return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, responses=responses, mask=mask, ended=ended,
                    scores=scores, texts=texts)

    def _score(self, rows, prompts, texts, completion_ids) -> dict[str, torch.Tensor]:
        """One (B,) tensor per reward source: "reward_model" and each reward function's name."""
        device = self.accelerator.device
        scores = {}
        if self.rm_score is not None:
            scores["reward_model"] = torch.tensor(self.rm_score(prompts, texts), device=device)
        completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t
                       for p, t in zip(prompts, texts)]
        columns = {k: [row[k] for row in rows] for k in rows[0] if k != "prompt"}
        for f in self.reward_funcs:
            out = f(prompts=prompts, completions=completions, completion_ids=completion_ids,
                    trainer_state=self.state, **columns)
            scores[getattr(f, "__name__", "reward_function")] = torch.tensor(
                [float("nan") if x is None else float(x) for x in out], device=device)
        return scores

    def _logprobs_and_values(self, model, batch: dict, ref: bool = False, part: str = "both"):
        """(B, R) log-probs of the response tokens (temperature-scaled, fp32), (B, R) values V_t of the state
        before token t (None without a value model) and the logits. With `ref=True`: reference log-probs instead,
        and no values. `part="policy"` / `"value"`: only that model runs (`PolicyAndValue.forward`), the other
        outputs are None."""
        responses, width = batch["responses"], batch["prompt_width"]
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], logits_to_keep=responses.shape[1] + 1)
        if ref:
            if self.ref_model is not None:
                logits = self.ref_model(**inputs, use_cache=False).logits
            else:
                with model.reference():
                    logits = model.policy(**inputs, use_cache=False).logits
            values = None
        else:
            logits, values = model(**inputs, part=part)
            values = None if values is None else values[:, width - 1:-1]
        if logits is None:
            return None, values, None
        logprobs = selective_log_softmax(logits[:, :-1].float() / self.args.temperature, responses)
        return logprobs, values, logits

    @torch.no_grad()
    def _make_rollout(self, rows: list[dict]) -> dict:
        """Generate, score and compute advantages for one rollout (no grad); log the rollout metrics."""
        a = self.args
        # autocast as in training (accelerate patches only the wrapper's forward), so that the reference and the
        # old log-probs are computed in the same precision as the new ones: ratio 1 and KL 0 at the first step.
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=a.ds3_gather_for_generation) as model, \
                self.accelerator.autocast():
            gen = self._generate(model, rows)
            mask = gen["mask"]
            attention_mask = torch.cat([gen["prompt_mask"], mask.long()], dim=1)
            batch = dict(input_ids=torch.cat([gen["prompt_ids"], gen["responses"]], dim=1),
                         attention_mask=attention_mask, position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0),
                         responses=gen["responses"], mask=mask, prompt_width=gen["prompt_ids"].shape[1])
            logprobs, values, ref_logprobs = [], [], []
            for s in range(0, len(rows), a.local_rollout_forward_batch_size):
                chunk = {k: (v[s:s + a.local_rollout_forward_batch_size] if torch.is_tensor(v) else v)
                         for k, v in batch.items()}
                lp, v, _ = self._logprobs_and_values(model, chunk)
                logprobs.append(lp)
                values.append(v)
                ref_logprobs.append(self._logprobs_and_values(model, chunk, ref=True)[0] if self.use_ref else lp)
        logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
        values = torch.cat(values) if values[0] is not None else None

        # Scores -> per-token rewards -> GAE.
        per_source = gen["scores"]
        score = torch.stack([torch.nan_to_num(s) for s in per_source.values()]).sum(0)
        score, shaped = shape_scores(score, gen["ended"], a.missing_eos_penalty if self.stop_ids else None,
                                     a.reward_clip)
        if a.normalize_scores:
            shaped = self._normalize(shaped)
        rewards, kl = compute_rewards(shaped, logprobs, ref_logprobs, mask, self.kl_ctl.value, a.kl_estimator)
        if a.whiten_rewards and mask.sum() > 1:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        if a.uses_critic:
            advantages, returns = compute_gae(rewards, values, mask, a.gamma, a.lam)
            if a.whiten_advantages and mask.sum() > 1:
                advantages = masked_whiten(advantages, mask)
        else:  # REINFORCE++: reward-to-go, normalised over this process's rollout
            advantages, returns = compute_reinforce_pp(rewards, mask, a.gamma)

        # Metrics over all processes (TRL's names).
        gather = lambda x: self.accelerator.gather(x.float()).mean().item()  # noqa: E731
        kl_sum = (kl * mask).sum(1)
        non_score = -self.kl_ctl.value * kl_sum
        m = self._metrics
        m["objective/kl"].append(gather(kl_sum))
        m["objective/entropy"].append(gather((-logprobs * mask).sum(1)))
        m["objective/non_score_reward"].append(gather(non_score))
        m["objective/rlhf_reward"].append(gather(shaped + non_score))
        m["objective/scores"].append(gather(score))
        for name, s in per_source.items():
            m[f"objective/scores/{name}"].append(gather(torch.nan_to_num(s)))
        m["objective/kl_coef"].append(self.kl_ctl.value)
        m["completions/mean_length"].append(gather(mask.sum(1)))
        m["completions/eos_rate"].append(gather(gen["ended"]))
        if values is not None:
            m["val/values_mean"].append(gather(masked_mean(values, mask)))
        self.rollouts_done += 1
        if self.is_world_process_zero() and is_sampled_rollout(self.rollouts_done, a.sample_every):
            k = a.num_samples_logged  # this process's first k prompts, for output_dir/samples.jsonl
            write_samples(a.output_dir, self.state.global_step, self.rollouts_done, [r["prompt"] for r in rows[:k]],
                          gen["texts"][:k], score[:k].tolist(), kl_sum[:k].tolist(), "nats per answer")
        m["episode"].append(self.rollouts_done * a.rollout_batch_size * a.world_size)
        self.kl_ctl.update(self.accelerator.gather(kl_sum).mean(), a.rollout_batch_size * a.world_size)
        return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], responses=batch["responses"], mask=mask,
                    prompt_width=batch["prompt_width"], logprobs=logprobs, values=values, advantages=advantages,
                    returns=returns, rewards=rewards, ref_logprobs=ref_logprobs)

    def _normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """Standardise scores with the running mean/std of all scores so far (this rollout included)."""
        self.score_stats = update_running_moments(self.score_stats, self.accelerator.gather(scores.float()).tolist())
        return normalize_with_moments(scores, self.score_stats)

    # ------------------------------------------------------------------------------------------------------
    # Loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Clipped policy loss + vf_coef x clipped value loss on one micro-batch (Schulman et al. 2017, eq. 7/9),
        plus ptx_coef x the LM loss on a ptx batch with PPO-ptx (Ouyang et al. 2022, eq. 2).

        Both PPO terms are token means over the micro-batch, weighted by its share of the mini-batch's tokens:
        summed over the g micro-batches of a mini-batch they give the token mean of the whole mini-batch. The ptx
        term is divided by g, so each optimizer step adds ptx_coef x the mean LM loss of its g ptx batches.

        With `split_value_backward` (separate / adapters layouts on one process) the value loss's forward and
        backward run first, here, and only the policy part is returned for the Trainer's backward: the summed
        gradient is the joint loss's, but the value pass's activations are freed before the policy pass runs."""
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
        if self.ptx_rows is not None:
            ptx_loss = self.ptx_loss(model, self._next_ptx_batch())
            loss = loss + a.ptx_coef * ptx_loss / a.gradient_accumulation_steps
            m["loss/ptx_avg"].append(ptx_loss.item())
        with torch.no_grad():
            m["policy/approxkl_avg"].append(pg["approxkl"].item())
            m["policy/clipfrac_avg"].append(pg["clipfrac"].item())
            m["loss/policy_avg"].append(pg_loss.item())
            m["val/ratio"].append(pg["ratio_mean"].item())
            m["policy/entropy_avg"].append(masked_mean(entropy_from_logits(logits[:, :-1].float()), mask).item())
            if vf_loss is not None:
                m["loss/value_avg"].append(vf_loss.item())
                m["val/clipfrac_avg"].append(vf["clipfrac"].item())
        return (loss, {"logprobs": logprobs, "values": values if vf_loss is not None else None}) if return_outputs \
            else loss

    # ------------------------------------------------------------------------------------------------------
    # PPO-ptx: the policy's language-model loss on supervised rows

    def _tokenize_ptx_row(self, row: dict) -> dict:
        """`input_ids` and `labels` (-100 on the prompt) of one supervised row, rendered with the policy's chat
        template as TRL's SFTTrainer renders prompt/completion rows; cut to max_prompt_length + response_length."""
        tok, a = self.processing_class, self.args
        if isinstance(row["prompt"], list):
            prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        else:
            prompt, full = row["prompt"], row["prompt"] + row["completion"]
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        ids = tok(full, add_special_tokens=False)["input_ids"]
        limit = a.max_prompt_length + a.response_length
        return {"input_ids": ids[:limit], "labels": ([-100] * n_prompt + ids[n_prompt:])[:limit]}

    def _next_ptx_batch(self) -> dict:
        """The next `per_device_train_batch_size` ptx rows (a new seeded shuffle after each pass), right-padded:
        (b, L) `input_ids`, `attention_mask` and `labels` (-100 on prompt and padding)."""
        rows = []
        while len(rows) < self.args.per_device_train_batch_size:
            if not self._ptx_order:
                self._ptx_order = torch.randperm(len(self.ptx_rows), generator=self._ptx_generator).tolist()
            rows.append(self.ptx_rows[self._ptx_order.pop()])
        device, pad_id = self.accelerator.device, self.processing_class.pad_token_id
        ids = [torch.tensor(r["input_ids"]) for r in rows]
        return {"input_ids": pad(ids, padding_value=pad_id).to(device),
                "attention_mask": pad([torch.ones_like(x) for x in ids], padding_value=0).to(device),
                "labels": pad([torch.tensor(r["labels"]) for r in rows], padding_value=-100).to(device)}

    def ptx_loss(self, model, batch: dict) -> torch.Tensor:
        """The policy's language-model loss on a ptx batch: the mean negative log-likelihood (nats per token, fp32,
        temperature 1) of the labelled tokens, i.e. the SFT loss on the assistant tokens. Scalar, with grad.

        PPO-ptx, Ouyang et al. 2022 (arXiv:2203.02155), eq. 2: the objective adds gamma x E_pretrain[log pi(x)];
        here gamma is `ptx_coef` and the data are supervised rows."""
        policy_and_value = self.accelerator.unwrap_model(model)
        if policy_and_value.adapters:
            policy_and_value.use_adapter(POLICY)
        logits = policy_and_value.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         use_cache=False).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        return masked_mean(-selective_log_softmax(logits, labels.clamp(min=0)), labels != -100)

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

    # ------------------------------------------------------------------------------------------------------
    # Evaluation: sample on the eval prompts and score (no loss).

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
                score = torch.stack([torch.nan_to_num(v) for v in gen["scores"].values()]).sum(0)
                scores += score.tolist()
                lengths += gen["mask"].sum(1).tolist()
                ended += gen["ended"].tolist()
        p = metric_key_prefix
        metrics = {f"{p}_objective/scores": sum(scores) / len(scores),
                   f"{p}_completions/mean_length": sum(lengths) / len(lengths),
                   f"{p}_completions/eos_rate": sum(ended) / len(ended)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------------------------------------------
    # Saving and resuming

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the policy (model or adapter) + tokenizer; checkpoints also get every trainable tensor and the KL /
        score-normalisation state for resume; with `save_value_model` the final output gets `value/`."""
        from safetensors.torch import save_file

        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        state_dict = state_dict if state_dict else model.state_dict()
        model.save_policy(output_dir, state_dict)
        if self._in_checkpoint:
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k in trainable},
                      os.path.join(output_dir, TRAINABLE_FILE))
            with open(os.path.join(output_dir, STATE_FILE), "w") as f:
                json.dump({"kl_coef": self.kl_ctl.value, "score_stats": self.score_stats,
                           "rollouts_done": self.rollouts_done}, f)
        else:
            if self.args.save_value_model:
                model.save_value(output_dir, state_dict)
            from utils.outputs import plot_log_history

            history = [{k: v for k, v in e.items() if k in ("step",) + CURVES or k.removeprefix("eval_") in CURVES}
                       for e in self.state.log_history]
            plot_log_history(history, os.path.join(output_dir, "online_curves.png"), title="PPO")
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _save_checkpoint(self, model, trial):
        self._in_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._in_checkpoint = False

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load every trainable tensor (policy and value) saved by `_save` into the model."""
        from safetensors.torch import load_file

        path = os.path.join(resume_from_checkpoint, TRAINABLE_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{resume_from_checkpoint} is not a PPO checkpoint (no {TRAINABLE_FILE})")
        result = (model or self.model).load_state_dict(load_file(path), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{path} does not match the model: unexpected {result.unexpected_keys[:3]}")

    def train(self, resume_from_checkpoint=None, **kwargs):
        """`Trainer.train`, after restoring the KL coefficient and score statistics of the checkpoint."""
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)
        if path and os.path.isfile(os.path.join(path, STATE_FILE)):
            with open(os.path.join(path, STATE_FILE)) as f:
                state = json.load(f)
            self.kl_ctl.value, self.score_stats = state["kl_coef"], state["score_stats"]
            self.rollouts_done = state["rollouts_done"]
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
