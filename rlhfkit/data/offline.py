"""The data of the offline methods and the reward model, rows that carry their answers (pairs, labelled answers,
demonstrations): which target each loader needs, what it prints, and its own checks (the online methods' prompts:
`prompts.py`; GKD's rows: `distillation.py`).

Each `*_data(model_args, config, tokenizer, too_long, log)` returns `(train_rows, eval_rows)` ready for the trainer,
and raises `DataFormatError`, `PathNotFoundError` or `ConfigError` before any model is loaded. The single-file
loader `load_preference_file` serves evaluation and the reward-model probe.
"""

from __future__ import annotations

import random
from dataclasses import replace

from rlhfkit.data.chats import uses_number_labels
from rlhfkit.data.loader import load_file, load_splits, summarise
from rlhfkit.data.shapes import ShapeOptions, convert_row, options_from, shape_notes
from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0
from rlhfkit.model_folders import require_chat_template

# ----------------------------------------------------------------------------------------------------------
# Checks that need the tokenizer (still no model): the chat template, and rows or prompts that are too long

def check_chat_template(tokenizer, row: dict, model_path: str) -> None:
    """Check that the chat template renders the prompt as a prefix of prompt + answer.

    Training joins `prompt` and `chosen` / `rejected` with the template; if the prompt rendering is not a prefix,
    the loss mask would cut in the wrong place. Raises `ConfigError` naming the model if the tokenizer has no chat
    template or the template fails this check.
    """
    require_chat_template(tokenizer, model_path)
    prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError(f"the chat template of {model_path} does not render the prompt as a prefix of "
                          f"prompt + answer, so prompt and answer cannot be joined at train time.\n"
                          f"prompt:      {prompt!r}\nprompt+answer: {full!r}")


def count_too_long(tokenizer, rows: list[dict], max_length: int, answers=("chosen", "rejected")) -> int:
    """Number of rows in which prompt + any of the `answers` fields is longer than `max_length` tokens."""
    return sum(max(len(tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=True)["input_ids"])
                   for k in answers) > max_length for row in rows)


def check_tokenized_rows(tokenizer, train: list[dict], model_args, config, too_long: str, what: str = "pairs",
                         answers=("chosen", "rejected"), log=info_rank0) -> None:
    """The checks every loader runs once the rows are canonical: the chat template joins the first row's prompt
    and answer (`check_chat_template`), and a printed count of rows over `config.max_length` tokens (`too_long`
    says what the trainer does with them). Raises `ConfigError` as `check_chat_template` does.
    """
    first = train[0]
    check_chat_template(tokenizer, {"prompt": first["prompt"], "chosen": first[answers[0]]},
                        model_args.model_name_or_path)
    if config.max_length:
        n = count_too_long(tokenizer, train, config.max_length, answers)
        if n:
            log(f"[data] {n} of {len(train)} {what} are longer than max_length={config.max_length} tokens; {too_long}")


# ----------------------------------------------------------------------------------------------------------
# Converters


def converter(target: str, options: ShapeOptions):
    """`row -> (shape name, rows)` for `target` with `options` (`shapes.convert_row`)."""
    return lambda row: convert_row(row, target, options)


# ----------------------------------------------------------------------------------------------------------
# Pairwise methods (reward model, DPO, CPO, SimPO, ORPO)


def load_preference_file(path: str, drop_bad_rows: bool = False, log=info_rank0,
                         options: ShapeOptions = ShapeOptions()) -> list[dict]:
    """Read, check and convert one preference file (any preference shape, `rlhfkit.data.shapes`).

    Returns the pairs. Prints what was detected (and, with `drop_bad_rows`, how many rows were dropped and why).
    Raises `DataFormatError` listing up to 10 problems unless `drop_bad_rows` is True, or if no good row is left;
    `PathNotFoundError` if the file is missing.
    """
    return load_file(path, converter("preference", options), drop_bad_rows,
                     lambda f: summarise(f, "preference pairs", shape_notes(f.shapes)), log).rows


def preference_data(model_args, config, tokenizer, too_long: str, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """The data loader for pairwise methods: checked pairs, split, then the tokenizer checks.

    Prints how many pairs exceed `config.max_length` tokens (`too_long` says what the trainer does with them).
    Returns `(train_rows, eval_rows)`; raises `DataFormatError`, `PathNotFoundError` or `ConfigError`.
    """
    options = options_from(model_args, config)
    train, held_out = load_splits(model_args, config.seed, converter("preference", options),
                                  lambda f: summarise(f, "preference pairs", shape_notes(f.shapes)), log).flat()
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, log=log)
    return train, held_out


# ----------------------------------------------------------------------------------------------------------
# KTO: unpaired rows {prompt, completion, label}

KTO_NOTES = {"pair": "preference pairs were split for KTO: chosen -> desirable (label true), rejected -> "
                     "undesirable (label false)",
             "unpaired (0/1 labels)": "labels 0/1 read as false/true (1 = desirable)"}


def kto_data(model_args, config, tokenizer, too_long: str, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """The data loader for KTO: unpaired rows, shuffled, with balanced class weights.

    Accepts unpaired rows (labels true/false, or 0/1 in a file that uses numbers throughout) and every preference
    shape (a pair gives a desirable and an undesirable row). The training rows are shuffled with the run's seed:
    TRL's KTO trainer pairs each prompt with another row's completion of the same batch for its KL estimate, so
    unshuffled converted pairs would give one-label batches. Sets the class weights left at None
    (`config.balance_class_weights`, rlhf_args/kto_config.py) and prints the counts. Returns
    `(train_rows, eval_rows)`; raises `DataFormatError`, `PathNotFoundError` or `ConfigError` (no chat template;
    fewer rows than one batch), before any model is loaded.
    """
    options = options_from(model_args, config)

    def prepare(rows):
        return converter("unpaired", replace(options, number_labels=uses_number_labels(rows)))

    def summary(loaded):
        return summarise(loaded, "KTO rows", shape_notes(loaded.shapes, KTO_NOTES))

    train, held_out = load_splits(model_args, config.seed, None, summary, log, prepare=prepare).flat()
    random.Random(config.seed).shuffle(train)
    if len(train) < config.per_device_train_batch_size:
        raise ConfigError(f"KTO needs at least one full batch: {len(train)} training rows < "
                          f"per_device_train_batch_size={config.per_device_train_batch_size}")
    n_d = sum(r["label"] for r in train)
    n_u = len(train) - n_d
    ratio = config.balance_class_weights(n_d, n_u)
    log(f"[data] KTO classes: {n_d} desirable, {n_u} undesirable; desirable_weight={config.desirable_weight:.3g}, "
        f"undesirable_weight={config.undesirable_weight:.3g} (weighted ratio {ratio:.3g}; KTO paper: 1 to 4/3)")
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, "rows", ("completion",), log)
    return train, held_out


# ----------------------------------------------------------------------------------------------------------
# SFT: conversations -> conversational prompt/completion rows (loss on the assistant answers only)


def sft_data(model_args, config, tokenizer, too_long: str, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """The data loader for SFT: every row becomes conversational prompt/completion rows (`shapes.convert_row`).

    With prompt/completion rows TRL's SFTTrainer puts the loss on the completion tokens only
    (`completion_only_loss`), whatever the chat template; no `{% generation %}` markers are needed.
    Returns `(train_rows, eval_rows)`; raises `DataFormatError`, `PathNotFoundError` or `ConfigError` (no chat
    template) before any model is loaded.
    """
    options = options_from(config, model_args)
    notes = {shape: f"conversations -> one prompt/completion row per trained assistant turn "
                    f"(assistant_turns={options.assistant_turns!r}); the loss covers the assistant answers only"
             for shape in ("messages", "ShareGPT", "alpaca")}
    notes["pair"] = "preference pairs -> prompt + chosen (rejected is not used)"
    train, held_out = load_splits(model_args, config.seed, converter("sft", options),
                                  lambda f: summarise(f, "SFT rows", shape_notes(f.shapes, notes)), log).flat()
    check_tokenized_rows(tokenizer, train, model_args, config, too_long, "rows", ("completion",), log)
    return train, held_out
