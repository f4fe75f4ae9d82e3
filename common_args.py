"""Arguments shared by every script: which model, trained how (full / LoRA / QLoRA), on which data.

Edit the defaults below, or override any field on the command line: `python train_rlhf.py --lora_r 32`.
`--trust_remote_code` (default False) and `--max_length` live in the training config (TRL's), not here.
"""

from dataclasses import dataclass
from typing import Literal

DEMO_MODEL = "models/SmolLM2-135M-Instruct"  # made by `python -m utils.demo_model`


@dataclass
class ModelArgs:
    model_name_or_path: str = DEMO_MODEL  # a local checkpoint directory (config.json + safetensors + tokenizer)
    train_mode: Literal["full", "lora", "qlora"] = "lora"  # qlora = 4-bit NF4 base + LoRA (not with ZeRO-3)
    train_data_path: str = "data_example/data.jsonl"  # JSON Lines; see README "Data format"
    eval_data_path: str | None = None  # a separate eval file; if None, eval_split_size rows are held out
    eval_split_size: float = 0.1  # held-out eval rows: a fraction if < 1, a count if >= 1, 0 for none
    drop_bad_rows: bool = False  # False: stop on bad rows and list them; True: skip them and count them
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA branch
    lora_target_modules: str = "all-linear"  # "all-linear" or comma-separated names, e.g. "q_proj,v_proj"
    use_dora: bool = False  # DoRA (weight-decomposed LoRA, Liu et al. 2024): a bit better, a bit slower


@dataclass
class CommonArgs(ModelArgs):
    rlhf_type: str = "DPO"  # the method; train_rlhf.py's METHODS table lists the choices
