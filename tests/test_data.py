"""Data loading: accepted shapes, conversions, and the error messages users see (FILE:LINE: field ...)."""

import json

import pytest
from conftest import demo_tokenizer, write_jsonl

from rlhfkit.data.loader import split_train_eval
from rlhfkit.data.offline import check_chat_template, count_too_long, load_preference_file
from rlhfkit.data.pairs import split_hh_transcript
from rlhfkit.data.prompts import load_prompt_file
from rlhfkit.data.reader import DataFormatError

GOOD = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}


def load(tmp_path, rows, **kw):
    return load_preference_file(write_jsonl(tmp_path / "d.jsonl", rows), log=lambda *_: None, **kw)


def error_of(tmp_path, rows):
    with pytest.raises(DataFormatError) as e:
        load(tmp_path, rows)
    return str(e.value)


def test_conversational_rows_pass_through_unchanged(tmp_path):
    assert load(tmp_path, [GOOD]) == [GOOD]


def test_plain_strings_become_one_user_turn_and_one_answer(tmp_path):
    (row,) = load(tmp_path, [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}])
    assert row == {"prompt": [{"role": "user", "content": "Hi?"}],
                   "chosen": [{"role": "assistant", "content": "Hello!"}],
                   "rejected": [{"role": "assistant", "content": "Go away."}]}


def test_hh_rlhf_transcripts_split_into_multi_turn_prompt_and_answers(tmp_path):
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit."
    (row,) = load(tmp_path, [{"chosen": shared + "\n\nAssistant: An apple.",
                              "rejected": shared + "\n\nAssistant: I will not."}])
    assert row["prompt"] == [{"role": "user", "content": "Hi there"},
                             {"role": "assistant", "content": "Hello! How can I help?"},
                             {"role": "user", "content": "Name a fruit."}]
    assert row["chosen"] == [{"role": "assistant", "content": "An apple."}]
    assert row["rejected"] == [{"role": "assistant", "content": "I will not."}]


def test_detection_is_announced(tmp_path):
    said = []
    load_preference_file(write_jsonl(tmp_path / "d.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b",
                                                              "rejected": "\n\nHuman: a\n\nAssistant: c"}]),
                         log=said.append)
    assert "1 hh-rlhf rows" in said[0] and "raw hh-rlhf transcripts were split" in said[0]


@pytest.mark.parametrize("row, where, message", [
    ({"prompt": "q", "chosen": "a"}, "field 'rejected'", "missing field"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "field 'prompt'", "expected a non-empty list"),
    ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}, "field 'prompt[0].role'",
     "unknown role 'robot'"),
    ({"prompt": "q", "chosen": "   ", "rejected": "b"}, "field 'chosen'", "empty answer"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": ""}], "rejected": "b"}, "field 'chosen'",
     "empty answer"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "field 'rejected'", "identical to 'chosen'"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "a",
      "rejected": "b"}, "field 'prompt'", "must end with a user turn"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "field 'chosen[0].role'",
     "expected role 'assistant'"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: other\n\nAssistant: c"}, "field 'rejected'",
     "do not share a prompt"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, where, message):
    text = error_of(tmp_path, [GOOD, row])
    assert f"d.jsonl:2: {where}: {message}" in text


def test_malformed_json_names_the_line(tmp_path):
    text = error_of(tmp_path, [GOOD, GOOD, '{"prompt": "q", "chosen": "a",'])
    assert "d.jsonl:3: field '(row)': malformed JSON" in text


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n")
    with pytest.raises(DataFormatError, match="d.jsonl:1: field '\\(row\\)': the file is empty"):
        load_preference_file(str(tmp_path / "d.jsonl"))


def test_error_lists_at_most_ten_problems_and_counts_the_rest(tmp_path):
    text = error_of(tmp_path, [GOOD] + [{"prompt": "q", "chosen": "x", "rejected": "x"}] * 13)
    assert text.startswith("13 problem(s)")
    assert text.count("identical to 'chosen'") == 10 and "and 3 more" in text
    assert "--drop_bad_rows true" in text


def test_drop_bad_rows_skips_and_counts(tmp_path):
    said = []
    rows = load_preference_file(write_jsonl(tmp_path / "d.jsonl", [GOOD, "{oops", GOOD, {"prompt": "q"}]),
                                drop_bad_rows=True, log=said.append)
    assert rows == [GOOD, GOOD]
    assert "dropped 2 bad row(s) of 4" in said[1]


def test_real_hh_rlhf_sample_converts(tmp_path):
    """The shared hh-rlhf sample (when present): every row but the few with an empty final answer converts."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                        "hh-rlhf-harmless-base-test.first1000.jsonl")
    if not os.path.isfile(path):
        pytest.skip("shared/data is not beside this checkout")
    rows = load_preference_file(path, drop_bad_rows=True, log=lambda *_: None)
    assert len(rows) == 997  # 3 rows have an empty chosen answer
    assert all(r["prompt"][-1]["role"] == "user" and r["chosen"][0]["content"] for r in rows)


def test_split_hh_transcript_rejects_non_transcripts():
    with pytest.raises(ValueError, match="must start with"):
        split_hh_transcript("Human: hi\n\nAssistant: yo")


def test_eval_split_is_deterministic_and_sized():
    rows = list(range(100))
    train, held = split_train_eval(rows, 0.1, seed=1)
    assert len(held) == 10 and len(train) == 90 and sorted(train + held) == rows
    assert split_train_eval(rows, 0.1, seed=1) == (train, held)
    assert len(split_train_eval(rows, 7, seed=1)[1]) == 7
    assert split_train_eval(rows, 0, seed=1) == (rows, [])
    with pytest.raises(ValueError, match="leaves no training rows"):
        split_train_eval(rows, 100, seed=1)


def test_chat_template_prefix_check():
    tokenizer = demo_tokenizer()
    check_chat_template(tokenizer, GOOD, "demo")  # SmolLM2's template is fine
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(ValueError, match="does not render the prompt as a prefix"):
        check_chat_template(tokenizer, GOOD, "demo")
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        check_chat_template(tokenizer, GOOD, "demo")


def test_count_too_long():
    tokenizer = demo_tokenizer()
    long_row = json.loads(json.dumps(GOOD))
    long_row["rejected"][0]["content"] = "word " * 300
    assert count_too_long(tokenizer, [GOOD, long_row], max_length=100) == 1
    assert count_too_long(tokenizer, [GOOD, long_row], max_length=1000) == 0


def test_load_prompt_file_keeps_repeated_prompts_once_and_counts_dropped_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    ask = lambda q: json.dumps({"prompt": [{"role": "user", "content": q}]})  # noqa: E731
    path.write_text("\n".join([ask("a"), "{not json", ask("b"), ask("a"), "[1, 2]", ask("a")]) + "\n")
    logs = []
    prompts = load_prompt_file(str(path), drop_bad_rows=True, log=logs.append)
    assert [p["prompt"][-1]["content"] for p in prompts] == ["a", "b"]
    said = "\n".join(logs)
    assert "2 prompts (2 repeated prompts kept once)" in said  # not 0: the 2 unparseable lines are not repeats
    assert "dropped 2 bad row(s) of 6" in said and ":2:" in said and ":5:" in said
    with pytest.raises(DataFormatError, match=r"p.jsonl:2: field '\(row\)': malformed JSON"):
        load_prompt_file(str(path))
