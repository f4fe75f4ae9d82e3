"""Knowledge distillation: train a student model to match a frozen teacher (GKD, supervised KD, SeqKD).

    python train_gkd.py                                       # defaults: rlhf_args/gkd_config.py, common_args.py
    python train_gkd.py --model_name_or_path STUDENT --teacher_model_name_or_path TEACHER --lmbda 1 --beta 0.5
    python train_gkd.py --lmbda 0                             # supervised KD on the dataset's answers
    python train_gkd.py --lmbda 0 --seq_kd true               # SeqKD: on answers sampled from the teacher
    accelerate launch --config_file ds_config/deepspeed_zero2.yaml train_gkd.py --teacher_quantization 4bit

Method (Agarwal et al. 2024, arXiv:2306.13649; see rlhf_args/gkd_config.py): for every answer token the teacher's
next-token distribution is the target of the student's, with a divergence picked by `beta` (0 forward KL, 1 reverse
KL, between the generalized JSD). The answers come from the student itself with probability `lmbda` per step
(on-policy GKD), else from the dataset (supervised KD) or from the teacher (`seq_kd`, SeqKD). TRL's experimental
`GKDTrainer` does the training; this script checks the data and the teacher / student pair first.

Before any weights are loaded: the teacher and student tokenizers must agree (same vocabulary, same chat template,
same model vocab_size), else the run stops and says what differs; a student with more parameters than the
teacher (counted from the safetensors headers) gets a warning. The student is trained full / LoRA / QLoRA
(`--train_mode`); the teacher is frozen and can be loaded in 4-bit or 8-bit (`--teacher_quantization`).
"""

from rlhfkit.log import info_rank0, quiet_libraries, show_dataset_progress

quiet_libraries()  # before PEFT, TRL and DeepSpeed load: they print known-harmless messages while loading

import glob
import math
import os

from datasets import Dataset
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM
from trl.experimental.gkd import GKDTrainer

from rlhf_args.gkd_config import GKDConfig, GKDModelArgs
from rlhfkit.args import parse_args
from rlhfkit.data.distillation import distillation_data
from rlhfkit.errors import ConfigError, run_cli
from rlhfkit.model import load_model, load_teacher, load_tokenizer, lora_config, match_trainable_dtype
from rlhfkit.model_folders import (
    check_lora_targets,
    check_model_path,
    check_train_mode,
    deepspeed_zero_stage,
    is_adapter_dir,
)
from rlhfkit.outputs import NonFiniteLossGuard, prepare_output_dir, save_outputs
from rlhfkit.report import health_offline
from rlhfkit.report.health_base import run_health
from rlhfkit.report.preflight import preflight

TOKENIZER_ADVICE = ("GKD compares the teacher's and the student's next-token distributions token by token, so both "
                    "models must share one tokenizer: pick a teacher and a student of the same model family")


def tokenizer_differences(student, teacher) -> list[str]:
    """What differs between the student's and the teacher's tokenizer: vocabulary (token -> id) and chat template.

    Returns one line per difference (empty list: they agree). Token ids must match because the loss compares the
    two models' probabilities of the same vocabulary entry; the chat template must match because both models read
    the same token sequence (rendered once, with the student's template).
    """
    differences = []
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab != t_vocab:
        only_s, only_t = sorted(set(s_vocab) - set(t_vocab)), sorted(set(t_vocab) - set(s_vocab))
        moved = sorted(t for t in s_vocab.keys() & t_vocab.keys() if s_vocab[t] != t_vocab[t])
        parts = [f"student {len(s_vocab)} tokens, teacher {len(t_vocab)}"]
        if only_s:
            parts.append(f"{len(only_s)} only in the student (e.g. {', '.join(map(repr, only_s[:3]))})")
        if only_t:
            parts.append(f"{len(only_t)} only in the teacher (e.g. {', '.join(map(repr, only_t[:3]))})")
        if moved:
            parts.append(f"{len(moved)} with different ids (e.g. {moved[0]!r}: student {s_vocab[moved[0]]}, "
                         f"teacher {t_vocab[moved[0]]})")
        differences.append("vocabulary: " + "; ".join(parts))
    s_tmpl, t_tmpl = student.chat_template, teacher.chat_template
    if s_tmpl != t_tmpl:
        if not s_tmpl or not t_tmpl:
            differences.append(f"chat template: only the {'teacher' if t_tmpl else 'student'} has one")
        else:
            s_tmpl, t_tmpl = str(s_tmpl), str(t_tmpl)
            at = next((i for i, (a, b) in enumerate(zip(s_tmpl, t_tmpl)) if a != b), min(len(s_tmpl), len(t_tmpl)))
            differences.append(f"chat template: differs from character {at}: student {s_tmpl[at:at + 40]!r}, "
                               f"teacher {t_tmpl[at:at + 40]!r}")
    return differences


def parameter_count(path: str) -> int | None:
    """Number of parameters stored in the `*.safetensors` files of a checkpoint dir, read from their headers.

    No weights are read. Returns None for a LoRA adapter dir or a dir without safetensors files. Tied
    input/output embeddings are stored, hence counted, once; quantized checkpoints count their packed tensors.
    """
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files or is_adapter_dir(path):
        return None
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as tensors:
            total += sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
    return total


def text_vocab_size(path: str, trust_remote_code: bool = False) -> int | None:
    """`vocab_size` from the config.json in `path` (the size of the output layer), or None if there is none."""
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return None
    return config.get_text_config().vocab_size


def check_teacher_student(student_path: str, teacher_path: str, tokenizer, trust_remote_code: bool = False,
                          log=info_rank0) -> None:
    """Stop if teacher and student cannot be distilled into each other; warn if the student is the larger one.

    Reads only tokenizer files, config.json files and safetensors headers. Raises `ConfigError` listing every
    difference (vocabulary, chat template, the models' vocab_size) with the message "teacher and student tokenizers
    differ". Prints a warning if the student has more parameters than the teacher (swapped paths are the usual cause).
    """
    teacher_tokenizer = load_tokenizer(teacher_path, trust_remote_code)
    differences = tokenizer_differences(tokenizer, teacher_tokenizer)
    s_size, t_size = text_vocab_size(student_path, trust_remote_code), text_vocab_size(teacher_path, trust_remote_code)
    if s_size and t_size and s_size != t_size:
        differences.append(f"model vocab_size (config.json): student {s_size}, teacher {t_size}")
    if differences:
        listed = "\n".join(f"  - {d}" for d in differences)
        raise ConfigError(f"teacher and student tokenizers differ (student {student_path}, teacher {teacher_path}):\n"
                         f"{listed}\n{TOKENIZER_ADVICE}.")
    s_params, t_params = parameter_count(student_path), parameter_count(teacher_path)
    if s_params and t_params:
        log(f"[GKD] student {s_params / 1e6:.2f}M parameters, teacher {t_params / 1e6:.2f}M")
        if s_params > t_params:
            log(f"[GKD] WARNING: the student ({s_params / 1e6:.2f}M parameters) is larger than the teacher "
                f"({t_params / 1e6:.2f}M). Distillation usually trains a smaller student; check that "
                f"--model_name_or_path (student) and --teacher_model_name_or_path (teacher) are not swapped.")


def check_teacher_settings(config) -> None:
    """Refuse a quantized teacher under DeepSpeed ZeRO-3 (it would shard 4/8-bit weights). Raises `ConfigError`."""
    if config.teacher_quantization != "none" and deepspeed_zero_stage(config) == 3:
        raise ConfigError("--teacher_quantization 4bit/8bit does not work with DeepSpeed ZeRO-3, which shards the "
                         "quantized weights; use ds_config/deepspeed_zero2.yaml, or --teacher_quantization none")


def describe(config) -> str:
    """The method the settings amount to, in words (for the log)."""
    off_policy = "SeqKD (teacher samples)" if config.seq_kd else "supervised KD (dataset answers)"
    if config.lmbda >= 1:
        return "on-policy GKD: every step trains on the student's own samples"
    if config.lmbda <= 0:
        return off_policy
    return f"mixed: {config.lmbda:.0%} of steps on-policy (student samples), the others {off_policy}"


def main(argv=None):
    args, config = parse_args((GKDModelArgs, GKDConfig), argv)

    # 0. Settings: output folder, student and teacher paths, LoRA targets; no weights yet.
    resume = prepare_output_dir(config)
    check_train_mode(args, config)
    check_teacher_settings(config)
    check_model_path(args.model_name_or_path)
    if args.train_mode != "full":
        check_lora_targets(args.model_name_or_path, args.lora_target_modules)
    check_model_path(config.teacher_model_name_or_path)

    # 1. Inputs: teacher vs student (tokenizers, config.json and safetensors headers only), then the data; every row
    # is checked before any model is loaded.
    tokenizer = load_tokenizer(args.model_name_or_path, config.trust_remote_code)
    check_teacher_student(args.model_name_or_path, config.teacher_model_name_or_path, tokenizer,
                          config.trust_remote_code)
    train_rows, eval_rows = distillation_data(args, config, tokenizer)
    if args.check:  # --check: show what would be trained, load no weights
        return preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, "GKD")
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long
    info_rank0(f"[GKD] {describe(config)}; divergence beta={config.beta} (0 forward KL, 1 reverse KL)")

    # 2. Models: the student (trained) and the teacher (frozen).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    teacher = load_teacher(config, tokenizer)

    # 3. Trainer.
    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(args, "CAUSAL_LM"),
        callbacks=[NonFiniteLossGuard()],  # stops at a NaN / inf loss before it is saved
    )
    match_trainable_dtype(trainer.model, config)  # QLoRA: TRL casts trainable weights to bf16

    # 4. Train. The eval loss is the divergence on held-out answers, measured before and after training.
    measure_before = bool(eval_rows) and resume is None and deepspeed_zero_stage(config) is None
    before = trainer.evaluate()["eval_loss"] if measure_before else None
    trainer.train(resume_from_checkpoint=resume)

    # 5. Evaluate and save.
    after = trainer.evaluate()["eval_loss"] if eval_rows else None
    if before is not None:  # train() starts a fresh log; keep the step-0 point for the curves
        trainer.state.log_history.insert(0, {"eval_loss": before, "step": 0})
    save_outputs(trainer, "GKD", args, config)
    if trainer.is_world_process_zero():
        if after is not None:
            change = f"{before:.4g} before training -> {after:.4g}" if before is not None else f"{after:.4g}"
            info_rank0(f"[GKD] divergence to the teacher on {len(eval_rows)} held-out answers (eval_loss, per token): "
                  f"{change}")
        what = "model" if args.train_mode == "full" else "LoRA adapter"
        info_rank0(f"[GKD] student {what} saved to {config.output_dir} (curves: {config.output_dir}/"
                   f"training_curves.png)")

        # 6. Run health: what looks wrong in the log, in plain English (also output_dir/report.html).
        run_health(config.output_dir, health_offline.HEALTH)
    trainer.accelerator.end_training()  # every rank closes its process group before it exits
    return trainer


if __name__ == "__main__":
    run_cli(main)
