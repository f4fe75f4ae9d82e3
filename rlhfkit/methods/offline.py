"""The offline methods' run for train_rlhf.py: DPO, CPO, SimPO, CPO-SimPO, ORPO, KTO and SFT train on rows that
carry their answers (pairs, labelled answers, demonstrations); data -> policy -> trainer, the same for each.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM
from trl import KTOTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from rlhfkit.data.offline import kto_data, preference_data, sft_data
from rlhfkit.log import show_dataset_progress
from rlhfkit.methods.dpo import DPOTrainer
from rlhfkit.methods.trainer_inputs import trainer_inputs
from rlhfkit.model import load_model
from rlhfkit.report.preflight import preflight

# What each trainer does with rows longer than max_length (printed with their count).
TOO_LONG = {"DPO": "DPOTrainer cuts them at the end (keep_start)",
            "CPO": "CPOTrainer cuts the answer, keeping the prompt",
            "SimPO": "CPOTrainer cuts the answer, keeping the prompt",
            "CPOSimPO": "CPOTrainer cuts the answer, keeping the prompt",
            "ORPO": "ORPOTrainer cuts the answer, keeping the prompt",
            "KTO": "KTOTrainer cuts them at the end (a too-long prompt is dropped)",
            "SFT": "SFTTrainer cuts them at the end (keep_start)"}


def offline_trainer(rlhf_type: str, args, config, tokenizer) -> tuple[object, list[dict]] | None:
    """Steps 1-3 of an offline run: the data (every row checked), the policy, the trainer.

    `rlhf_type` is one of `TOO_LONG`'s keys, `config` that method's config. Returns `(trainer, eval_rows)`, or None
    with `--check` (the preflight report printed, no weights loaded). Raises `DataFormatError`, `PathNotFoundError`
    or `ConfigError` before any weights load.
    """
    # 1. Data: pairs; KTO: unpaired rows with class weights; SFT: prompt/completion rows.
    if rlhf_type == "KTO":
        train_rows, eval_rows = kto_data(args, config, tokenizer, TOO_LONG[rlhf_type])
    elif rlhf_type == "SFT":
        train_rows, eval_rows = sft_data(args, config, tokenizer, TOO_LONG[rlhf_type])
    else:
        train_rows, eval_rows = preference_data(args, config, tokenizer, TOO_LONG[rlhf_type])
    if args.check:  # --check: show what would be trained, load no weights
        preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, rlhf_type)
        return None
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Model: the policy (DPO, KTO: the reference is the policy with its adapter off under LoRA, a frozen copy of
    # the checkpoint loaded by TRL under full fine-tuning; the others use none).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)

    # 3. Trainer.
    inputs = trainer_inputs(model, args, config, tokenizer, train_rows, eval_rows)
    if rlhf_type == "DPO":
        return DPOTrainer(**inputs), eval_rows
    if rlhf_type == "KTO":
        return KTOTrainer(**inputs), eval_rows
    if rlhf_type == "ORPO":
        return ORPOTrainer(**inputs), eval_rows
    if rlhf_type == "SFT":
        return SFTTrainer(**inputs), eval_rows
    return CPOTrainer(**inputs), eval_rows  # CPO, SimPO, CPO-SimPO: one trainer, their configs set the loss
