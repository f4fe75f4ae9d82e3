"""Step 2: align a policy with one RLHF method, picked with --rlhf_type (see METHODS below).

    python train_rlhf.py --rlhf_type DPO                    # defaults from common_args.py + rlhf_args/dpo_config.py
    python train_rlhf.py --rlhf_type DPO --train_mode qlora --beta 0.2 --output_dir output/dpo_qlora
    python train_rlhf.py --config recipes/cpu/dpo.yaml --beta 0.2             # a recipe; flags override it
    accelerate launch --config_file ds_config/deepspeed_zero3.yaml train_rlhf.py --rlhf_type DPO

Each method is one row of METHODS: its config class in rlhf_args/ (TRL's config with this toolkit's defaults),
its trainer, the loader for the data it needs and, for the online methods, what they use besides the policy (reward
functions, reward / value / reference models). The row names them as "module:name" and only the chosen method's
modules are imported, so a DPO run loads no PPO code.
With LoRA / QLoRA the reference model is the policy with its adapter switched off (no second copy in memory);
with full fine-tuning TRL loads a frozen reference from the same checkpoint.
"""

import utils.log  # noqa: F401, I001  (first: filters known-harmless library messages before libraries load)
import argparse
import dataclasses
import importlib
import sys
from dataclasses import dataclass

from datasets import Dataset
from transformers import AutoModelForCausalLM

from common_args import CommonArgs
from utils.args import parse_args, read_config_file
from utils.checkpoint import NonFiniteLossGuard
from utils.errors import ConfigError, run_cli
from utils.generation import compare_on_held_out_prompt
from utils.log import info_rank0, show_dataset_progress
from utils.model import (check_lora_targets, check_model_path, check_train_mode, load_model, load_tokenizer,
                         lora_config, match_trainable_dtype)
from utils.outputs import prepare_output_dir, save_outputs
from utils.run_health import run_health


@dataclass(frozen=True)
class Method:
    config: str  # the config dataclass in rlhf_args/
    trainer: str  # the trainer class
    data: str  # (args, config, tokenizer, too_long) -> (train_rows, eval_rows), see utils/data/methods.py
    too_long: str  # what the trainer does with rows longer than max_length (printed with their count)
    inputs: str | None = None  # (args, config, tokenizer) -> dict: checked before any weights load (online methods)
    models: str | None = None  # (args, config, tokenizer, **inputs) -> extra trainer kwargs: reward, value models


CUTS_ANSWER = "cuts the answer, keeping the prompt"
METHODS = {
    "DPO": Method("rlhf_args.dpo_config:DPOConfig", "utils.dpo:DPOTrainer", "utils.data:preference_data",
                  "DPOTrainer cuts them at the end (keep_start)"),
    "CPO": Method("rlhf_args.cpo_config:CPOConfig", "trl.experimental.cpo:CPOTrainer", "utils.data:preference_data",
                  f"CPOTrainer {CUTS_ANSWER}"),
    "SimPO": Method("rlhf_args.simpo_config:SimPOConfig", "trl.experimental.cpo:CPOTrainer",
                    "utils.data:preference_data", f"CPOTrainer {CUTS_ANSWER}"),
    "CPOSimPO": Method("rlhf_args.cposimpo_config:CPOSimPOConfig", "trl.experimental.cpo:CPOTrainer",
                       "utils.data:preference_data", f"CPOTrainer {CUTS_ANSWER}"),
    "ORPO": Method("rlhf_args.orpo_config:ORPOConfig", "trl.experimental.orpo:ORPOTrainer",
                   "utils.data:preference_data", f"ORPOTrainer {CUTS_ANSWER}"),
    "KTO": Method("rlhf_args.kto_config:KTOConfig", "trl:KTOTrainer", "utils.data:kto_data",
                  "KTOTrainer cuts them at the end (a too-long prompt is dropped)"),
    "SFT": Method("rlhf_args.sft_config:SFTConfig", "trl:SFTTrainer", "utils.data:sft_data",
                  "SFTTrainer cuts them at the end (keep_start)"),
    "PPO": Method("rlhf_args.ppo_config:PPOConfig", "utils.ppo_trainer:PPOTrainer", "utils.online:ppo_prompt_data",
                  "PPOTrainer keeps their last tokens", "utils.online:online_inputs", "utils.online:ppo_models"),
    "RLOO": Method("rlhf_args.rloo_config:RLOOConfig", "utils.trl_online:RLOOTrainer", "utils.data:prompt_data",
                   "RLOOTrainer keeps their last tokens", "utils.online:online_inputs", "utils.online:rloo_models"),
    "GRPO": Method("rlhf_args.grpo_config:GRPOConfig", "utils.trl_online:GRPOTrainer", "utils.data:prompt_data",
                   "GRPOTrainer keeps their last tokens", "utils.online:online_inputs", "utils.online:rloo_models"),
}


def load(spec: str | None):
    """The object a METHODS entry names, `"module:name"`, imported now (None for None)."""
    if spec is None:
        return None
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


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
        where = f" (rlhf_type in {known.config})" if not known.rlhf_type and from_file else ""
        raise ConfigError(f"unknown --rlhf_type {rlhf_type!r}{where}; choose one of: {', '.join(METHODS)}")
    return rlhf_type


def methods_taking(name: str) -> list[str]:
    """The methods whose config has a field `name`, for the message about a flag of another method."""
    return [m for m, row in METHODS.items() if name in {f.name for f in dataclasses.fields(load(row.config))}]


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
    args, config = parse_args((CommonArgs, load(method.config)), argv, owners=methods_taking)

    # 0. Settings: output folder, model path, LoRA targets; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_model_path(args.model_name_or_path)
    if args.train_mode != "full":
        check_lora_targets(args.model_name_or_path, args.lora_target_modules)

    # 1. Inputs: online methods' reward sources, then the data; every row is checked before any model is loaded.
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)
    inputs = load(method.inputs)(args, config, tokenizer) if method.inputs else {}
    train_rows, eval_rows = load(method.data)(args, config, tokenizer, method.too_long)
    if args.check:  # --check: show what would be trained, load no weights
        from utils.preflight import preflight  # here: a training run loads no preflight code

        return preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, args.rlhf_type)
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Models: the policy (LoRA: the reference is the policy with its adapter off), then the method's extra models
    # (PPO: reward, value and, for full fine-tuning, reference; RLOO/GRPO: the reward model).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    extra = load(method.models)(args, config, tokenizer, **inputs) if method.models else {}

    # 3. Trainer.
    trainer = load(method.trainer)(
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

    # 5. Evaluate and save. Pairwise methods: on how many held-out pairs does the policy now prefer the chosen answer?
    if run.eval_rows:
        metrics = trainer.evaluate()
        if "eval_rewards/accuracies" in metrics:
            info_rank0(f"[{args.rlhf_type}] held-out pairs ({len(run.eval_rows)}): the chosen answer ranks above the "
                       f"rejected one in {metrics['eval_rewards/accuracies']:.0%} of them, reward margin "
                       f"{metrics['eval_rewards/margins']:+.3f} (eval_rewards/accuracies and /margins)")
    save_outputs(trainer, {"common": args, "training": config})
    what = "model" if args.train_mode == "full" else "LoRA adapter"
    info_rank0(f"[{args.rlhf_type}] {what} saved to {config.output_dir} (curves: {config.output_dir}/"
               f"training_curves.png)")

    # 6. Run health: what looks wrong in the log, in plain English (also output_dir/report.html).
    if trainer.is_world_process_zero():
        run_health(config.output_dir)

    # 7. Did it change anything? One held-out prompt, answered by the starting model and by the saved one.
    if run.eval_rows and trainer.is_world_process_zero() and trainer.args.world_size == 1:
        compare_on_held_out_prompt(args, config, run.eval_rows)
    return trainer


if __name__ == "__main__":
    run_cli(main)
