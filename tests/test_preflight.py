"""`--check`: the data step only; prints the shapes, the split and one example with the trained tokens marked, loads
no weights and leaves no output_dir.
"""

import os

import pytest
import transformers
from conftest import ROOT, easy_pairs, write_jsonl

import rejection_sampling
import reward_model
import train_gkd
import train_rlhf
from rlhfkit.errors import run_cli


@pytest.fixture
def no_weights(monkeypatch):
    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"weights were loaded: {cls.__name__}.from_pretrained{args[:1]}")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def checked(main, argv, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(main, argv)
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    return out


def test_dpo_check_shows_the_trained_tokens_and_writes_nothing(tiny_model_dir, tmp_path, capsys, no_weights):
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(10))
    out = checked(train_rlhf.main, ["--rlhf_type", "DPO", "--model_name_or_path", tiny_model_dir, "--train_data_path",
                                    data, "--output_dir", str(tmp_path / "out"), "--check"], capsys)
    assert f"[data] {data}: 10 preference pairs (10 conversational rows)" in out
    assert "held out 1 of 10 rows" in out and "[check] DPO: 9 training rows, 1 eval rows" in out
    chosen = next(line for line in out.splitlines() if line.strip().startswith("chosen ("))
    assert "trained): [[Sure|," in chosen and chosen.endswith("<|im_end|>|\\n]]")
    assert "  prompt (" in out and "[[" not in next(s for s in out.splitlines() if s.strip().startswith("prompt ("))
    assert "eos '<|im_end|>' (id 2)" in out and "no weights were loaded" in out
    assert not (tmp_path / "out").exists()


def test_reward_model_sft_gkd_and_sampling_checks(tiny_model_dir, tmp_path, capsys, no_weights):
    pairs = write_jsonl(tmp_path / "d.jsonl", easy_pairs(10))
    out = checked(reward_model.main, ["--model_name_or_path", tiny_model_dir, "--train_data_path", pairs,
                                      "--output_dir", str(tmp_path / "rm"), "--check"], capsys)
    assert "[check] reward model:" in out and "the score is read at the last token" in out
    sft = os.path.join(ROOT, "data_example", "sharegpt.jsonl")
    out = checked(train_rlhf.main, ["--rlhf_type", "SFT", "--model_name_or_path", tiny_model_dir, "--train_data_path",
                                    sft, "--output_dir", str(tmp_path / "sft"), "--check", "--eval_split_size", "0"],
                  capsys)
    assert "4 ShareGPT rows" in out and "completion (" in out and "[[" in out
    gkd = os.path.join(ROOT, "data_example", "alpaca.json")
    out = checked(train_gkd.main, ["--model_name_or_path", tiny_model_dir, "--teacher_model_name_or_path",
                                   tiny_model_dir, "--train_data_path", gkd, "--output_dir", str(tmp_path / "gkd"),
                                   "--check", "--eval_split_size", "0"], capsys)
    assert "4 alpaca rows" in out and "answer (" in out
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": "2"}, {"role": "user", "content": "three"}]}])
    out = checked(rejection_sampling.main, ["--policy_name_or_path", tiny_model_dir, "--reward_model_path",
                                            tiny_model_dir, "--prompts_path", chat, "--output_dir",
                                            str(tmp_path / "rs"), "--prompt_turns", "all", "--check"], capsys)
    assert "[check] rejection sampling: 3 training rows" in out
    for name in ("rm", "sft", "gkd", "rs"):
        assert not (tmp_path / name).exists()
