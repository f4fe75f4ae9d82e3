"""Model composition for PPO: the policy and the value model as one trainable module, in two layouts.

* "separate" (`PolicyAndValue(policy, value_model=...)`): the policy is a causal LM (full, or PEFT LoRA/QLoRA) and
  the value model a `AutoModelForSequenceClassification(num_labels=1)` (full or LoRA), normally initialised from the
  reward model (the "critic from RM" convention of Huang et al. 2024, "The N+ Implementation Details of RLHF with
  PPO", arXiv:2403.17031). The reference and reward models live outside this module.
* "adapters" (`build_adapters_model`): ONE base causal LM carries a trainable policy LoRA adapter ("default"), a
  trainable value LoRA adapter ("value") with an fp32 `value_head`, and optionally a frozen reward adapter ("reward")
  with its `reward_head`, loaded from reward_model.py's LoRA output. The reference is the base with all adapters
  off. Memory: about one copy of the base weights; cost: two backbone passes (policy, value) per forward.

Both go to `transformers.Trainer` as one module with one optimizer, so DDP / DeepSpeed wrap a single engine and
`forward` returns `(policy logits, per-token values)`, as TRL's PolicyAndValueWrapper did.

PEFT detail: `PeftModel.set_adapter(x)` sets `requires_grad=False` on every other adapter, which would silently drop
the policy adapter's gradients once the value adapter is activated in the same forward. `PolicyAndValue.use_adapter`
re-enables the trainable parameters after every switch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import torch
from torch import nn

POLICY, VALUE, REWARD = "default", "value", "reward"  # adapter names; "default" saves at the top of output_dir


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def base_of(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if _is_peft(model) else model


def backbone_of(model):
    """The decoder stack without LM/score head, e.g. `LlamaModel`: called directly, PEFT's injected LoRA layers
    (the active adapter) still apply. Returns a module whose output has `.last_hidden_state` of shape (B, L, H)."""
    base = base_of(model)
    return getattr(base, base.base_model_prefix)


def score_head_of(model) -> nn.Module:
    """The `score` head of a sequence-classification model (a PEFT `modules_to_save` copy if LoRA-wrapped).

    Raises `ValueError` if the architecture has no `score` head (e.g. BERT's `classifier`)."""
    base = base_of(model)
    head = getattr(base, "score", None)
    if head is None:
        raise ValueError(f"{type(base).__name__} has no 'score' head; PPO's value model must be a decoder "
                         f"*ForSequenceClassification model (Llama, Qwen2, Mistral, Gemma, GPT-NeoX, ...)")
    return head


class PolicyAndValue(nn.Module):
    """The trainable part of PPO: policy + value model (separate) or one base with policy/value adapters.

    `forward(input_ids, attention_mask, position_ids, logits_to_keep)` returns `(logits, values)`:
    logits (B, logits_to_keep or L, V) from the policy, values (B, L) fp32 from the value model (one value per
    position = the value of the state after reading that token). `config` is the policy's config.
    """

    accepts_loss_kwargs = False  # PPOTrainer computes its own loss

    def __init__(self, policy, value_model=None, value_head: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model  # "separate"
        self.value_head = value_head  # "adapters"
        self.adapters = value_model is None
        if self.adapters and (value_head is None or not _is_peft(policy) or VALUE not in policy.peft_config):
            raise ValueError("adapters layout needs a PEFT policy with a 'value' adapter and a value_head")
        self.config = policy.config
        self._trainable = [p for p in self.parameters() if p.requires_grad]

    # --- adapters
    def use_adapter(self, name: str) -> None:
        """Activate one adapter of the shared base (adapters layout) and keep the trainable set trainable."""
        if self.policy.active_adapter != name:
            self.policy.set_adapter(name, inference_mode=name == REWARD)
            for p in self._trainable:
                p.requires_grad_(True)

    def reference(self):
        """Context manager for the reference model when the policy is PEFT: every adapter switched off."""
        return self.policy.disable_adapter()

    # --- forward
    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        if self.adapters:
            self.use_adapter(POLICY)
        logits = self.policy(**kwargs, logits_to_keep=logits_to_keep).logits
        if self.adapters:
            self.use_adapter(VALUE)
            hidden = backbone_of(self.policy)(**kwargs).last_hidden_state
            values = self.value_head(hidden.to(self.value_head.weight.dtype))
            self.use_adapter(POLICY)
        else:
            hidden = backbone_of(self.value_model)(**kwargs).last_hidden_state
            values = score_head_of(self.value_model)(hidden)
        return logits, values.squeeze(-1).float()

    def generate(self, **kwargs):
        if self.adapters:
            self.use_adapter(POLICY)
        return self.policy.generate(**kwargs)

    # --- activation checkpointing (Trainer calls activation_*, TRL's unwrap helper the gradient_* names)
    def _models(self):
        return [self.policy] + ([self.value_model] if self.value_model is not None else [])

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Checkpoint the decoder layers of every model inside (non-reentrant). Adapters layout: the backward pass
        recomputes a layer with the adapter that was active when the layer ran forward (policy or value), not
        with whatever adapter is active at backward time."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if self.adapters:
            kwargs["context_fn"] = self._recompute_with_same_adapter
        for model in self._models():
            base_of(model).activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            if _is_peft(model):
                base_of(model).enable_input_require_grads()

    def _recompute_with_same_adapter(self):
        """`torch.utils.checkpoint` context_fn: (forward context, recompute context)."""
        return nullcontext(), self._adapter_active(self.policy.active_adapter)

    @contextmanager
    def _adapter_active(self, name: str):
        previous = self.policy.active_adapter
        self.use_adapter(name)
        try:
            yield
        finally:
            self.use_adapter(previous)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self):
        for model in self._models():
            base_of(model).gradient_checkpointing_disable()

    activation_checkpointing_disable = gradient_checkpointing_disable

    @property
    def is_gradient_checkpointing(self) -> bool:
        name = "is_activation_checkpointing"  # transformers >= 5.23; older: is_gradient_checkpointing
        return any(getattr(b, name if hasattr(b, name) else "is_gradient_checkpointing", False)
                   for b in map(base_of, self._models()))

    # --- saving
    def policy_state_dict(self, state_dict: dict) -> dict:
        """The policy's entries of a state dict of this module, keys relative to the policy."""
        return {k[len("policy."):]: v for k, v in state_dict.items() if k.startswith("policy.")}

    def save_policy(self, path: str, state_dict: dict | None = None) -> None:
        """Write the policy as `from_pretrained` loads it: the full model, or the policy adapter only (LoRA).

        `state_dict` (optional) is this module's state dict, e.g. gathered under ZeRO-3."""
        sd = self.policy_state_dict(state_dict if state_dict is not None else self.state_dict())
        if _is_peft(self.policy):
            self.policy.save_pretrained(path, state_dict=sd, selected_adapters=[POLICY])
        else:
            self.policy.save_pretrained(path, state_dict=sd)

    def save_value(self, output_dir: str, state_dict: dict | None = None) -> str:
        """Write the value model to `output_dir/value/` and return that path: a sequence-classification model or
        adapter (separate layout; loads with `AutoModelForSequenceClassification` / PEFT), or the value LoRA adapter
        of the causal LM plus `value_head.safetensors` (adapters layout)."""
        from safetensors.torch import save_file

        path = os.path.join(output_dir, VALUE)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        if self.adapters:
            sd = self.policy_state_dict(state_dict)
            self.policy.save_pretrained(output_dir, state_dict=sd, selected_adapters=[VALUE])  # PEFT: output_dir/value/
            save_file({"weight": state_dict["value_head.weight"].detach().float().cpu().contiguous()},
                      os.path.join(path, "value_head.safetensors"))
            return path
        sd = {k[len("value_model."):]: v for k, v in state_dict.items() if k.startswith("value_model.")}
        self.value_model.save_pretrained(path, state_dict=sd)
        return path


def build_adapters_model(policy, peft_config, reward_adapter_path: str | None = None):
    """Build the adapters layout on one base causal LM.

    Args:
        policy: a causal LM (`PreTrainedModel`, possibly 4-bit), not yet PEFT-wrapped.
        peft_config: the policy's `LoraConfig` (task CAUSAL_LM); the value adapter uses the same settings unless a
            reward adapter is given.
        reward_adapter_path: a LoRA reward model saved by reward_model.py on the same base. It becomes the frozen
            "reward" adapter + `reward_head`, and the value adapter/head start as copies of it (critic from RM).

    Returns:
        `(model, reward_model)`: a `PolicyAndValue` and, if `reward_adapter_path` is given, an
        `AdapterRewardModel` that scores with the reward adapter (else None).

    Raises:
        ValueError: no peft_config, or the reward adapter does not match the base (missing/unexpected keys).
    """
    import copy

    from peft import get_peft_model

    if peft_config is None:
        raise ValueError("--model_mode adapters needs LoRA: use --train_mode lora or qlora")
    if getattr(policy, "is_loaded_in_4bit", False) or getattr(policy, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        policy = prepare_model_for_kbit_training(policy, use_gradient_checkpointing=False)
    peft_model = get_peft_model(policy, peft_config, adapter_name=POLICY)
    hidden = policy.config.get_text_config().hidden_size
    value_head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32, device=policy.device)
    nn.init.normal_(value_head.weight, std=1 / (hidden + 1))  # small values; not 0, so the value adapter learns
    reward_model = None
    if reward_adapter_path:
        reward_config, lora_weights, head_weight = read_reward_adapter(reward_adapter_path)
        peft_model.add_adapter(REWARD, reward_config)
        peft_model.add_adapter(VALUE, copy.deepcopy(reward_config))
        for name in (REWARD, VALUE):
            _load_adapter_weights(peft_model, lora_weights, name, reward_adapter_path)
        reward_head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32, device=policy.device)
        with torch.no_grad():
            reward_head.weight.copy_(head_weight)
            value_head.weight.copy_(head_weight)
        reward_head.requires_grad_(False)
    else:
        value_config = copy.deepcopy(peft_config)
        value_config.modules_to_save = None
        peft_model.add_adapter(VALUE, value_config)
    peft_model.set_adapter(POLICY)
    for name, param in peft_model.named_parameters():  # trainable: the policy and value adapters only
        param.requires_grad_(f".{POLICY}." in name or f".{VALUE}." in name)
    model = PolicyAndValue(peft_model, value_head=value_head)
    if reward_adapter_path:
        reward_model = AdapterRewardModel(model, reward_head)
    return model, reward_model


def read_reward_adapter(path: str):
    """Read a LoRA reward model saved by reward_model.py: (LoraConfig for a causal LM, LoRA weights, score weight).

    The SEQ_CLS config is turned into a frozen CAUSAL_LM one without `modules_to_save`; the `score` head weight
    (1, H) comes back separately. Raises `ValueError` if the adapter has no score weight."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(path)
    config.task_type, config.modules_to_save, config.inference_mode = "CAUSAL_LM", None, True
    weights = load_file(os.path.join(path, "adapter_model.safetensors"))
    heads = [k for k in weights if k.endswith("score.weight")]
    if not heads:
        raise ValueError(f"{path}: no score head in adapter_model.safetensors; is it a reward_model.py LoRA output?")
    lora = {k: v for k, v in weights.items() if "lora_" in k}
    return config, lora, weights[heads[0]].float()


def _load_adapter_weights(peft_model, lora_weights: dict, adapter_name: str, path: str) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, lora_weights, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if f".{adapter_name}." in k and "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"the reward adapter {path} does not fit the policy's base model (unexpected: "
                         f"{result.unexpected_keys[:3]}, missing: {missing[:3]}); it must be trained on the same base")


class AdapterRewardModel(nn.Module):
    """The frozen reward adapter of the adapters layout, looking like a sequence-classification reward model.

    `forward(input_ids, attention_mask)` returns an object with `.logits` (B, 1): the reward head on the last
    token that is not the pad token (the pooling rule of transformers' *ForSequenceClassification, so scores equal
    the saved reward model's). Usable with `utils.reward.reward_scorer`. The shared model is not a submodule."""

    def __init__(self, model: PolicyAndValue, reward_head: nn.Linear):
        super().__init__()
        self._shared = [model]  # a list, so that nn.Module does not register it twice
        self.reward_head = reward_head
        self.config = SimpleNamespace(pad_token_id=model.config.pad_token_id)

    @property
    def device(self):
        return self.reward_head.weight.device

    def forward(self, input_ids, attention_mask=None, **_):
        shared = self._shared[0]
        shared.use_adapter(REWARD)
        try:
            hidden = backbone_of(shared.policy)(input_ids=input_ids, attention_mask=attention_mask,
                                                use_cache=False).last_hidden_state
        finally:
            shared.use_adapter(POLICY)
        logits = self.reward_head(hidden.to(self.reward_head.weight.dtype))  # (B, L, 1)
        not_pad = (input_ids != self.config.pad_token_id).long()
        last = (torch.arange(input_ids.shape[1], device=input_ids.device) * not_pad).argmax(-1)
        return SimpleNamespace(logits=logits[torch.arange(len(last), device=last.device), last])
