"""Prompts for the online methods (PPO, RLOO, GRPO) and for sampling (rejection sampling, evaluation): any row with a
prompt becomes `{"prompt": [messages], **columns}`, its other columns (a gold `answer`, IFEval's instructions) kept for
the reward functions. A row with a `prompt` field is read here; chat rows and raw hh-rlhf transcripts are converted by
the table of shapes (rlhfkit/data/shapes.py), which also says which fields of a row are data columns.
"""

from __future__ import annotations

import json

from rlhfkit.data.loader import load_file, load_splits, summarise
from rlhfkit.data.messages import as_prompt, prompt_turns_of
from rlhfkit.data.shapes import ShapeOptions, convert_row, shape_fields, shape_notes
from rlhfkit.log import info_rank0
from rlhfkit.model_folders import require_chat_template

OWN_SHAPES = ("prompt", "plain-string prompt")  # rows with a `prompt` field; other shapes come from shapes.py


def prompt_rows(row: dict, prompt_turns: str = "last") -> tuple[str, list[dict]]:
    """Convert one row to `(shape, [{"prompt": [messages], **columns}])`: the `prompt` field (answers beside it are
    ignored), or a chat / raw hh-rlhf row by `shapes.convert_row`; `prompt_turns` "all": one prompt per user turn.

    The columns are the row's fields its shape does not read (`shapes.shape_fields`; e.g. a gold `answer` or `label`,
    IFEval's `instruction_id_list` and `kwargs`); they reach reward functions as keyword arguments (TRL's
    convention). Raises `RowError`.
    """
    if "prompt" in row:
        shape = "plain-string prompt" if isinstance(row["prompt"], str) else "prompt"
        prompts = prompt_turns_of(as_prompt(row["prompt"]), prompt_turns)
    else:
        shape, prompts = convert_row(row, "prompt", ShapeOptions(prompt_turns=prompt_turns))
    read = shape_fields(row)
    columns = {k: v for k, v in row.items() if k not in read}
    return shape, [{"prompt": prompt, **columns} for prompt in prompts]


def count_long_prompts(tokenizer, prompts: list[list[dict]], limit: int | None) -> int:
    """Number of prompts longer than `limit` tokens once rendered with the chat template (0 if `limit` is None)."""
    if not limit:
        return 0
    return sum(len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True)["input_ids"]) > limit
               for p in prompts)


def prompt_notes(shapes, prompt_turns: str) -> list[str]:
    """The notes on a prompt file whose input rows had `shapes` (names): its own shapes', the table's, the turns'."""
    notes = ["plain-string prompts became one user turn"] if "plain-string prompt" in shapes else []
    if set(shapes) - set(OWN_SHAPES):
        notes += shape_notes(shapes)
    if prompt_turns == "all" and set(shapes) & {"prompt", "messages", "ShareGPT", "alpaca"}:
        notes.append("every user turn became a prompt, with the turns before it as context (prompt_turns='all')")
    return notes


def prompt_data(model_args, config, tokenizer, too_long: str, log=info_rank0) -> tuple[list[dict], list[dict]]:
    """The data loader for online methods: `[{"prompt": [messages], **columns}]` rows, train and eval.

    Reads any row with a prompt: prompt-only rows, every preference shape (its prompt; answers are ignored), chat
    rows (`messages`, ShareGPT, alpaca: the conversation without its final answer; `--prompt_turns all`: one prompt
    per user turn). A row's other columns (e.g. a gold `answer`) are kept for the reward functions
    (`prompt_rows`); a column some rows lack is None in those. Counts the prompts longer than
    `config.max_prompt_length` tokens after the chat template (`too_long` says what the trainer does with them).
    Raises `DataFormatError` (`FILE:LINE: field ...`), `PathNotFoundError` or `ConfigError` (no chat template),
    before any model is loaded.
    """
    turns = model_args.prompt_turns
    train, held_out = load_splits(model_args, config.seed, lambda row: prompt_rows(row, turns),
                                  lambda f: summarise(f, "prompts", prompt_notes(f.shapes, turns)), log).flat()
    require_chat_template(tokenizer, model_args.model_name_or_path, "prompts given as messages")
    limit = getattr(config, "max_prompt_length", None)
    n = count_long_prompts(tokenizer, [r["prompt"] for r in train], limit)
    if n:
        log(f"[data] {n} of {len(train)} prompts are longer than max_prompt_length={limit} tokens; {too_long}")
    return same_columns(train), same_columns(held_out)


def same_columns(rows: list[dict]) -> list[dict]:
    """`rows` with every column any of them has (None where missing), so that `Dataset.from_list` keeps them all."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k) for k in names} for row in rows]


def load_prompt_file(path: str, drop_bad_rows: bool = False, log=info_rank0,
                     prompt_turns: str = "last") -> list[dict]:
    """Prompt rows `{"prompt": [messages], **columns}` for sampling (rejection sampling, evaluation) from any file
    `prompt_data` reads; the columns (e.g. a gold `answer`) go to reward functions as keyword arguments.

    Each prompt ends with a user turn; a repeated prompt is kept once (its first row), in file order.
    Raises `DataFormatError` (`FILE:LINE: field ...`) unless `drop_bad_rows`, or if no prompt is left;
    `PathNotFoundError` if the file is missing.
    """
    seen, repeats = set(), [0]

    def convert(row):
        shape, rows = prompt_rows(row, prompt_turns)
        fresh = []
        for prompt_row in rows:
            key = json.dumps(prompt_row["prompt"], sort_keys=True)
            if key in seen:
                repeats[0] += 1
            else:
                seen.add(key)
                fresh.append(prompt_row)
        return shape, fresh

    def summary(loaded):
        after = f" ({repeats[0]} repeated prompts kept once)" if repeats[0] else ""
        return summarise(loaded, "prompts", prompt_notes(loaded.shapes, prompt_turns), after)

    return same_columns(load_file(path, convert, drop_bad_rows, summary, log).rows)
