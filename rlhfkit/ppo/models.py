"""PPO's policy and value model as one trainable module, `PolicyAndValue`: one optimizer for `transformers.Trainer`,
`forward` returning `(policy logits, per-token values)` (TRL's PolicyAndValueWrapper). Three layouts; a critic-free
estimator (`with_value=False`) leaves the value parts out:
- "separate" (`build_separate_model`): a causal LM policy (full, LoRA, QLoRA) beside a `*ForSequenceClassification`
  value model, usually a reward model copy ("critic from RM", Huang et al. 2024, arXiv:2403.17031); reference and
  reward models live outside. Two backbone passes per forward, three copies of the base weights.
- "adapters" (`build_adapters_model`): ONE PEFT base with trainable policy ("default") and value ("value") adapters,
  an fp32 `value_head`, optionally reward_model.py's LoRA as the frozen "reward" adapter + `reward_head`; reference:
  the base with all adapters off. One copy of the base weights, two backbone passes per forward.
- "shared" (`build_shared_model`): no value adapter, the value head reads the policy's last hidden state: one pass
  (Schulman et al. 2017, eq. 9). The value loss trains the policy adapter too (Stiennon et al. 2020, arXiv:2009.01325,
  kept them apart), hence a small `vf_coef`.
`PeftModel.set_adapter` freezes the other adapters; `PolicyAndValue.use_adapter` re-enables the trainable ones.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.errors import ConfigError

POLICY, VALUE, REWARD = "default", "value", "reward"  # adapter names; "default" saves at the top of output_dir


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def base_of(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if _is_peft(model) else model


def backbone_of(model):
    """The decoder stack without head (e.g. `LlamaModel`, active adapter applied): `.last_hidden_state` (B, L, H)."""
    base = base_of(model)
    return getattr(base, base.base_model_prefix)


def score_head_of(model) -> nn.Module:
    """The `score` head of a sequence classifier (PEFT's `modules_to_save` copy if any); ValueError if it has none."""
    base = base_of(model)
    head = getattr(base, "score", None)
    if head is None:
        raise ValueError(f"{type(base).__name__} has no 'score' head; PPO's value model must be a decoder "
                         f"*ForSequenceClassification model (Llama, Qwen2, Mistral, Gemma, GPT-NeoX, ...)")
    return head


class PolicyAndValue(nn.Module):
    """Policy + value model in the layout "separate", "adapters" or "shared"; `config` is the policy's. `forward`
    returns logits (B, logits_to_keep or L, V) and fp32 values (B, L) of the state after each token (None without a
    critic); `part="policy"` / `"value"` runs only that model, None for the other ("shared" gives both anyway).
    """

    accepts_loss_kwargs = False  # PPOTrainer computes its own loss

    def __init__(self, policy, value_model=None, value_head: nn.Module | None = None, layout: str = "separate"):
        super().__init__()
        self.policy, self.value_model, self.value_head, self.layout = policy, value_model, value_head, layout
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

    def use_adapter(self, name: str) -> None:
        """Activate one adapter of the PEFT base, keeping the trainable set trainable."""
        if self.policy.active_adapter != name:
            self.policy.set_adapter(name, inference_mode=name == REWARD)
            for p in self._trainable:
                p.requires_grad_(True)

    def reference(self):
        """Context manager: the reference model of a PEFT policy, every adapter off."""
        return self.policy.disable_adapter()

    def value_parameter_names(self) -> list[str]:
        """Names of the trainable critic parameters, e.g. for their own optimizer settings."""
        return [n for n, p in self.named_parameters() if p.requires_grad and (
            n.startswith(("value_model.", "value_head.")) or (self.layout == "adapters" and f".{VALUE}." in n))]

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
        else:
            if part != "value":
                logits = self.policy(**kwargs, logits_to_keep=logits_to_keep).logits
            if want_value and self.adapters:
                self.use_adapter(VALUE)
                hidden = backbone_of(self.policy)(**kwargs).last_hidden_state
                values = self.value_head(hidden.to(self.value_head.weight.dtype))
                self.use_adapter(POLICY)
            elif want_value:
                values = score_head_of(self.value_model)(backbone_of(self.value_model)(**kwargs).last_hidden_state)
        return logits, None if values is None else values.squeeze(-1).float()

    def generate(self, **kwargs):
        if self.adapters:
            self.use_adapter(POLICY)
        return self.policy.generate(**kwargs)

    # --- activation checkpointing (Trainer calls activation_*, TRL's unwrap helper the gradient_* names)
    def _models(self):
        return [self.policy] + ([self.value_model] if self.value_model is not None else [])

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Checkpoint every inner model's decoder layers (non-reentrant), recomputing with the forward's adapter."""
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
        """The policy's entries of this module's state dict, keys relative to the policy."""
        return {k[len("policy."):]: v for k, v in state_dict.items() if k.startswith("policy.")}

    def save_policy(self, path: str, state_dict: dict | None = None) -> None:
        """Write the policy (full model or LoRA adapter) from this module's `state_dict` (e.g. ZeRO-3 gathered)."""
        sd = self.policy_state_dict(state_dict if state_dict is not None else self.state_dict())
        extra = {"selected_adapters": [POLICY]} if _is_peft(self.policy) else {}
        self.policy.save_pretrained(path, state_dict=sd, **extra)

    def save_value(self, output_dir: str, state_dict: dict | None = None) -> str:
        """Write the critic to `output_dir/value/` (returned): a sequence classifier or adapter (separate), the value
        adapter + `value_head.safetensors` (adapters) or the head alone (shared). ValueError without a critic.
        """
        if not self.has_value:
            raise ValueError("this run has no value model to save (critic-free advantage estimator)")
        path = os.path.join(output_dir, VALUE)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        if not self.adapters:
            sd = {k[len("value_model."):]: v for k, v in state_dict.items() if k.startswith("value_model.")}
            self.value_model.save_pretrained(path, state_dict=sd)
            return path
        if self.layout == "adapters":  # PEFT writes the value adapter to output_dir/value/
            self.policy.save_pretrained(output_dir, state_dict=self.policy_state_dict(state_dict),
                                        selected_adapters=[VALUE])
        os.makedirs(path, exist_ok=True)
        save_file({"weight": state_dict["value_head.weight"].detach().float().cpu().contiguous()},
                  os.path.join(path, "value_head.safetensors"))
        return path


def build_separate_model(policy, peft_config=None, value_model=None) -> PolicyAndValue:
    """The separate layout: `policy` (a causal LM, possibly 4-bit; LoRA-wrapped with `peft_config` if given, QLoRA
    prepared) beside `value_model` (`*ForSequenceClassification(num_labels=1)`, full or PEFT; None: critic-free).
    """
    if peft_config is not None:
        if getattr(policy, "is_loaded_in_4bit", False):
            policy = prepare_model_for_kbit_training(policy, use_gradient_checkpointing=False)
        policy = get_peft_model(policy, peft_config)
    return PolicyAndValue(policy, value_model=value_model)


def _small_head(hidden: int, device) -> nn.Linear:
    """fp32 `Linear(hidden, 1)`, normal with std 1 / (hidden + 1) (OpenRLHF): not 0, so its inputs get gradients."""
    head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32, device=device)
    nn.init.normal_(head.weight, std=1 / (hidden + 1))
    return head


def _peft_base(policy, peft_config, layout: str):
    """The policy PEFT-wrapped with its adapter "default" (QLoRA prepared first). ConfigError without LoRA."""
    if peft_config is None:
        raise ConfigError(f"--model_mode {layout} needs LoRA: use --train_mode lora or qlora")
    if getattr(policy, "is_loaded_in_4bit", False) or getattr(policy, "is_loaded_in_8bit", False):
        policy = prepare_model_for_kbit_training(policy, use_gradient_checkpointing=False)
    return get_peft_model(policy, peft_config, adapter_name=POLICY)


def _add_reward_adapter(peft_model, reward_adapter_path: str, copy_to_value: bool) -> nn.Linear:
    """Load reward_model.py's LoRA output as the frozen "reward" adapter (`copy_to_value`: also as the trainable
    "value" adapter); return its frozen fp32 `reward_head` (1, H).
    """
    reward_config, lora_weights, head_weight = read_reward_adapter(reward_adapter_path)
    for name in (REWARD, VALUE) if copy_to_value else (REWARD,):
        peft_model.add_adapter(name, copy.deepcopy(reward_config))
        result = set_peft_model_state_dict(peft_model, lora_weights, adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}." in k and "lora_" in k]
        if result.unexpected_keys or missing:
            raise ValueError(f"the reward adapter {reward_adapter_path} does not fit the policy's base model "
                             f"(unexpected: {result.unexpected_keys[:3]}, missing: {missing[:3]}); it must be trained "
                             f"on the same base")
    reward_head = _small_head(head_weight.shape[-1], peft_model.device)
    with torch.no_grad():
        reward_head.weight.copy_(head_weight)
    return reward_head.requires_grad_(False)


def _one_base_model(layout: str, policy, peft_config, reward_adapter_path: str | None, with_value: bool):
    """The adapters / shared layouts on one PEFT base, where only the policy and value adapters train."""
    peft_model = _peft_base(policy, peft_config, layout)
    value_head = _small_head(policy.config.get_text_config().hidden_size, policy.device) if with_value else None
    value_adapter = with_value and layout == "adapters"
    reward_head = None
    if reward_adapter_path:
        reward_head = _add_reward_adapter(peft_model, reward_adapter_path, copy_to_value=value_adapter)
        if value_adapter:
            with torch.no_grad():
                value_head.weight.copy_(reward_head.weight)
    elif value_adapter:
        value_config = copy.deepcopy(peft_config)
        value_config.modules_to_save = None
        peft_model.add_adapter(VALUE, value_config)
    peft_model.set_adapter(POLICY)
    for name, param in peft_model.named_parameters():
        param.requires_grad_(f".{POLICY}." in name or f".{VALUE}." in name)
    model = PolicyAndValue(peft_model, value_head=value_head, layout=layout)
    return model, (AdapterRewardModel(model, reward_head) if reward_head is not None else None)


def build_adapters_model(policy, peft_config, reward_adapter_path: str | None = None, with_value: bool = True):
    """The adapters layout: `(PolicyAndValue, AdapterRewardModel or None)`. With `reward_adapter_path`
    (reward_model.py's LoRA output, same base) the value adapter and head start as the frozen reward ones, else as
    `peft_config`. ConfigError: no peft_config; ValueError: the reward adapter does not fit the base.
    """
    return _one_base_model("adapters", policy, peft_config, reward_adapter_path, with_value)


def build_shared_model(policy, peft_config, reward_adapter_path: str | None = None, with_value: bool = True):
    """The shared layout, as `build_adapters_model` but the value head, small and random (the reward head fits the
    reward adapter's features, not the policy's), reads the policy adapter's last hidden state.
    """
    return _one_base_model("shared", policy, peft_config, reward_adapter_path, with_value)


def read_reward_adapter(path: str):
    """`(frozen CAUSAL_LM LoraConfig, LoRA weights, score weight (1, H))` of reward_model.py's LoRA output;
    ValueError without a score weight.
    """
    config = LoraConfig.from_pretrained(path)
    config.task_type, config.modules_to_save, config.inference_mode = "CAUSAL_LM", None, True
    weights = load_file(os.path.join(path, "adapter_model.safetensors"))
    heads = [k for k in weights if k.endswith("score.weight")]
    if not heads:
        raise ValueError(f"{path}: no score head in adapter_model.safetensors; is it a reward_model.py LoRA output?")
    return config, {k: v for k, v in weights.items() if "lora_" in k}, weights[heads[0]].float()


class AdapterRewardModel(nn.Module):
    """The frozen reward adapter as a sequence classifier for `reward_scorer`: `.logits` (B, 1) on the last non-pad
    token, as *ForSequenceClassification pools (same scores as the saved model). The shared model is no submodule.
    """

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
