"""Step 2: align a policy with one RLHF method, picked with --rlhf_type (see METHODS below).

    python train_rlhf.py --rlhf_type DPO                    # defaults from common_args.py + rlhf_args/dpo_config.py
    python train_rlhf.py --rlhf_type DPO --train_mode qlora --beta 0.2 --output_dir output/dpo_qlora
    python train_rlhf.py --config recipes/cpu/dpo.yaml --beta 0.2             # a recipe; flags override it
    accelerate launch --config_file ds_config/deepspeed_zero3.yaml train_rlhf.py --rlhf_type DPO

A method is its settings, one file in rlhf_args/ (`config_class`), and its run, data -> models -> trainer, one
function that `build_trainer` calls: `offline_trainer` (DPO, CPO, SimPO, CPO-SimPO, ORPO, KTO, SFT;
rlhfkit/methods/offline.py), `rloo_grpo_trainer` (rlhfkit/methods/trl_online.py) or `ppo_trainer`
(rlhfkit/ppo/run.py). Settings and run are imported in the method's branch, so a DPO run loads no PPO code.
With LoRA / QLoRA the reference model is the policy with its adapter switched off (no second copy in memory);
with full fine-tuning TRL loads a frozen reference from the same checkpoint.
"""

from rlhfkit.log import info_rank0, quiet_libraries

quiet_libraries()  # before PEFT, TRL and DeepSpeed load: they print known-harmless messages while loading

import dataclasses
import sys
from dataclasses import dataclass

from common_args import CommonArgs
from rlhfkit.args import parse_args, take_config_flag
from rlhfkit.errors import ConfigError, ToolParser, run_cli
from rlhfkit.model import load_tokenizer, match_trainable_dtype
from rlhfkit.model_folders import check_lora_targets, check_model_path, check_train_mode
from rlhfkit.outputs import prepare_output_dir, save_outputs
from rlhfkit.report.compare import compare_on_held_out_prompt
from rlhfkit.report.health_base import Health, run_health

METHODS = ("DPO", "CPO", "SimPO", "CPOSimPO", "ORPO", "KTO", "SFT", "PPO", "RLOO", "GRPO")


def config_class(rlhf_type: str) -> type:
    """The config class of `rlhf_type`, from its file in rlhf_args/. Raises `ConfigError` if that file is not in
    this folder (a copy of the toolkit made for other methods, docs/copy-a-script.md).
    """
    try:  # imported here: a run reads only its own method's settings
        if rlhf_type == "DPO":
            from rlhf_args.dpo_config import DPOConfig as config
        elif rlhf_type == "CPO":
            from rlhf_args.cpo_config import CPOConfig as config
        elif rlhf_type == "SimPO":
            from rlhf_args.simpo_config import SimPOConfig as config
        elif rlhf_type == "CPOSimPO":
            from rlhf_args.cposimpo_config import CPOSimPOConfig as config
        elif rlhf_type == "ORPO":
            from rlhf_args.orpo_config import ORPOConfig as config
        elif rlhf_type == "KTO":
            from rlhf_args.kto_config import KTOConfig as config
        elif rlhf_type == "SFT":
            from rlhf_args.sft_config import SFTConfig as config
        elif rlhf_type == "PPO":
            from rlhf_args.ppo_config import PPOConfig as config
        elif rlhf_type == "RLOO":
            from rlhf_args.rloo_config import RLOOConfig as config
        else:
            from rlhf_args.grpo_config import GRPOConfig as config
    except ModuleNotFoundError as missing:
        if not (missing.name or "").startswith("rlhf_args."):
            raise
        raise ConfigError(f"--rlhf_type {rlhf_type}: {missing.name.replace('.', '/')}.py is not in this folder (a copy "
                          f"made for other methods?); copy it and what it imports from the toolkit") from None
    return config


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
    found = []
    for method in METHODS:
        try:
            fields = {f.name for f in dataclasses.fields(config_class(method))}
        except ConfigError:  # a copy made for other methods
            continue
        if name in fields:
            found.append(method)
    return found


@dataclass
class Run:
    """What `build_trainer` returns: the trainer, ready to train, and the settings `main` needs to finish the run."""

    trainer: object
    args: CommonArgs
    config: object
    resume: str | None  # the checkpoint to resume from, or None
    eval_rows: list[dict]  # the held-out rows (empty: no evaluation)
    health: Health  # the run-health rules and report sections of the method's family


def build_trainer(argv: list[str]) -> Run | None:
    """Check every setting, then run the method's steps 1-3: data (every row checked), models, trainer. With
    `--check`, stops after the data step, prints the preflight report and returns None.
    Raises a `UserError` for bad input before any weights load. Tests and benchmarks start runs here.
    """
    rlhf_type = pick_method(argv)
    args, config = parse_args((CommonArgs, config_class(rlhf_type)), argv, owners=methods_taking)

    # 0. Settings: output folder, model path, LoRA targets, the tokenizer; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_model_path(args.model_name_or_path)
    if args.train_mode != "full":
        check_lora_targets(args.model_name_or_path, args.lora_target_modules)
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)

    # 1-3. Data -> models -> trainer: the method's run and its run-health rules, imported in its branch (a DPO run
    # loads no PPO code).
    if rlhf_type == "PPO":
        from rlhfkit.ppo.run import ppo_trainer
        from rlhfkit.report.health_online import HEALTH

        built = ppo_trainer(args, config, tokenizer)
    elif rlhf_type in ("RLOO", "GRPO"):
        from rlhfkit.methods.trl_online import rloo_grpo_trainer
        from rlhfkit.report.health_online import HEALTH

        built = rloo_grpo_trainer(rlhf_type, args, config, tokenizer)
    else:
        from rlhfkit.methods.offline import offline_trainer
        from rlhfkit.report.health_offline import HEALTH

        built = offline_trainer(rlhf_type, args, config, tokenizer)
    if built is None:  # --check: the preflight report is all
        return None
    trainer, eval_rows = built
    match_trainable_dtype(trainer.model, config)  # QLoRA: TRL casts trainable weights to bf16
    return Run(trainer, args, config, resume, eval_rows, HEALTH)


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
        run_health(config.output_dir, run.health)

    # 7. Did it change anything? One held-out prompt, answered by the starting model and by the saved one.
    if run.eval_rows and trainer.is_world_process_zero() and trainer.args.world_size == 1:
        compare_on_held_out_prompt(args, config, run.eval_rows)
    trainer.accelerator.end_training()  # every rank closes its process group before it exits
    return trainer


if __name__ == "__main__":
    run_cli(main)
