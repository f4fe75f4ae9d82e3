"""The data layer: read any data file, detect and check each row's shape, convert it to what a method trains on.

Every problem is reported as `FILE:LINE: field 'NAME': what is wrong` (`FILE:row N: ...` for Parquet / Arrow files
and `datasets.save_to_disk` folders) before any model is loaded. By default loading stops and lists the first
problems (`DataFormatError`); with `drop_bad_rows=True` bad rows are skipped and counted instead.

Modules, one job each:

    reader.py    JSON Lines and JSON files; what every reader returns (`DataFile`) and where a problem is (`Problem`)
    tables.py    CSV, Parquet, Arrow and save_to_disk folders (imported for those files only)
    messages.py  checks of chat messages, prompts and answers (`RowError` names the field at fault)
    pairs.py     preference shapes (explicit prompt, hh-rlhf, implicit prompt, PKU-SafeRLHF, ranked responses)
    chats.py     messages / ShareGPT / alpaca conversations, prompt/completion, unpaired (KTO) rows
    shapes.py    the table of shapes: detection and conversion per target (preference, unpaired, sft, prompt, ...),
                 and the notes printed for the shapes a file held
    loader.py    `read_file` (the reader by file type) -> convert -> collect problems -> stop or drop; several files
                 with ratios; the train/eval split; the printed summary of a file
    offline.py   the loaders of rows that carry their answers, for the offline methods and the reward model
                 (preference_data, kto_data, sft_data, load_preference_file) and the checks that need the tokenizer
                 (the chat template joins prompt and answer, lengths)
    prompts.py   the online methods' and sampling's prompts (prompt_data, load_prompt_file), with their other columns
                 for reward functions; reads a row's `prompt` field itself, shapes.py only for other rows
    distillation.py  GKD's loaders (distillation_data, load_distillation_file), imported by train_gkd.py only

The package imports none of them: a run imports the modules it uses (`from rlhfkit.data.offline import
preference_data`). A new data shape is one `Shape` row in shapes.py. `--check` (rlhfkit/report/preflight.py) prints
what a run would train on.
"""
