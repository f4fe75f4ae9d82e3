"""Every model loader of the toolkit; the checks of model folders that run before any weights load are in
`rlhfkit/model_folders.py`, reward models (a folder or an ensemble) load in `rlhfkit/reward.py`.

* Tokenizers: `load_tokenizer` (pad token set).
* Models that train: `load_model` (the policy or a new reward model: full / LoRA / QLoRA base), `lora_config`,
  `load_value_model` (PPO's critic).
* Models that are only run: `load_frozen_model` (a reference, a teacher: `load_teacher`, a reward model), `load_policy`
  (a policy that generates for evaluation), in the run's precision, optionally 4/8-bit.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

from rlhfkit.errors import ConfigError
from rlhfkit.log import score_head_from_elsewhere
from rlhfkit.model_folders import VALUE_HEAD_FILE, Checkpoint, is_adapter_dir, resolve_checkpoint


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it has a pad token (the EOS token if it has none).

    Right padding is used for training; generation code switches to left padding itself.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def compute_dtype(config) -> torch.dtype:
    """The dtype matmuls run in: bf16 / fp16 if the config trains in it, else fp32."""
    return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32


def lora_config(model_args, task_type: str) -> LoraConfig | None:
    """The PEFT LoRA config for `train_mode` lora/qlora, or None for full fine-tuning.

    `task_type` is "CAUSAL_LM" or "SEQ_CLS"; for SEQ_CLS the `score` head is trained and saved with the adapter
    (`modules_to_save`), so a LoRA reward model reloads with its trained head.
    """
    if model_args.train_mode == "full":
        return None
    targets = model_args.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=targets, use_dora=model_args.use_dora, task_type=task_type,
                      modules_to_save=["score"] if task_type == "SEQ_CLS" else None)


def load_model(model_cls, model_args, config, tokenizer, **kwargs):
    """Load `model_cls.from_pretrained(model_name_or_path)` for the chosen train_mode.

    full: weights in fp32 (mixed precision casts on the fly); lora: weights in the compute dtype (bf16 on most
    GPUs); qlora: 4-bit NF4 weights with double quantization (Dettmers et al. 2023). The model's pad token is set
    from the tokenizer (sequence classifiers need it to find the last token). Extra kwargs go to from_pretrained.
    """
    dtype = torch.float32 if model_args.train_mode == "full" else compute_dtype(config)
    if model_args.train_mode == "qlora":
        kwargs["quantization_config"] = quantization_config("4bit", dtype)
        kwargs["device_map"] = quantized_device_map(config)
    # A reward model starts from a causal LM: its score head is new by design.
    quiet = score_head_from_elsewhere() if model_cls is AutoModelForSequenceClassification else nullcontext()
    with quiet:
        model = model_cls.from_pretrained(model_args.model_name_or_path, dtype=dtype,
                                          trust_remote_code=config.trust_remote_code, **kwargs)
    set_pad_token(model, tokenizer)
    return model


def match_trainable_dtype(model, config) -> None:
    """Cast trainable parameters to the run's compute dtype.

    TRL casts the trainable parameters of quantized (QLoRA) models to bf16, as the QLoRA paper does for bf16
    training. When the run computes in fp32 or fp16 (CPU, older GPUs), a plain trainable module such as a reward
    model's `score` head would then get fp32 inputs and bf16 weights and fail; this undoes that cast.
    Call it after the trainer is built and before `train()` (the optimizer is created in `train()`).
    """
    dtype = compute_dtype(config)
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)


# --------------------------------------------------------------------------------------------------------------
# Models that are only run: precision, quantization, one loader

def inference_dtype(config=None) -> torch.dtype:
    """The dtype a frozen model computes in: the run's compute dtype (`compute_dtype(config)`, bf16 / fp16 / fp32
    as the run trains); without a training config (stand-alone tools), bf16 on GPUs that support it, else fp32.
    """
    if config is not None:
        return compute_dtype(config)
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def quantization_config(bits: str, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for weights in `bits` ("4bit", "8bit" or "none").

    4bit: NF4 with double quantization, matmuls and packed storage in `dtype` (QLoRA, Dettmers et al. 2023; about a
    quarter of the bf16 memory); 8bit: LLM.int8 (Dettmers et al. 2022; about half). Returns None for "none".
    Raises `ConfigError` for any other value.
    """
    if bits in (None, "none"):
        return None
    if bits == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"quantization must be 4bit, 8bit or none, got {bits!r}")


def quantized_device_map(config=None) -> dict | str:
    """Where bitsandbytes puts quantized weights: this process's GPU, or the CPU when there is none."""
    if not torch.cuda.is_available():
        return "cpu"
    return {"": config.local_process_index if config is not None else torch.cuda.current_device()}


def set_pad_token(model, tokenizer) -> None:
    """Give the model (its config, text config and generation config) the tokenizer's pad token id; sequence
    classifiers need it to find the last real token of a padded row.
    """
    model.config.pad_token_id = tokenizer.pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_checkpoint(checkpoint: Checkpoint, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                    **kwargs):
    """Load a resolved checkpoint as it is saved: the base model and, for an adapter folder, the adapter on it.

    CAUSAL_LM loads `AutoModelForCausalLM`; SEQ_CLS loads `AutoModelForSequenceClassification(num_labels=1)`, whose
    `score` head comes from the adapter (reward_model.py saves it with the LoRA weights) or, for PPO's value adapter,
    from `value_head.safetensors`. Weights in `dtype`; extra kwargs (quantization) go to `from_pretrained`.
    Returns a `PeftModel` (adapter, not merged) or a `PreTrainedModel`, in eval mode, on the CPU unless a
    `device_map` is passed.
    """
    model_cls = AutoModelForSequenceClassification if checkpoint.task_type == "SEQ_CLS" else AutoModelForCausalLM
    if checkpoint.task_type == "SEQ_CLS":
        kwargs["num_labels"] = 1
    quiet = score_head_from_elsewhere() if checkpoint.task_type == "SEQ_CLS" and checkpoint.adapter else nullcontext()
    with quiet:  # the score head is the adapter's (or value_head.safetensors), loaded below
        model = model_cls.from_pretrained(checkpoint.base, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    if checkpoint.adapter is None:
        return model.eval()
    peft_config = PeftConfig.from_pretrained(checkpoint.adapter)
    value_head = os.path.join(checkpoint.adapter, VALUE_HEAD_FILE)
    if os.path.isfile(value_head):  # a causal-LM adapter + a linear head: a sequence scorer with `score` = the head
        with torch.no_grad():
            model.score.weight.copy_(load_file(value_head)["weight"])
        peft_config.task_type = None  # a plain PeftModel: the head is the base's own `score`, not a saved module
    peft_config.inference_mode = True
    return PeftModel.from_pretrained(model, checkpoint.adapter, config=peft_config).eval()


def load_frozen_model(path: str, config=None, *, task_type: str | None = None, tokenizer=None,
                      quantization: str = "none", dtype: torch.dtype | None = None, device: str | None = None,
                      merge: bool = True, base_model_path: str | None = None, trust_remote_code: bool = False):
    """Load a model that is only run, never trained: a GKD teacher, a reward model, a sampling policy, a reference.

    `path`: a full model or LoRA adapter folder (`resolve_checkpoint`; `base_model_path` overrides the recorded base).
    `config`: the run's training config, for the precision (`inference_dtype`) and `trust_remote_code`; None for
    stand-alone tools (bf16 on GPUs that support it, else fp32); `dtype` overrides it. `task_type`: "CAUSAL_LM" or
    "SEQ_CLS" (num_labels 1), None: the checkpoint's own. `tokenizer`: its pad token id is set on the model.
    `quantization`: "none", "4bit" or "8bit" (weights on this process's GPU, or the CPU). `device`: where to move the
    model (None: the CPU, for a trainer to place). `merge`: fold a LoRA adapter in (not for quantized weights).

    Returns the model in eval mode with every parameter frozen: a `PreTrainedModel`, or a `PeftModel` when an
    adapter is not merged. A merged adapter's `config._name_or_path` is `path`.
    Raises `PathNotFoundError` (see `resolve_checkpoint`) or `ConfigError` (a bad `quantization`).
    """
    checkpoint = resolve_checkpoint(path, base_model_path)
    if task_type is not None:
        checkpoint = checkpoint._replace(task_type=task_type)
    dtype = dtype or inference_dtype(config)
    trust_remote_code = bool(getattr(config, "trust_remote_code", trust_remote_code))
    kwargs = {}
    quantized = quantization_config(quantization, dtype)
    if quantized is not None:
        kwargs = {"quantization_config": quantized, "device_map": quantized_device_map(config)}
    model = load_checkpoint(checkpoint, dtype, trust_remote_code, **kwargs)
    if checkpoint.adapter and merge and quantized is None:
        model = model.merge_and_unload()
        model.config._name_or_path = path
    if tokenizer is not None:
        set_pad_token(model, tokenizer)
    if device is not None and quantized is None:
        model = model.to(device)
    return model.eval().requires_grad_(False)


def load_value_model(path: str, args, config, tokenizer, train_mode: str):
    """PPO's value model: a `*ForSequenceClassification(num_labels=1)` from `path`, trainable in `train_mode`.

    `path` is a full checkpoint (a reward model, or a causal LM that gets a fresh score head) or a LoRA reward model
    from reward_model.py. LoRA / QLoRA: a LoRA reward adapter keeps training as the value adapter (with its score
    head); a full checkpoint gets a new LoRA adapter (the policy's LoRA settings) plus a trainable head.
    Full: every weight trains (a LoRA reward adapter is merged first).
    """
    base_args = dataclasses.replace(args, model_name_or_path=resolve_checkpoint(path).base, train_mode=train_mode)
    base = load_model(AutoModelForSequenceClassification, base_args, config, tokenizer, num_labels=1)
    if train_mode == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if is_adapter_dir(path):
        model = PeftModel.from_pretrained(base, path, is_trainable=train_mode != "full")
        if train_mode == "full":  # PEFT froze the base weights; the merged model trains as a whole
            return model.merge_and_unload().requires_grad_(True)
        return model
    if train_mode == "full":
        return base
    return get_peft_model(base, lora_config(base_args, "SEQ_CLS"))


def load_policy(path: str, device: str | None = None, trust_remote_code: bool = False):
    """A policy that only generates (evaluation, rejection sampling, the demo print): a full checkpoint, or a LoRA
    adapter merged into its recorded base, in `inference_dtype()`. Returns `(model, tokenizer)`: the model in eval mode
    on `device` (default: CUDA if available, else CPU), the tokenizer (the adapter folder's own if it has one, else
    the base's) padding on the left.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    has_tokenizer = any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = load_tokenizer(path if has_tokenizer else resolve_checkpoint(path).base, trust_remote_code)
    tokenizer.padding_side = "left"
    model = load_frozen_model(path, task_type="CAUSAL_LM", tokenizer=tokenizer, device=device,
                              trust_remote_code=trust_remote_code)
    return model, tokenizer


def load_teacher(config, tokenizer):
    """GKD's frozen teacher (`config.teacher_model_name_or_path`) in the run's compute dtype, or in 4-bit NF4 / 8-bit
    with bitsandbytes (`--teacher_quantization`: about a quarter / half of the bf16 memory; also on CPU).
    """
    return load_frozen_model(config.teacher_model_name_or_path, config, task_type="CAUSAL_LM", tokenizer=tokenizer,
                             quantization=config.teacher_quantization)
