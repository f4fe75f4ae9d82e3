"""The keyword arguments every trainer of train_rlhf.py takes; each method's flow adds its own to them."""

from __future__ import annotations

from datasets import Dataset

from rlhfkit.model import lora_config
from rlhfkit.outputs import NonFiniteLossGuard


def trainer_inputs(model, args, config, tokenizer, train_rows: list[dict], eval_rows: list[dict]) -> dict:
    """`model`, `args` (the method's config), `train_dataset`, `eval_dataset` (None without held-out rows),
    `processing_class`, `peft_config` (None for full fine-tuning; with LoRA / QLoRA the reference is the policy with
    its adapter off, no second copy in memory) and `callbacks` (the NaN guard: it stops at a NaN / inf loss before
    it is saved).
    """
    return {"model": model, "args": config, "train_dataset": Dataset.from_list(train_rows),
            "eval_dataset": Dataset.from_list(eval_rows) if eval_rows else None, "processing_class": tokenizer,
            "peft_config": lora_config(args, "CAUSAL_LM"), "callbacks": [NonFiniteLossGuard()]}
