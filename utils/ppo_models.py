"""Model composition for PPO: the policy and the value model as one trainable module, in three layouts.

* "separate" (`build_separate_model`): the policy is a causal LM (full, or PEFT LoRA/QLoRA) and the value model a
  `AutoModelForSequenceClassification(num_labels=1)` (full or LoRA), normally initialised from the reward model (the
  "critic from RM" convention of Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO",
  arXiv:2403.17031). The reference and reward models live outside this module. Cost: two backbone passes per
  forward, three copies of the base weights (policy, value, reward).
* "adapters" (`build_adapters_model`): ONE base causal LM carries a trainable policy LoRA adapter ("default"), a
  trainable value LoRA adapter ("value") with an fp32 `value_head`, and optionally a frozen reward adapter ("reward")
  with its `reward_head`, loaded from reward_model.py's LoRA output. The reference is the base with all adapters
  off. Memory: about one copy of the base weights; cost: two backbone passes (policy, value) per forward.
* "shared" (`build_shared_model`): as "adapters", but without a value adapter: the fp32 `value_head` reads the
  policy's own last hidden state, so each forward is ONE backbone pass that gives both logits and values (the
  parameter-sharing actor-critic with a combined loss, Schulman et al. 2017, eq. 9). The value loss then trains the
  policy adapter too; Stiennon et al. 2020 (arXiv:2009.01325, appendix) kept the critic separate so that value
  updates cannot damage the pretrained policy early in training, hence a small `vf_coef` in this layout.

Without a critic (`--advantage_estimator reinforce_pp`) the builders leave the value parts out (`with_value=False`).

All go to `transformers.Trainer` as one module with one optimizer, so DDP / DeepSpeed wrap a single engine and
`forward` returns `(policy logits, per-token values)`, as TRL's PolicyAndValueWrapper did.

PEFT detail: `PeftModel.set_adapter(x)` sets `requires_grad=False` on every other adapter, which would silently drop
the policy adapter's gradients once the value adapter is activated in the same forward. `PolicyAndValue.use_adapter`
re-enables the trainable parameters after every switch.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import torch
from torch import nn

from utils.errors import ConfigError

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
    """The trainable part of PPO: policy + value model in one of the layouts "separate", "adapters", "shared".

    `forward(input_ids, attention_mask, position_ids, logits_to_keep, part)` returns `(logits, values)`:
    logits (B, logits_to_keep or L, V) from the policy, values (B, L) fp32 from the value model (one value per
    position = the value of the state after reading that token). `part="policy"` or `"value"` runs only that model
    and returns None for the other (in "shared" one pass gives both anyway). `config` is the policy's config.
    Without a value model (`has_value` False, a critic-free estimator) values are None.
    """

    accepts_loss_kwargs = False  # PPOTrainer computes its own loss

    def __init__(self, policy, value_model=None, value_head: nn.Module | None = None, layout: str = "separate"):
        super().__init__()
        self.policy = policy
        self.value_model = value_model  # "separate"
        self.value_head = value_head  # "adapters", "shared"
        self.layout = layout
        self.adapters = layout != "separate"  # named adapters on one PEFT base
        self.has_value = value_model is not None or value_head is not None
        if self.adapters and not _is_peft(policy):
            raise ValueError(f"{layout} layout needs a PEFT policy")
        if layout == "adapters" and value_head is not None and VALUE not in policy.peft_config:
            raise ValueError("adapters layout needs a 'value' adapter beside its value_head")
        if (value_model is not None) != (layout == "separate" and self.has_value):
            raise ValueError(f"a value_model belongs to the separate layout only, not {layout!r}")
        self.config = policy.config
        self._trainable = [p for p in self.parameters() if p.requires_grad]

    # --- adapters
    def use_adapter(self, name: str) -> None:
        """Activate one adapter of the shared base (adapters / shared layouts) and keep the trainable set
        trainable."""
        if self.policy.active_adapter != name:
            self.policy.set_adapter(name, inference_mode=name == REWARD)
            for p in self._trainable:
                p.requires_grad_(True)

    def reference(self):
        """Context manager for the reference model when the policy is PEFT: every adapter switched off."""
        return self.policy.disable_adapter()

    def value_parameter_names(self) -> list[str]:
        """Names of the trainable value-model parameters (the critic), e.g. for their own optimizer settings."""
        def is_value(name: str) -> bool:
            return name.startswith(("value_model.", "value_head.")) or (self.layout == "adapters"
                                                                       and f".{VALUE}." in name)

        return [n for n, p in self.named_parameters() if p.requires_grad and is_value(n)]

    # --- forward
    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0, part: str = "both"):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        want_value = part != "policy" and self.has_value
        if self.adapters:
            self.use_adapter(POLICY)
        logits = values = None
        if self.layout == "shared":  # one backbone pass: the value head reads the policy's last hidden state
            out = self.policy(**kwargs, logits_to_keep=logits_to_keep, output_hidden_states=want_value)
            logits = out.logits
            if want_value:
                values = self.value_head(out.hidden_states[-1].to(self.value_head.weight.dtype))
            return logits, None if values is None else values.squeeze(-1).float()
        if part != "value":
            logits = self.policy(**kwargs, logits_to_keep=logits_to_keep).logits
        if want_value and self.adapters:
            self.use_adapter(VALUE)
            hidden = backbone_of(self.policy)(**kwargs).last_hidden_state
            values = self.value_head(hidden.to(self.value_head.weight.dtype))
            self.use_adapter(POLICY)
        elif want_value:
            hidden = backbone_of(self.value_model)(**kwargs).last_hidden_state
            values = score_head_of(self.value_model)(hidden)
        return logits, None if values is None else values.squeeze(-1).float()

    def generate(self, **kwargs):
        if self.adapters:
            self.use_adapter(POLICY)
        return self.policy.generate(**kwargs)

    # --- activation checkpointing (Trainer calls activation_*, TRL's unwrap helper the gradient_* names)
    def _models(self):
        return [self.policy] + ([self.value_model] if self.value_model is not None else [])

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Checkpoint the decoder layers of every model inside (non-reentrant). Adapters layouts: the backward pass
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
        adapter (separate layout; loads with `AutoModelForSequenceClassification` / PEFT), the value LoRA adapter
        of the causal LM plus `value_head.safetensors` (adapters layout), or `value_head.safetensors` alone (shared
        layout: the head reads the policy's last hidden state). Raises `ValueError` without a value model."""
        from safetensors.torch import save_file

        if not self.has_value:
            raise ValueError("this run has no value model to save (critic-free advantage estimator)")
        path = os.path.join(output_dir, VALUE)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        if self.adapters:
            if self.layout == "adapters":  # PEFT writes the value adapter to output_dir/value/
                self.policy.save_pretrained(output_dir, state_dict=self.policy_state_dict(state_dict),
                                            selected_adapters=[VALUE])
            os.makedirs(path, exist_ok=True)
            save_file({"weight": state_dict["value_head.weight"].detach().float().cpu().contiguous()},
                      os.path.join(path, "value_head.safetensors"))
            return path
        sd = {k[len("value_model."):]: v for k, v in state_dict.items() if k.startswith("value_model.")}
        self.value_model.save_pretrained(path, state_dict=sd)
        return path


def build_separate_model(policy, peft_config=None, value_model=None) -> PolicyAndValue:
    """Build the separate layout: the policy (LoRA-wrapped with `peft_config` if given, QLoRA prepared) beside its
    own value model.

    Args:
        policy: a causal LM (`PreTrainedModel`, possibly 4-bit), not yet PEFT-wrapped.
        peft_config: the policy's `LoraConfig` (task CAUSAL_LM), or None for full fine-tuning.
        value_model: a `*ForSequenceClassification(num_labels=1)` model (full or PEFT), e.g. from
            `utils.online.load_value_model`; None for a critic-free estimator.

    Returns:
        A `PolicyAndValue` with `layout="separate"`.
    """
    if peft_config is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if getattr(policy, "is_loaded_in_4bit", False):
            policy = prepare_model_for_kbit_training(policy, use_gradient_checkpointing=False)
        policy = get_peft_model(policy, peft_config)
    return PolicyAndValue(policy, value_model=value_model)


def _small_head(hidden: int, device) -> nn.Linear:
    """An fp32 `Linear(hidden, 1)` with small random weights: not 0, so that its input features get gradients
    (OpenRLHF's fresh-head initialisation, normal with std 1 / (hidden + 1))."""
    head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32, device=device)
    nn.init.normal_(head.weight, std=1 / (hidden + 1))
    return head


def _peft_base(policy, peft_config, layout: str):
    """The policy PEFT-wrapped with its adapter "default" (QLoRA prepared first). Raises `ConfigError` without
    LoRA."""
    from peft import get_peft_model

    if peft_config is None:
        raise ConfigError(f"--model_mode {layout} needs LoRA: use --train_mode lora or qlora")
    if getattr(policy, "is_loaded_in_4bit", False) or getattr(policy, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        policy = prepare_model_for_kbit_training(policy, use_gradient_checkpointing=False)
    return get_peft_model(policy, peft_config, adapter_name=POLICY)


def _add_reward_adapter(peft_model, reward_adapter_path: str, copy_to_value: bool) -> nn.Linear:
    """Load reward_model.py's LoRA output as the frozen "reward" adapter (and, with `copy_to_value`, as the
    trainable "value" adapter too); return its frozen fp32 `reward_head` (1, H)."""
    reward_config, lora_weights, head_weight = read_reward_adapter(reward_adapter_path)
    names = (REWARD, VALUE) if copy_to_value else (REWARD,)
    for name in names:
        peft_model.add_adapter(name, copy.deepcopy(reward_config))
        _load_adapter_weights(peft_model, lora_weights, name, reward_adapter_path)
    reward_head = _small_head(head_weight.shape[-1], peft_model.device)
    with torch.no_grad():
        reward_head.weight.copy_(head_weight)
    return reward_head.requires_grad_(False)


def _finish(peft_model, value_head, reward_head, layout: str):
    """Freeze everything but the policy (and value) adapters; wrap; make the reward adapter's scorer."""
    peft_model.set_adapter(POLICY)
    for name, param in peft_model.named_parameters():  # trainable: the policy and value adapters only
        param.requires_grad_(f".{POLICY}." in name or f".{VALUE}." in name)
    model = PolicyAndValue(peft_model, value_head=value_head, layout=layout)
    return model, (AdapterRewardModel(model, reward_head) if reward_head is not None else None)


def build_adapters_model(policy, peft_config, reward_adapter_path: str | None = None, with_value: bool = True):
    """Build the adapters layout on one base causal LM.

    Args:
        policy: a causal LM (`PreTrainedModel`, possibly 4-bit), not yet PEFT-wrapped.
        peft_config: the policy's `LoraConfig` (task CAUSAL_LM); the value adapter uses the same settings unless a
            reward adapter is given.
        reward_adapter_path: a LoRA reward model saved by reward_model.py on the same base. It becomes the frozen
            "reward" adapter + `reward_head`, and the value adapter/head start as copies of it (critic from RM).
        with_value: False for a critic-free estimator: no value adapter and no value head.

    Returns:
        `(model, reward_model)`: a `PolicyAndValue` and, if `reward_adapter_path` is given, an
        `AdapterRewardModel` that scores with the reward adapter (else None).

    Raises:
        ConfigError: no peft_config. ValueError: the reward adapter does not match the base.
    """
    peft_model = _peft_base(policy, peft_config, "adapters")
    hidden = policy.config.get_text_config().hidden_size
    value_head = _small_head(hidden, policy.device) if with_value else None
    reward_head = None
    if reward_adapter_path:
        reward_head = _add_reward_adapter(peft_model, reward_adapter_path, copy_to_value=with_value)
        if with_value:
            with torch.no_grad():
                value_head.weight.copy_(reward_head.weight)
    elif with_value:
        value_config = copy.deepcopy(peft_config)
        value_config.modules_to_save = None
        peft_model.add_adapter(VALUE, value_config)
    return _finish(peft_model, value_head, reward_head, "adapters")


def build_shared_model(policy, peft_config, reward_adapter_path: str | None = None, with_value: bool = True):
    """Build the shared layout: one policy adapter whose last hidden state also feeds the value head.

    Each forward is one backbone pass (logits and values together); the value loss's gradient reaches the policy
    adapter through the shared features. The reference is the base with adapters off; a LoRA reward model on the
    same base becomes the frozen "reward" adapter, as in `build_adapters_model`.

    Args:
        policy: a causal LM (`PreTrainedModel`, possibly 4-bit), not yet PEFT-wrapped.
        peft_config: the policy's `LoraConfig` (task CAUSAL_LM).
        reward_adapter_path: reward_model.py's LoRA output on the same base, or None.
        with_value: False for a critic-free estimator: no value head.

    Returns:
        `(model, reward_model)` as `build_adapters_model`. The value head (fp32, (1, H)) starts small and random:
        the reward head was trained on the reward adapter's features, not the policy's.

    Raises:
        ConfigError: no peft_config. ValueError: the reward adapter does not match the base.
    """
    peft_model = _peft_base(policy, peft_config, "shared")
    hidden = policy.config.get_text_config().hidden_size
    value_head = _small_head(hidden, policy.device) if with_value else None
    reward_head = _add_reward_adapter(peft_model, reward_adapter_path, False) if reward_adapter_path else None
    return _finish(peft_model, value_head, reward_head, "shared")


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
