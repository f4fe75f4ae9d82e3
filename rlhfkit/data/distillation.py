"""GKD's data (train_gkd.py): chats whose last assistant turn is the target, or prompts only, and the max_length fit.

Each loader raises `DataFormatError` (`FILE:LINE: field ...`), `PathNotFoundError` or `ConfigError` before any model
is loaded, as the offline methods' loaders in `offline.py` do.
"""

from __future__ import annotations

from rlhfkit.data.loader import LoadedFile, load_file, load_splits
from rlhfkit.data.messages import RowError
from rlhfkit.data.offline import check_chat_template
from rlhfkit.data.shapes import convert_row, shape_notes
from rlhfkit.errors import ConfigError
from rlhfkit.log import info_rank0

ANSWER_PLACEHOLDER = [{"role": "assistant", "content": ""}]  # stands in for the answer of a prompt-only GKD row


def distillation_converter(prompt_only_problem: str | None):
    """`row -> (shape, [{"prompt", "answer"}])`; a prompt-only row is a `RowError` on 'messages' with the message
    `prompt_only_problem` when that is given (runs that train on the dataset's answers).
    """
    def convert(row):
        shape, rows = convert_row(row, "distillation")
        if rows[0]["answer"] is None and prompt_only_problem:
            raise RowError("messages", prompt_only_problem)
        return shape, rows

    return convert


def distillation_summary(loaded: LoadedFile) -> str:
    rows = loaded.rows
    answers = sum(r["answer"] is not None for r in rows)
    detected = ", ".join(f"{n} {shape}" for shape, n in loaded.shapes.items())
    with_list = loaded.shapes.get("messages + prompt", 0)
    notes = shape_notes(loaded.shapes)
    if with_list:
        notes.append(f"the 'prompt' lists of {with_list} rows equal messages[:-1] and were dropped (TRL's GKD "
                     f"collator takes only a formatted string prompt)")
    return (f"{answers} chats with an answer, {len(rows) - answers} prompt-only rows ({detected} rows)"
            + "".join(f"; {n}" for n in notes))


def load_distillation_file(path: str, drop_bad_rows: bool = False, prompt_only_problem: str | None = None,
                           log=info_rank0) -> list[dict]:
    """Read, check and convert one distillation file: `messages` (last assistant turn = target), ShareGPT or alpaca
    rows, or prompt-only rows.

    If `prompt_only_problem` is a message, prompt-only rows count as bad rows with that message (for runs that
    train on the dataset's answers). Returns `[{"prompt": [...], "answer": [...] | None}, ...]` and prints what was
    found. Raises `DataFormatError` listing up to 10 `FILE:LINE: field 'NAME': ...` problems unless
    `drop_bad_rows` is True, or if no good row is left; `PathNotFoundError` if the file is missing.
    """
    return load_file(path, distillation_converter(prompt_only_problem), drop_bad_rows, distillation_summary, log).rows


def distillation_data(model_args, config, tokenizer, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """The data loader for GKD / supervised KD / SeqKD: checked rows as `{"messages": [...]}` (TRL's GKD format).

    Prompt-only rows are accepted only when every training step samples its own answers (`config.lmbda == 1`:
    the student's, or `config.seq_kd`: the teacher's); they get an empty assistant placeholder that those steps
    replace. Otherwise they are bad rows (`FILE:LINE: field 'messages': prompt only ...`).
    Rows longer than `config.max_length` tokens (chat template applied) are counted and dropped or cut
    (`config.long_rows`, see `tokens.fit_max_length`). Eval rows need answers (the eval loss compares teacher and
    student on them): prompt-only rows of a held-out split are skipped with a note, and in an eval file they are
    bad rows. Returns `(train_rows, eval_rows)`. Raises `DataFormatError`, `PathNotFoundError` or `ConfigError`
    (no template, nothing left to train on), all before any model is loaded.
    """
    samples_own = config.lmbda >= 1 or config.seq_kd
    hint = (None if samples_own else
            f"prompt only (no answer); with lmbda={config.lmbda} and seq_kd off, some steps train on the dataset's "
            f"answers: give the row 'messages', or use --lmbda 1 (student answers) or --seq_kd true (teacher answers)")
    eval_convert = distillation_converter("prompt only (no answer); evaluation compares teacher and student on the "
                                          "answers")
    splits = load_splits(model_args, config.seed, distillation_converter(hint), distillation_summary, log,
                         eval_convert=eval_convert)
    train, held_out = splits.flat()
    if splits.held_out:
        skipped = sum(r["answer"] is None for r in held_out)
        if skipped:
            held_out = [r for r in held_out if r["answer"] is not None]
            log(f"[data] {skipped} held-out rows are prompt only and are not used (evaluation needs answers)")
    first = train[0]
    check_chat_template(tokenizer, {"prompt": first["prompt"], "chosen": first["answer"] or ANSWER_PLACEHOLDER},
                        model_args.model_name_or_path)
    long_rows = getattr(config, "long_rows", "drop")
    train = fit_max_length(tokenizer, train, config.max_length, long_rows, "training", log)
    held_out = fit_max_length(tokenizer, held_out, config.max_length, long_rows, "eval", log)
    if not train:
        raise ConfigError(f"no training rows left: every row is longer than max_length={config.max_length} tokens; "
                          f"raise --max_length")
    as_chat = lambda r: {"messages": r["prompt"] + (r["answer"] or ANSWER_PLACEHOLDER)}  # noqa: E731
    return [as_chat(r) for r in train], [as_chat(r) for r in held_out]


def fit_max_length(tokenizer, rows: list[dict], max_length: int | None, long_rows: str, what: str,
                   log=info_rank0) -> list[dict]:
    """Drop (long_rows="drop") or keep for cutting ("cut") distillation rows whose chat is longer than max_length.

    Rows whose answer alone fills max_length are dropped in both modes: TRL's collator keeps the last max_length
    tokens, so no prompt token would be left. Prints the counts. Returns the kept rows.
    """
    if not max_length:
        return rows
    kept, too_long, answer_fills = [], 0, 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + (row["answer"] or ANSWER_PLACEHOLDER),
                                             tokenize=True)["input_ids"]
        if len(full) <= max_length:
            kept.append(row)
        elif long_rows == "cut" and len(full) - len(prompt) < max_length:
            too_long += 1
            kept.append(row)
        else:
            too_long += 1
            answer_fills += len(full) - len(prompt) >= max_length
    if too_long:
        if long_rows == "cut":
            log(f"[data] {too_long} of {len(rows)} {what} rows are longer than max_length={max_length} tokens: cut, "
                f"keeping their last {max_length} tokens (the start of the prompt is lost)"
                + (f"; {answer_fills} whose answer alone fills max_length dropped" if answer_fills else ""))
        else:
            log(f"[data] {too_long} of {len(rows)} {what} rows are longer than max_length={max_length} tokens: "
                f"dropped (--long_rows cut keeps their last {max_length} tokens instead, or raise --max_length)")
    return kept
