"""The data layer as users have it: every accepted shape, every file type, several files with ratios, prompt turns."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, write_jsonl

from common_args import CommonArgs
from rlhfkit.args import parse_args
from rlhfkit.data.distillation import load_distillation_file
from rlhfkit.data.loader import load_splits
from rlhfkit.data.offline import converter, load_preference_file
from rlhfkit.data.prompts import load_prompt_file, prompt_rows
from rlhfkit.data.reader import DataFormatError
from rlhfkit.data.shapes import ShapeOptions, convert_row
from rlhfkit.errors import ConfigError

QUIET = dict(log=lambda *_: None)


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def pair(prompt, chosen, rejected):
    return {"prompt": prompt if isinstance(prompt, list) else [user(prompt)], "chosen": [bot(chosen)],
            "rejected": [bot(rejected)]}


PKU = {"prompt": "Q?", "response_0": "bad", "response_1": "good", "better_response_id": 1, "safer_response_id": 0}


# ----------------------------------------------------------------------------------------------------------
# Shapes


def test_pku_saferlhf_uses_better_response_id_or_the_key_asked_for():
    assert convert_row(PKU, "preference") == ("PKU-SafeRLHF (better_response_id)", [pair("Q?", "good", "bad")])
    safer = ShapeOptions(preference_key="safer_response_id")
    assert convert_row(PKU, "preference", safer)[1] == [pair("Q?", "bad", "good")]
    only_safer = {k: v for k, v in PKU.items() if k != "better_response_id"}
    assert convert_row(only_safer, "preference") == ("PKU-SafeRLHF (safer_response_id)", [pair("Q?", "bad", "good")])


def test_pku_saferlhf_rows_without_either_id_are_errors(tmp_path):
    row = {k: v for k, v in PKU.items() if not k.endswith("_id")}
    path = write_jsonl(tmp_path / "pku.jsonl", [PKU, row, dict(PKU, better_response_id=2)])
    with pytest.raises(DataFormatError) as e:
        load_preference_file(path, **QUIET)
    assert [str(p) for p in e.value.problems] == [
        f"{path}:2: field 'better_response_id': missing field: a PKU-SafeRLHF row needs better_response_id or "
        f"safer_response_id (0 or 1: which response is preferred)",
        f"{path}:3: field 'better_response_id': expected 0 or 1 (the preferred response), got int 2"]


def test_implicit_prompt_conversations_share_their_prompt_turns():
    system = {"role": "system", "content": "Be brief."}
    trl = {"chosen": [system, user("2+2?"), bot("4")], "rejected": [system, user("2+2?"), bot("5")]}
    assert convert_row(trl, "preference") == ("implicit prompt", [pair([system, user("2+2?")], "4", "5")])
    ultrafeedback = {"prompt": "2+2?", "chosen": [user("2+2?"), bot("4")], "rejected": [user("2+2?"), bot("5")],
                     "score_chosen": 9.0, "score_rejected": 1.0}
    assert convert_row(ultrafeedback, "preference")[1] == [pair("2+2?", "4", "5")]
    assert convert_row(ultrafeedback, "sft")[1] == [{"prompt": [user("2+2?")], "completion": [bot("4")]}]
    with pytest.raises(ValueError, match="do not share a prompt"):
        convert_row({"chosen": [user("a"), bot("b")], "rejected": [user("c"), bot("d")]}, "preference")
    with pytest.raises(ValueError, match="differs from the prompt turns"):
        convert_row(dict(ultrafeedback, prompt="3+3?"), "preference")


def test_ranked_responses_give_best_vs_worst_or_every_scored_pair():
    row = {"prompt": "Q?", "responses": [{"text": "ok", "score": 5}, {"text": "best", "score": 9},
                                         {"text": "worst", "score": 1}]}
    assert convert_row(row, "preference") == ("ranked responses", [pair("Q?", "best", "worst")])
    every = convert_row(row, "preference", ShapeOptions(pairs="all"))[1]
    assert every == [pair("Q?", "best", "ok"), pair("Q?", "best", "worst"), pair("Q?", "ok", "worst")]
    listed = {"prompt": "Q?", "responses": ["ok", "best", "worst"], "scores": [5, 9, 1]}
    assert convert_row(listed, "preference")[1] == [pair("Q?", "best", "worst")]
    with pytest.raises(ValueError, match="every response has the same score"):
        convert_row({"prompt": "Q?", "responses": ["a", "b"], "scores": [1, 1]}, "preference")
    # the other targets use the best vs worst pair
    assert convert_row(row, "sft", ShapeOptions(pairs="all"))[1] == [{"prompt": [user("Q?")],
                                                                      "completion": [bot("best")]}]


def test_alpaca_rows_for_sft_prompts_and_distillation():
    row = {"instruction": "Summarise.", "input": "A long text.", "output": "Short.", "system": "Be brief."}
    chat = [{"role": "system", "content": "Be brief."}, user("Summarise.\n\nA long text.")]
    assert convert_row(row, "sft") == ("alpaca", [{"prompt": chat, "completion": [bot("Short.")]}])
    assert convert_row(row, "prompt") == ("alpaca", [chat])
    assert convert_row(row, "distillation") == ("alpaca", [{"prompt": chat, "answer": [bot("Short.")]}])
    bare = {"instruction": "Name a fruit.", "input": ""}
    assert convert_row(bare, "distillation")[1] == [{"prompt": [user("Name a fruit.")], "answer": None}]
    with pytest.raises(ValueError, match="missing field") as e:
        convert_row(bare, "sft")
    assert e.value.field == "output"


def test_sharegpt_rows_from_value_or_role_content():
    row = {"system": "Be kind.", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                                   {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]}
    system = {"role": "system", "content": "Be kind."}
    shape, rows = convert_row(row, "sft")
    assert shape == "ShareGPT" and rows == [{"prompt": [system, user("Hi")], "completion": [bot("Hello")]},
                                            {"prompt": [system, user("Hi"), bot("Hello"), user("Bye")],
                                             "completion": [bot("Bye!")]}]
    messages_style = {"conversations": [user("Hi"), bot("Hello")]}
    assert convert_row(messages_style, "distillation")[1] == [{"prompt": [user("Hi")], "answer": [bot("Hello")]}]
    with pytest.raises(ValueError, match="unknown speaker 'robot'") as e:
        convert_row({"conversations": [{"from": "robot", "value": "x"}]}, "sft")
    assert e.value.field == "conversations[0].from"


def test_kto_labels_given_as_0_1_in_a_numeric_file(tmp_path):
    rows = [{"prompt": "Q?", "completion": "good", "label": 1}, {"prompt": "Q?", "completion": "bad", "label": 0}]
    args, config = kto_args(tmp_path, rows)
    from rlhfkit.data.offline import kto_data

    said = []
    config.per_device_train_batch_size = 2
    train, _ = kto_data(args, config, tokenizer(), "", log=said.append)
    assert sorted(r["label"] for r in train) == [False, True]
    assert any("2 unpaired (0/1 labels) rows" in s and "labels 0/1 read as false/true" in s for s in said)
    with pytest.raises(ValueError, match="a JSON boolean"):  # a row on its own (no numeric file): booleans only
        convert_row(rows[0], "unpaired")
    args, config = kto_args(tmp_path, rows + [{"prompt": "Q?", "completion": "x", "label": 2}])
    with pytest.raises(DataFormatError, match="label': expected 0 or 1"):
        kto_data(args, config, tokenizer(), "", **QUIET)


def kto_args(tmp_path, rows):
    from rlhf_args.kto_config import KTOConfig

    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    return parse_args((CommonArgs, KTOConfig), ["--train_data_path", path, "--output_dir", str(tmp_path / "o"),
                                                "--eval_split_size", "0"])


def tokenizer():
    from conftest import demo_tokenizer

    return demo_tokenizer()


@pytest.mark.parametrize("name, method", [
    ("pku_saferlhf.jsonl", "preference"), ("ultrafeedback_binarized.jsonl", "preference"),
    ("ranked_responses.jsonl", "preference"), ("hh_rlhf.jsonl", "preference"), ("plain_strings.jsonl", "preference"),
    ("alpaca.json", "sft"), ("sharegpt.jsonl", "sft"), ("kto_numeric_labels.jsonl", "unpaired"),
    ("prompts.jsonl", "prompt"), ("alpaca.json", "distillation"), ("sharegpt.jsonl", "prompt")])
def test_every_example_file_loads_without_a_conversion_step(name, method):
    from rlhfkit.data.chats import uses_number_labels
    from rlhfkit.data.loader import load_file
    from rlhfkit.data.shapes import ShapeOptions as Options

    def prepare(rows):
        if method == "prompt":  # rows with a `prompt` field are read by prompts.py, other shapes by the table
            return prompt_rows
        return converter(method, Options(number_labels=uses_number_labels(rows)))

    said = []
    loaded = load_file(os.path.join(ROOT, "data_example", name), None, summary=lambda f: str(dict(f.shapes)),
                       log=said.append, prepare=prepare)
    assert loaded.rows and not loaded.dropped and said


# ----------------------------------------------------------------------------------------------------------
# File types

ROWS = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}]
EXPECTED = [pair("Hi?", "Hello!", "Go away."), pair("2+2?", "4", "5"), pair("Sky?", "Blue.", "Green.")]


def write_as(kind, folder, rows):
    """`rows` saved as one file type; returns the path."""
    from datasets import Dataset

    if kind == "jsonl":
        return write_jsonl(folder / "d.jsonl", rows)
    if kind == "json":
        path = folder / "d.json"
        path.write_text(json.dumps(rows, indent=2))
        return str(path)
    if kind == "csv":
        path = folder / "d.csv"
        header = list(rows[0])
        path.write_text("\n".join([",".join(header)] + [",".join(str(r.get(k, "")) for k in header) for r in rows])
                        + "\n")
        return str(path)
    dataset = Dataset.from_list(rows)
    if kind == "parquet":
        dataset.to_parquet(str(folder / "d.parquet"))
        return str(folder / "d.parquet")
    dataset.save_to_disk(str(folder / "saved"))
    return str(folder / "saved")


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "save_to_disk"])
def test_every_file_type_gives_the_same_rows(kind, tmp_path):
    assert load_preference_file(write_as(kind, tmp_path, ROWS), **QUIET) == EXPECTED


@pytest.mark.parametrize("kind, where", [("jsonl", ":2:"), ("json", ":7:"), ("csv", ":3:"), ("parquet", ":row 1:"),
                                         ("save_to_disk", ":row 1:")])
def test_a_bad_row_names_the_file_and_the_row(kind, where, tmp_path):
    bad = [ROWS[0], {"prompt": "Q?", "chosen": "same", "rejected": "same"}, ROWS[2]]
    path = write_as(kind, tmp_path, bad)
    with pytest.raises(DataFormatError) as e:
        load_preference_file(path, **QUIET)
    assert str(e.value.problems[0]) == f"{path}{where} field 'rejected': identical to 'chosen'; a preference pair " \
                                       f"needs two different answers"


def test_conversational_rows_in_csv_and_parquet_cells():
    from datasets import Dataset  # noqa: F401  (the datasets library writes the Python repr of lists to CSV)

    row = pair("Q?", "yes", "no")
    for text in (json.dumps(row["chosen"]), repr(row["chosen"])):
        from rlhfkit.data.tables import csv_value

        assert csv_value(text, "chosen", str) == row["chosen"]


def test_malformed_csv_and_wrapped_json_are_reported(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq,a,b,extra\n")
    with pytest.raises(DataFormatError, match=r"d.csv:3: field '\(row\)': malformed CSV: 4 fields, the header has 3"):
        load_preference_file(str(path), **QUIET)
    assert len(load_preference_file(str(path), drop_bad_rows=True, **QUIET)) == 1
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"data": ROWS}))
    with pytest.raises(DataFormatError, match=r"wrapped in an object under 'data'.*jq '.data'"):
        load_preference_file(str(wrapped), **QUIET)
    lines = tmp_path / "l.json"  # JSON Lines saved as .json (common on the Hub) is read as JSON Lines
    lines.write_text("\n".join(json.dumps(r) for r in ROWS))
    assert load_preference_file(str(lines), **QUIET) == EXPECTED


def test_kto_numeric_labels_from_csv(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("prompt,completion,label\nQ?,good,1\nQ?,bad,0\n")
    from rlhfkit.data.chats import uses_number_labels
    from rlhfkit.data.loader import load_file

    loaded = load_file(str(path), None, prepare=lambda rows: converter("unpaired", ShapeOptions(
        number_labels=uses_number_labels(rows))), **QUIET)
    assert [r["label"] for r in loaded.rows] == [True, False]


# ----------------------------------------------------------------------------------------------------------
# Several files, ratios; prompt turns


def test_ratios_take_their_share_of_each_file(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(8)])
    b = write_as("parquet", tmp_path, [{"prompt": f"b{i}", "chosen": "x", "rejected": "y"} for i in range(4)])
    (args,) = parse_args((CommonArgs,), ["--train_data_path", a, b, "--train_data_ratios", "0.75", "0.5",
                                         "--eval_split_size", "0"])
    said = []
    splits = load_splits(args, 0, converter("preference", ShapeOptions()), log=said.append)
    prompts = [r["prompt"][0]["content"] for r in splits.flat()[0]]
    assert sum(p.startswith("a") for p in prompts) == 6 and sum(p.startswith("b") for p in prompts) == 2
    assert any(f"{a} 6 of 8 (ratio 0.75), {b} 2 of 4 (ratio 0.5); 8 in all" in s for s in said)
    (one,) = parse_args((CommonArgs,), ["--train_data_path", a])
    assert one.train_data_path == a  # one file stays a plain path


@pytest.mark.parametrize("flags, message", [
    (["--train_data_ratios", "0"], "in (0, 1]"), (["--train_data_ratios", "1.5"], "in (0, 1]"),
    (["--train_data_ratios", "0.5", "0.5"], "one ratio per --train_data_path file"),
    (["--pairs", "some"], "invalid choice: 'some'"), (["--prompt_turns", "first"], "invalid choice: 'first'"),
    (["--preference_key", "kindest"], "invalid choice: 'kindest'")])
def test_bad_data_flags_are_refused_while_parsing(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_args((CommonArgs,), flags)
    with pytest.raises(ConfigError):
        CommonArgs(pairs="some") if "--pairs" in flags else CommonArgs(train_data_ratios=[0.0])


def test_prompt_turns_all_gives_one_prompt_per_user_turn(tmp_path):
    chat = {"messages": [user("one"), bot("1"), user("two"), bot("2"), user("three"), bot("3")]}
    path = write_jsonl(tmp_path / "chat.jsonl", [chat])
    prompts = load_prompt_file(path, prompt_turns="all", **QUIET)
    assert [p["prompt"][-1]["content"] for p in prompts] == ["one", "two", "three"]
    assert prompts[2] == {"prompt": chat["messages"][:5]}
    assert len(load_prompt_file(path, **QUIET)) == 1
    from rlhfkit.data.prompts import prompt_data

    args = CommonArgs(train_data_path=path, eval_split_size=0, prompt_turns="all")
    config = type("C", (), {"seed": 0, "max_prompt_length": None})()
    train, _ = prompt_data(args, config, tokenizer(), "", **QUIET)
    assert len(train) == 3


def test_prompt_rows_keep_their_data_columns_and_chat_rows_convert(tmp_path):
    """A file of `prompt` rows (PPO, RLOO, GRPO, sampling) keeps its data columns (a gold `answer`) and drops the fields
    a shape reads (`chosen`); a ShareGPT file converts through the shape table.
    """
    own = write_jsonl(tmp_path / "own.jsonl", [{"prompt": "Hi?", "answer": "1"},
                                               {"prompt": [user("a"), bot("b"), user("c")], "chosen": "x"}])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": [{"from": "human", "value": "Hi"},
                                                                    {"from": "gpt", "value": "Hello"}]}])
    code = ("import json, sys; from rlhfkit.data.prompts import load_prompt_file; said = []; "
            "rows = load_prompt_file(sys.argv[1], log=said.append, prompt_turns='all'); "
            "print(json.dumps([said[0], rows]))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, path], cwd=ROOT, capture_output=True, text=True,
                                      timeout=120, check=True).stdout) for path in (own, chat)]
    (said, rows), (chat_said, chat_rows) = runs
    assert said.endswith("3 prompts (1 plain-string prompt, 1 prompt rows); plain-string prompts became one user "
                         "turn; every user turn became a prompt, with the turns before it as context "
                         "(prompt_turns='all')"), said
    assert rows == [{"prompt": [user("Hi?")], "answer": "1"}, {"prompt": [user("a")], "answer": None},
                    {"prompt": [user("a"), bot("b"), user("c")], "answer": None}], rows
    assert chat_said.endswith("1 prompts (1 ShareGPT rows); ShareGPT conversations: human -> user, gpt -> assistant; "
                              "every user turn became a prompt, with the turns before it as context "
                              "(prompt_turns='all')"), chat_said
    assert chat_rows == [{"prompt": [user("Hi")]}]


def test_the_shape_table_says_which_fields_are_data_columns():
    """`shape_fields` comes from the `Shape` rows: a KTO `label` beside its `completion` is read by that shape, a gold
    `label` beside a `prompt` is a data column; PKU's preference keys count only beside `response_0`.
    """
    from rlhfkit.data.shapes import shape_fields

    assert shape_fields({"prompt": "p", "label": 1, "answer": "2"}) == {"prompt"}
    assert shape_fields({"prompt": "p", "completion": "c", "label": True}) == {"prompt", "completion", "label"}
    assert shape_fields({"prompt": "p", "better_response_id": 0}) == {"prompt"}
    assert shape_fields({"conversations": [], "system": "s", "id": 3}) == {"conversations", "system"}


def test_sft_and_distillation_read_the_new_shapes(tmp_path):
    path = os.path.join(ROOT, "data_example", "alpaca.json")
    assert len(load_distillation_file(path, **QUIET)) == 4
    sharegpt = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    shape, rows = convert_row(sharegpt, "sft")
    assert shape == "ShareGPT" and rows == [{"prompt": [user("a")], "completion": [bot("b")]}]
