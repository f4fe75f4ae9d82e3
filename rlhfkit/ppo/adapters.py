"""PPO's one-base layouts: policy and value model as LoRA adapters on ONE PEFT base (`rlhfkit/ppo/models.py` has
`PolicyAndValue` and the "separate" layout).
- "adapters" (`build_adapters_model`): trainable policy ("default") and value ("value") adapters, an fp32
  `value_head`, optionally reward_model.py's LoRA as the frozen "reward" adapter + `reward_head`; reference: the base
  with all adapters off. One copy of the base weights, two backbone passes per forward.
- "shared" (`build_shared_model`): no value adapter, the value head reads the policy's last hidden state: one pass
  (Schulman et al. 2017, eq. 9). The value loss trains the policy adapter too (Stiennon et al. 2020, arXiv:2009.01325,
  kept them apart), hence a small `vf_coef`.
"""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from rlhfkit.errors import ConfigError
from rlhfkit.ppo.models import POLICY, REWARD, VALUE, PolicyAndValue, backbone_of


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
