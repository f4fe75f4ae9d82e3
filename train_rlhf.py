"""Step 2: align a policy with one RLHF method, picked with --rlhf_type (see METHODS below).

    python train_rlhf.py --rlhf_type DPO                    # defaults from common_args.py + rlhf_args/dpo_config.py
    python train_rlhf.py --rlhf_type DPO --train_mode qlora --beta 0.2 --output_dir output/dpo_qlora
    python train_rlhf.py --config recipes/cpu/dpo.yaml --beta 0.2             # a recipe; flags override it
    accelerate launch --config_file ds_config/deepspeed_zero3.yaml train_rlhf.py --rlhf_type DPO

Each method is one row of METHODS: its config class in rlhf_args/ (TRL's config with this toolkit's defaults),
its trainer, the loader for the data it needs, and any extra trainer arguments (e.g. a reward model).
With LoRA / QLoRA the reference model is the policy with its adapter switched off (no second copy in memory);
with full fine-tuning TRL loads a frozen reference from the same checkpoint.
"""

import utils.log  # noqa: F401, I001  (first: filters known-harmless library messages before libraries load)
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
from utils.args import parse_args, read_config_file
from utils.checkpoint import NonFiniteLossGuard
from utils.data import kto_data, preference_data, prompt_data, sft_data
from utils.errors import ConfigError, run_cli
from utils.generation import compare_on_held_out_prompt
from utils.log import show_dataset_progress
from utils.model import (check_lora_targets, check_model_path, check_train_mode, load_model, load_tokenizer,
                         lora_config, match_trainable_dtype)
from utils.online import GRPOTrainer, RLOOTrainer, check_online_settings, ppo_extra, ppo_prompt_data, rloo_extra
from utils.outputs import prepare_output_dir, save_outputs
from utils.ppo_trainer import PPOTrainer
from utils.preflight import preflight


@dataclass(frozen=True)
class Method:
    config: type  # the config dataclass in rlhf_args/
    trainer: type  # the trainer class
    data: Callable  # (args, config, tokenizer, too_long) -> (train_rows, eval_rows), from utils/data/methods.py
    too_long: str  # what the trainer does with rows longer than max_length (printed with their count)
    extra: Callable | None = None  # (args, config, tokenizer) -> extra trainer kwargs, e.g. reward models
    check: Callable | None = None  # (args, config) -> None: raises on settings it can refute before weights load


METHODS = {
    "DPO": Method(DPOConfig, DPOTrainer, preference_data, "DPOTrainer cuts them at the end (keep_start)"),
    "CPO": Method(CPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "SimPO": Method(SimPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "CPOSimPO": Method(CPOSimPOConfig, CPOTrainer, preference_data, "CPOTrainer cuts the answer, keeping the prompt"),
    "ORPO": Method(ORPOConfig, ORPOTrainer, preference_data, "ORPOTrainer cuts the answer, keeping the prompt"),
    "KTO": Method(KTOConfig, KTOTrainer, kto_data, "KTOTrainer cuts them at the end (a too-long prompt is dropped)"),
    "SFT": Method(SFTConfig, SFTTrainer, sft_data, "SFTTrainer cuts them at the end (keep_start)"),
    "PPO": Method(PPOConfig, PPOTrainer, ppo_prompt_data, "PPOTrainer keeps their last tokens", ppo_extra,
                  check_online_settings),
    "RLOO": Method(RLOOConfig, RLOOTrainer, prompt_data, "RLOOTrainer keeps their last tokens", rloo_extra,
                   check_online_settings),
    "GRPO": Method(GRPOConfig, GRPOTrainer, prompt_data, "GRPOTrainer keeps their last tokens", rloo_extra,
                   check_online_settings),
}


def pick_method(argv: list[str]) -> str:
    """Read --rlhf_type (from the flags, else from the `--config` file) before the full parse, since it decides which
    config class parses the rest. Raises `ConfigError` for an unknown method."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--rlhf_type")
    peek.add_argument("--config")
    known = peek.parse_known_args(argv)[0]
    from_file = read_config_file(known.config).get("rlhf_type") if known.config else None
    rlhf_type = known.rlhf_type or from_file or CommonArgs.rlhf_type
    if rlhf_type not in METHODS:
        raise ConfigError(f"unknown --rlhf_type {rlhf_type!r}; choose one of: {', '.join(METHODS)}")
    return rlhf_type


@dataclass
class Run:
    """What `build_trainer` returns: the trainer, ready to train, and the settings `main` needs to finish the run."""

    trainer: object
    args: CommonArgs
    config: object
    resume: str | None  # the checkpoint to resume from, or None
    eval_rows: list[dict]  # the held-out rows (empty: no evaluation)


def build_trainer(argv: list[str]) -> Run | None:
    """Steps 0-3 of a run: check every setting, load the data, the policy and the method's extra models, build the
    trainer. With `--check`, stops after the data step, prints the preflight report and returns None.
    Raises a `UserError` for bad input before any weights load. Tests and benchmarks start runs here."""
    method = METHODS[pick_method(argv)]
    args, config = parse_args((CommonArgs, method.config), argv)

    # 0. Settings: output folder, paths, LoRA targets and the method's own checks; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_model_path(args.model_name_or_path)
    if args.train_mode != "full":
        check_lora_targets(args.model_name_or_path, args.lora_target_modules)
    if method.check:
        method.check(args, config)

    # 1. Data: every row is checked before any model is loaded.
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)
    train_rows, eval_rows = method.data(args, config, tokenizer, method.too_long)
    if args.check:  # --check: show what would be trained, load no weights
        return preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, args.rlhf_type)
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Models: the policy (LoRA: the reference is the policy with its adapter off), then the method's extra models
    # (PPO: reward, value and, for full fine-tuning, reference; RLOO/GRPO: the reward model).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    extra = method.extra(args, config, tokenizer) if method.extra else {}

    # 3. Trainer.
    trainer = method.trainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(args, "CAUSAL_LM"),
        callbacks=[NonFiniteLossGuard()],  # stops at a NaN / inf loss before it is saved
        **extra,
    )
    match_trainable_dtype(trainer.model, config)  # QLoRA: TRL casts trainable weights to bf16
    return Run(trainer, args, config, resume, eval_rows)


def main(argv=None):
    run = build_trainer(sys.argv[1:] if argv is None else list(argv))
    if run is None:  # --check: the preflight report is all
        return None
    trainer, args, config = run.trainer, run.args, run.config

    # 4. Train.
    trainer.train(resume_from_checkpoint=run.resume)

    # 5. Evaluate and save.
    if run.eval_rows:
        trainer.evaluate()
    save_outputs(trainer, {"common": args, "training": config})
    if trainer.is_world_process_zero():
        what = "model" if args.train_mode == "full" else "LoRA adapter"
        print(f"[{args.rlhf_type}] {what} saved to {config.output_dir} "
              f"(curves: {config.output_dir}/training_curves.png)")

    # 6. Did it change anything? One held-out prompt, answered by the starting model and by the saved one.
    if run.eval_rows and trainer.is_world_process_zero() and trainer.args.world_size == 1:
        compare_on_held_out_prompt(args, config, run.eval_rows)
    return trainer


if __name__ == "__main__":
    run_cli(main)
