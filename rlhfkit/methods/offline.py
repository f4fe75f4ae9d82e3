"""The offline methods' run for train_rlhf.py: DPO, CPO, SimPO, CPO-SimPO, ORPO, KTO and SFT train on rows that
carry their answers (pairs, labelled answers, demonstrations); data -> policy -> trainer, the same for each. DPO's
trainer is TRL's plus R-DPO's length term (`DPOTrainer` below).
"""

from __future__ import annotations

import trl
from transformers import AutoModelForCausalLM
from trl import KTOTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from rlhfkit.data.offline import kto_data, preference_data, sft_data
from rlhfkit.log import show_dataset_progress
from rlhfkit.methods.trainer_inputs import trainer_inputs
from rlhfkit.model import load_model
from rlhfkit.report.preflight import preflight


class LengthBonus:
    """Calls `model` and adds `bonus` nats to the log-probability of every answer token (label != -100) of TRL's
    fused LM-head output (log-probs (B, T - 1), zero where the label is -100); everything else passes through.
    """

    def __init__(self, model, bonus: float):
        self.model, self.bonus = model, bonus

    def __call__(self, *args, labels=None, **kwargs):
        outputs = self.model(*args, labels=labels, **kwargs)
        outputs.log_probs = outputs.log_probs + self.bonus * (labels[:, 1:] != -100)
        return outputs

    def __getattr__(self, name):
        return getattr(self.model, name)


class DPOTrainer(trl.DPOTrainer):
    """TRL's `DPOTrainer`; with `args.rdpo_alpha` > 0, R-DPO's length term (Park et al. 2024, "Disentangling Length
    from Quality in Direct Preference Optimization", arXiv:2403.19159, eq. 9):

        loss = -log sigmoid(beta * (log-ratio(chosen) - log-ratio(rejected)) + alpha * (|chosen| - |rejected|))

    with log-ratio = log pi - log ref and |y| the answer's length in tokens. The sign, from the paper's derivation:
    the length-penalised objective max E[r - alpha |y|] - beta KL has its optimum at beta log-ratio = r - alpha |y| -
    const, so r = beta log-ratio + alpha |y|, and the Bradley-Terry likelihood of a pair gets + alpha (|chosen| -
    |rejected|): a longer chosen answer already explains part of the preference and earns the policy less margin.
    (Public copies of the formula disagree on this sign; tests/test_dpo.py checks it by hand.)

    Implemented by adding alpha / beta nats to the policy's log-probability of every answer token (`LengthBonus`; the
    reference's are left alone), so the log-ratio difference grows by (alpha / beta) (|chosen| - |rejected|) in
    whichever loss `--loss_type` picks; the logged rewards/* are then R-DPO's implicit rewards beta log-ratio +
    alpha |y|.
    """

    def _compute_loss(self, model, inputs, return_outputs):
        if self.args.rdpo_alpha:
            model = LengthBonus(model, self.args.rdpo_alpha / self.beta)
        return super()._compute_loss(model, inputs, return_outputs)


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
