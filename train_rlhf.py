"""Step 2: align a policy with one RLHF method, picked with --rlhf_type (see METHODS below).

    python train_rlhf.py --rlhf_type DPO                    # defaults from common_args.py + rlhf_args/dpo_config.py
    python train_rlhf.py --rlhf_type DPO --train_mode qlora --beta 0.2 --output_dir output/dpo_qlora
    accelerate launch --config_file ds_config/deepspeed_zero3.yaml train_rlhf.py --rlhf_type DPO

Each method is one row of METHODS: its config class in rlhf_args/ (TRL's config with this toolkit's defaults),
its trainer, the loader for the data it needs, and any extra trainer arguments (e.g. a reward model).
With LoRA / QLoRA the reference model is the policy with its adapter switched off (no second copy in memory);
with full fine-tuning TRL loads a frozen reference from the same checkpoint.
"""

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import DPOTrainer, KTOTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from common_args import CommonArgs
from rlhf_args.cpo_config import CPOConfig
from rlhf_args.cposimpo_config import CPOSimPOConfig
from rlhf_args.dpo_config import DPOConfig
from rlhf_args.grpo_config import GRPOConfig
from rlhf_args.kto_config import KTOConfig
from rlhf_args.orpo_config import ORPOConfig
from rlhf_args.ppo_config import PPOConfig
from rlhf_args.rloo_config import RLOOConfig
from rlhf_args.sft_config import SFTConfig
from rlhf_args.simpo_config import SimPOConfig
from utils.args import parse_args
from utils.data import kto_data, preference_data, prompt_data, sft_data
from utils.model import (check_model_path, check_train_mode, load_model, load_tokenizer, lora_config,
                         match_trainable_dtype)
from utils.outputs import prepare_output_dir, save_outputs
from utils.online import GRPOTrainer, RLOOTrainer, ppo_extra, rloo_extra
from utils.ppo_trainer import PPOTrainer


@dataclass(frozen=True)
class Method:
    config: type  # the config dataclass in rlhf_args/
    trainer: type  # the trainer class
    data: Callable  # (args, config, tokenizer, too_long) -> (train_rows, eval_rows), from utils/data.py
    too_long: str  # what the trainer does with rows longer than max_length (printed with their count)
    extra: Callable | None = None  # (args, config, tokenizer) -> extra trainer kwargs, e.g. reward models


METHODS = {
    "DPO": Method(DPOConfig, DPOTrainer, preference_data, "DPOTrainer cuts them at the end (keep_start)"),
    "CPO": Method(CPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "SimPO": Method(SimPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "CPOSimPO": Method(CPOSimPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "ORPO": Method(ORPOConfig, ORPOTrainer, preference_data, "ORPOTrainer cuts the answer, keeping the prompt"),
    "KTO": Method(KTOConfig, KTOTrainer, kto_data, "KTOTrainer cuts them at the end (a too-long prompt is dropped)"),
    "SFT": Method(SFTConfig, SFTTrainer, sft_data, "SFTTrainer cuts them at the end (keep_start)"),
    "PPO": Method(PPOConfig, PPOTrainer, prompt_data, "PPOTrainer keeps their last tokens", ppo_extra),
    "RLOO": Method(RLOOConfig, RLOOTrainer, prompt_data, "RLOOTrainer keeps their last tokens", rloo_extra),
    "GRPO": Method(GRPOConfig, GRPOTrainer, prompt_data, "GRPOTrainer keeps their last tokens", rloo_extra),
}


def pick_method(argv: list[str]) -> str:
    """Read --rlhf_type before the full parse, since it decides which config class parses the rest."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--rlhf_type", default=CommonArgs.rlhf_type)
    rlhf_type = peek.parse_known_args(argv)[0].rlhf_type
    if rlhf_type not in METHODS:
        sys.exit(f"error: unknown --rlhf_type {rlhf_type!r}; choose one of: {', '.join(METHODS)}")
    return rlhf_type


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    method = METHODS[pick_method(argv)]
    args, config = parse_args((CommonArgs, method.config), argv)
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_model_path(args.model_name_or_path)

    # 1. Data: every row is checked before any model is loaded.
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)
    train_rows, eval_rows = method.data(args, config, tokenizer, method.too_long)

    # 2. Policy model (the reference is derived from it by the trainer).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)

    # 3. Train.
    trainer = method.trainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(args, "CAUSAL_LM"),
        **(method.extra(args, config, tokenizer) if method.extra else {}),
    )
    match_trainable_dtype(trainer.model, config)  # QLoRA: TRL casts trainable weights to bf16
    trainer.train(resume_from_checkpoint=resume)

    # 4. Evaluate and save.
    if eval_rows:
        trainer.evaluate()
    save_outputs(trainer, {"common": args, "training": config})
    if trainer.is_world_process_zero():
        what = "model" if args.train_mode == "full" else "LoRA adapter"
        print(f"[{args.rlhf_type}] {what} saved to {config.output_dir} "
              f"(curves: {config.output_dir}/training_curves.png)")
    return trainer


if __name__ == "__main__":
    main()
