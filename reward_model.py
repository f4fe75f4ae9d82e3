"""Step 1: train a reward model on preference pairs (prompt, chosen, rejected).

    python reward_model.py                                   # defaults from reward_args/*.py
    python reward_model.py --train_mode full --learning_rate 1e-5 --output_dir output/rm_full
    accelerate launch --config_file ds_config/deepspeed_zero2.yaml reward_model.py

The model is `AutoModelForSequenceClassification(num_labels=1)` on top of a causal LM checkpoint: one scalar
score for the last token of prompt + answer. Trained with TRL's RewardTrainer on the Bradley-Terry loss
-log sigmoid(r_chosen - r_rejected). With LoRA the score head is trained and saved with the adapter.
The held-out accuracy (share of pairs where r_chosen > r_rejected) is printed at the end, on every held-out pair,
split by answer length and beside the rule "the shorter answer wins" (rlhfkit/report/rm_accuracy.py, saved as
rm_accuracy.json).

Length (`--length_debias odin`): the score layer gets a second output trained to carry answer length (ODIN, Chen et
al. 2024, rlhfkit/methods/odin.py); only the quality output is saved, so the folder loads and scores as any reward
model.

Reward hacking guard: human pairs never show an empty, "Ok.", truncated, repeated or off-topic answer, so a reward
model may score them high and PPO/RLOO/GRPO then learn to produce them. Training adds pairs (chosen, degenerate
version of chosen) (`--degenerate_negatives_ratio`, training rows only), and the end-of-training probe reports how
often each degenerate answer still beats the chosen one (printed, and saved as rm_probe.json / rm_probe.png).
"""

from rlhfkit.log import info_rank0, quiet_libraries

quiet_libraries()  # before PEFT, TRL and DeepSpeed load: they print known-harmless messages while loading

from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardTrainer

from reward_args.model_config import RewardModelArgs
from reward_args.training_config import RewardConfig
from rlhfkit.args import parse_args
from rlhfkit.data.degenerate import augment_with_degenerate_negatives, parse_variant_weights
from rlhfkit.data.offline import preference_data
from rlhfkit.errors import ConfigError, run_cli
from rlhfkit.methods.odin import ODINRewardTrainer, keep_quality_head
from rlhfkit.model import load_model, load_tokenizer, lora_config, match_trainable_dtype
from rlhfkit.model_folders import (
    check_lora_targets,
    check_model_path,
    check_train_mode,
    deepspeed_zero_stage,
    safetensors_weight_shapes,
)
from rlhfkit.outputs import NonFiniteLossGuard, prepare_output_dir, save_outputs
from rlhfkit.report import health_rm
from rlhfkit.report.health_base import run_health
from rlhfkit.report.preflight import preflight
from rlhfkit.report.rm_accuracy import accuracy_after_training
from rlhfkit.report.rm_probe import probe_after_training


def main(argv=None):
    model_args, config = parse_args((RewardModelArgs, RewardConfig), argv)

    # 0. Settings: output folder, model path, LoRA targets, the length head; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(model_args, config)
    check_model_path(model_args.model_name_or_path)
    if model_args.train_mode != "full":
        check_lora_targets(model_args.model_name_or_path, model_args.lora_target_modules)
    odin = config.length_debias == "odin"
    if odin and deepspeed_zero_stage(config) == 3:
        raise ConfigError("--length_debias odin cuts the score layer to its quality head before saving, which ZeRO-3 "
                          "shards; use ds_config/deepspeed_zero2.yaml")
    if odin and any(k.endswith("score.weight") for k in safetensors_weight_shapes(model_args.model_name_or_path)):
        raise ConfigError(f"--length_debias odin trains a new 2-output score head, but {model_args.model_name_or_path} "
                          f"is a reward model with its own; start from the causal LM it was trained from")

    # 1. Inputs: every row is checked before any model is loaded.
    tokenizer = load_tokenizer(model_args.model_name_or_path, config.trust_remote_code)
    train_rows, eval_rows = preference_data(model_args, config, tokenizer,
                                            too_long="RewardTrainer drops them (raise --max_length to keep them)")
    if model_args.check:  # --check: show what would be trained, load no weights
        return preflight(tokenizer, train_rows, eval_rows, model_args.model_name_or_path, "reward model")
    # Extra pairs from the training rows only: chosen vs an empty / "Ok." / truncated / repeated / off-topic answer.
    augmented_rows = augment_with_degenerate_negatives(train_rows, model_args.degenerate_negatives_ratio, config.seed,
                                                       parse_variant_weights(model_args.degenerate_variant_weights),
                                                       tokenizer=tokenizer, max_length=config.max_length)

    # 2. Model: a causal LM checkpoint gets a fresh 1-output score head (ODIN: 2 outputs, quality and length).
    model = load_model(AutoModelForSequenceClassification, model_args, config, tokenizer, num_labels=2 if odin else 1)

    # 3. Trainer.
    trainer = (ODINRewardTrainer if odin else RewardTrainer)(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(augmented_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(model_args, "SEQ_CLS"),
        callbacks=[NonFiniteLossGuard()],  # stops at a NaN / inf loss before it is saved
    )
    match_trainable_dtype(trainer.model, config)  # QLoRA: TRL casts trainable weights to bf16

    # 4. Train.
    trainer.train(resume_from_checkpoint=resume)

    # 5. Evaluate and save.
    if eval_rows:
        metrics = trainer.evaluate()
        if trainer.is_world_process_zero():
            n = len(trainer.eval_dataset)  # TRL drops pairs longer than max_length
            info_rank0(f"[reward model] TRL's eval accuracy {metrics['eval_accuracy']:.3f} on {n} held-out pairs"
                  + (f" ({len(eval_rows) - n} longer than max_length={config.max_length} left out)"
                     if n < len(eval_rows) else ""))
        # Every held-out pair (long ones cut at max_length), split by answer length, beside the length rule.
        accuracy_after_training(trainer, tokenizer, eval_rows, config.max_length)
    if odin:  # the saved model scores with the quality head; the length head goes beside it
        keep_quality_head(trainer.model, config.output_dir if trainer.is_world_process_zero() else None)
    save_outputs(trainer, "reward model", model_args, config)
    if trainer.is_world_process_zero():
        info_rank0(f"[reward model] saved to {config.output_dir} (curves: {config.output_dir}/training_curves.png)")

    # 6. Probe: how often does a degenerate answer score above the chosen one? (rm_probe.json / rm_probe.png)
    probe_after_training(trainer, tokenizer, eval_rows, train_rows, model_args.probe_prompts)

    # 7. Run health: what looks wrong in the log, the accuracy and the probe, in plain English (also report.html).
    if trainer.is_world_process_zero():
        run_health(config.output_dir, health_rm.HEALTH)
    trainer.accelerator.end_training()  # every rank closes its process group before it exits
    return trainer


if __name__ == "__main__":
    run_cli(main)
