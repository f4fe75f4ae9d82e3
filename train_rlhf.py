"""Step 2: align a policy with one RLHF method, picked with --rlhf_type (see METHODS below).

    python train_rlhf.py --rlhf_type DPO                    # defaults from common_args.py + rlhf_args/dpo_config.py
    python train_rlhf.py --rlhf_type DPO --train_mode qlora --beta 0.2 --output_dir output/dpo_qlora
    python train_rlhf.py --config recipes/cpu/dpo.yaml --beta 0.2             # a recipe; flags override it
    accelerate launch --config_file ds_config/deepspeed_zero3.yaml train_rlhf.py --rlhf_type DPO

Each method is one file in rlhf_args/: its config class (TRL's config with this toolkit's defaults) and, at the end,
its `METHOD` row: the trainer, the loader for the data it needs and, for the online methods, what they use besides
the policy (reward functions, reward / value / reference models). Only the chosen method's file is imported, so a
DPO run loads no PPO code.
With LoRA / QLoRA the reference model is the policy with its adapter switched off (no second copy in memory);
with full fine-tuning TRL loads a frozen reference from the same checkpoint.
"""

from rlhfkit.log import info_rank0, show_dataset_progress  # first: filters known-harmless library messages

import dataclasses
import importlib
import importlib.util
import sys
from dataclasses import dataclass

from datasets import Dataset
from transformers import AutoModelForCausalLM

from common_args import CommonArgs
from rlhf_args.base_config import Method
from rlhfkit.args import parse_args, take_config_flag
from rlhfkit.errors import ConfigError, ToolParser, run_cli
from rlhfkit.model import (
    check_lora_targets,
    check_model_path,
    check_train_mode,
    load_model,
    load_tokenizer,
    lora_config,
    match_trainable_dtype,
)
from rlhfkit.outputs import NonFiniteLossGuard, prepare_output_dir, save_outputs
from rlhfkit.report.compare import compare_on_held_out_prompt
from rlhfkit.report.run_health import run_health

# The method's file in rlhf_args/ ends with `METHOD = Method(config, trainer, data loader, ...)`, written with ordinary
# imports; only the chosen method's file is imported, so a DPO run loads no PPO code.
METHODS = {
    "DPO": "rlhf_args.dpo_config",
    "CPO": "rlhf_args.cpo_config",
    "SimPO": "rlhf_args.simpo_config",
    "CPOSimPO": "rlhf_args.cposimpo_config",
    "ORPO": "rlhf_args.orpo_config",
    "KTO": "rlhf_args.kto_config",
    "SFT": "rlhf_args.sft_config",
    "PPO": "rlhf_args.ppo_config",
    "RLOO": "rlhf_args.rloo_config",
    "GRPO": "rlhf_args.grpo_config",
}


def load_method(name: str) -> Method:
    """The `METHOD` row of rlhf_args/<name>_config.py, imported now. Raises `ConfigError` if the file is not there
    (a copy of the toolkit made for other methods, docs/copy-a-script.md).
    """
    if importlib.util.find_spec(METHODS[name]) is None:
        raise ConfigError(f"--rlhf_type {name}: {METHODS[name].replace('.', '/')}.py is not in this folder (a copy "
                          f"made for other methods?); copy it and what it imports from the toolkit")
    return importlib.import_module(METHODS[name]).METHOD


def pick_method(argv: list[str]) -> str:
    """Read --rlhf_type (from the flags, else from the `--config` file) before the full parse, since it decides which
    config class parses the rest. Raises `ConfigError` for an unknown method.
    """
    peek = ToolParser(prog="train_rlhf.py", add_help=False)
    peek.add_argument("--rlhf_type")
    known, path = peek.parse_known_args(argv)[0], take_config_flag(argv)[0]
    from_file = None
    if path:
        from rlhfkit.recipes import read_config_file  # here: a run without a recipe loads no recipe code

        from_file = read_config_file(path).get("rlhf_type")
    rlhf_type = known.rlhf_type or from_file or CommonArgs.rlhf_type
    if rlhf_type not in METHODS:
        where = f" (rlhf_type in {path})" if not known.rlhf_type and from_file else ""
        raise ConfigError(f"unknown --rlhf_type {rlhf_type!r}{where}; choose one of: {', '.join(METHODS)}")
    return rlhf_type


def methods_taking(name: str) -> list[str]:
    """The methods whose config has a field `name`, for the message about a flag of another method."""
    return [m for m in METHODS if name in {f.name for f in dataclasses.fields(load_method(m).config)}]


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
    Raises a `UserError` for bad input before any weights load. Tests and benchmarks start runs here.
    """
    method = load_method(pick_method(argv))
    args, config = parse_args((CommonArgs, method.config), argv, owners=methods_taking)

    # 0. Settings: output folder, model path, LoRA targets; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_model_path(args.model_name_or_path)
    if args.train_mode != "full":
        check_lora_targets(args.model_name_or_path, args.lora_target_modules)

    # 1. Inputs: the data (every row checked), then the online methods' reward sources (checked against the rows).
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)
    train_rows, eval_rows = method.data(args, config, tokenizer, method.too_long)
    inputs = method.inputs(args, config, tokenizer, train_rows + eval_rows) if method.inputs else {}
    if args.check:  # --check: show what would be trained, load no weights
        from rlhfkit.report.preflight import preflight  # here: a training run loads no preflight code

        return preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, args.rlhf_type)
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Models: the policy (LoRA: the reference is the policy with its adapter off), then the method's extra models
    # (PPO: reward, value and, for full fine-tuning, reference; RLOO/GRPO: the reward model).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    extra = method.models(args, config, tokenizer, **inputs) if method.models else {}

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

    # 5. Evaluate and save. Pairwise methods: on how many held-out pairs does the policy now prefer the chosen answer?
    if run.eval_rows:
        metrics = trainer.evaluate()
        if "eval_rewards/accuracies" in metrics:
            info_rank0(f"[{args.rlhf_type}] held-out pairs ({len(run.eval_rows)}): the chosen answer ranks above the "
                       f"rejected one in {metrics['eval_rewards/accuracies']:.0%} of them, reward margin "
                       f"{metrics['eval_rewards/margins']:+.3f} (eval_rewards/accuracies and /margins)")
    save_outputs(trainer, args.rlhf_type, args, config)
    what = "model" if args.train_mode == "full" else "LoRA adapter"
    info_rank0(f"[{args.rlhf_type}] {what} saved to {config.output_dir} (curves: {config.output_dir}/"
               f"training_curves.png)")

    # 6. Run health: what looks wrong in the log, in plain English (also output_dir/report.html).
    if trainer.is_world_process_zero():
        run_health(config.output_dir)

    # 7. Did it change anything? One held-out prompt, answered by the starting model and by the saved one.
    if run.eval_rows and trainer.is_world_process_zero() and trainer.args.world_size == 1:
        compare_on_held_out_prompt(args, config, run.eval_rows)
    trainer.accelerator.end_training()  # every rank closes its process group before it exits
    return trainer


if __name__ == "__main__":
    run_cli(main)
