"""PPO's policy and value model as one trainable module, `PolicyAndValue`: one optimizer for `transformers.Trainer`,
`forward` returning `(policy logits, per-token values)` (TRL's PolicyAndValueWrapper). Three layouts; a critic-free
estimator (`with_value=False`) leaves the value parts out:
- "separate" (`build_separate_model`, here): a causal LM policy (full, LoRA, QLoRA) beside a
  `*ForSequenceClassification` value model, usually a reward model copy ("critic from RM", Huang et al. 2024,
  arXiv:2403.17031); reference and reward models live outside. Two backbone passes per forward, three copies of the
  base weights.
- "adapters" and "shared" (`rlhfkit/ppo/adapters.py`): ONE PEFT base with trainable policy ("default") and value
  ("value") adapters, or one adapter whose last hidden state the value head reads; the reference is the base with
  all adapters off.
`PeftModel.set_adapter` freezes the other adapters; `PolicyAndValue.use_adapter` re-enables the trainable ones.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

from peft import get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import save_file
from torch import nn

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
