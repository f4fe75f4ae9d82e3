"""The data layer: read any data file, detect and check each row's shape, convert it to what a method trains on.

Every problem is reported as `FILE:LINE: field 'NAME': what is wrong` (`FILE:row N: ...` for Parquet / Arrow files
and `datasets.save_to_disk` folders) before any model is loaded. By default loading stops and lists the first
problems (`DataFormatError`); with `drop_bad_rows=True` bad rows are skipped and counted instead.

Modules, one job each:

    errors.py    Problem, DataFormatError, RowError
    messages.py  checks of chat messages, prompts and answers
    pairs.py     preference shapes (explicit prompt, hh-rlhf, implicit prompt, PKU-SafeRLHF, ranked responses)
    chats.py     messages / ShareGPT / alpaca conversations, prompt/completion, unpaired (KTO) rows
    shapes.py    the table of shapes: detection and conversion per target (preference, unpaired, sft, prompt, ...)
    reader.py    one reader for .jsonl, .json, .csv, .parquet, .arrow and save_to_disk folders
    loader.py    read -> convert -> collect problems -> stop or drop; several files with ratios
    split.py     the train/eval split
    tokens.py    checks that need the tokenizer (chat template, lengths)
    methods.py   the per-method loaders (preference_data, kto_data, sft_data, prompt_data, distillation_data)

`--check` (utils/preflight.py) prints what a run would train on, rendered token by token.

KTO's class weights live next to the KTO config (rlhf_args/kto_config.py); `kto_class_weights` is re-exported here.
"""

from utils.data.chats import alpaca_conversation, sharegpt_conversation
from utils.data.errors import MAX_LISTED, DataFormatError, Problem, RowError
from utils.data.loader import LoadedFile, load_file, load_sources, log_dropped, settle_problems, take_share
from utils.data.messages import ROLES
from utils.data.methods import (distillation_data, kto_data, load_distillation_file, load_preference_file,
                                load_prompt_file, preference_data, prompt_data, sft_data)
from utils.data.pairs import split_hh_transcript
from utils.data.reader import DataFile, read_file, read_jsonl
from utils.data.shapes import (SHAPES, ShapeOptions, convert_row, detect_preference_format, prompt_of,
                               to_distillation_row, to_preference_row, to_sft_rows, to_unpaired_rows)
from utils.data.split import load_splits, split_train_eval
from utils.data.tokens import ANSWER_PLACEHOLDER, check_chat_template, check_tokenized_rows, count_too_long

__all__ = ["alpaca_conversation", "sharegpt_conversation", "MAX_LISTED", "DataFormatError", "Problem", "RowError",
           "LoadedFile", "load_file", "load_sources", "log_dropped", "settle_problems", "take_share", "ROLES",
           "distillation_data", "kto_data", "load_distillation_file", "load_preference_file", "load_prompt_file",
           "preference_data", "prompt_data", "sft_data", "split_hh_transcript", "DataFile", "read_file", "read_jsonl",
           "SHAPES", "ShapeOptions", "convert_row", "detect_preference_format", "prompt_of", "to_distillation_row",
           "to_preference_row", "to_sft_rows", "to_unpaired_rows", "load_splits", "split_train_eval",
           "ANSWER_PLACEHOLDER", "check_chat_template", "check_tokenized_rows", "count_too_long", "kto_class_weights"]


def __getattr__(name: str):
    """`kto_class_weights` is imported from rlhf_args/kto_config.py on first use (that module imports TRL)."""
    if name == "kto_class_weights":
        from rlhf_args.kto_config import kto_class_weights

        return kto_class_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
