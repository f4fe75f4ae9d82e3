"""rejection_sampling.py on tiny models: best-of-N SFT rows and best-vs-worst pairs whose chosen answer scores at
least as high as the rejected one; identical best/worst answers give no pair; train_rlhf.py trains DPO on the pairs.
"""

import json

import pytest
import torch
from conftest import TINY, write_jsonl
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

import rejection_sampling
import train_rlhf
from rlhfkit.data.distillation import load_distillation_file
from rlhfkit.data.offline import load_preference_file
from rlhfkit.model import load_reward_model
from rlhfkit.reward import reward_scorer


@pytest.fixture(scope="module")
def tiny_rm_dir(tiny_model_dir, tmp_path_factory):
    """A tiny random reward model (LlamaForSequenceClassification, 1 label) with the demo tokenizer."""
    path = str(tmp_path_factory.mktemp("tiny_rm"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1, **TINY)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def read(path):
    return [json.loads(line) for line in open(path)]


def rs_flags(policy, rm, prompts, out, *extra):
    return ["--policy_name_or_path", policy, "--reward_model_path", rm, "--prompts_path", prompts,
            "--output_dir", str(out), "--num_samples", "3", "--max_new_tokens", "8", "--batch_size", "4", *extra]


@pytest.fixture(scope="module")
def sampled(tiny_model_dir, tiny_rm_dir, easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rs") / "out"
    summary = rejection_sampling.main(rs_flags(tiny_model_dir, tiny_rm_dir, easy_data[0], out, "--max_prompts", "6"))
    return summary, out


def test_pairs_are_best_versus_worst_by_the_reward_model(sampled, tiny_rm_dir):
    summary, out = sampled
    counts = summary["counts"]
    pairs, sft, samples = read(out / "pairs.jsonl"), read(out / "best_of_n.jsonl"), read(out / "samples.jsonl")
    assert counts["prompts"] == len(samples) == 6 and counts["answers_sampled"] == 18
    assert len(pairs) == counts["pairs"] >= 4
    assert counts["pairs"] + counts["pairs_skipped_identical_texts"] + counts["pairs_skipped_small_gap"] == len(sft)
    # Re-score with the reward model: chosen >= rejected, and chosen is the best of the prompt's samples.
    model, tokenizer = load_reward_model(tiny_rm_dir)
    score = reward_scorer(model, tokenizer)
    prompts = [p["prompt"] for p in pairs]
    chosen = score(prompts, [p["chosen"][0]["content"] for p in pairs])
    rejected = score(prompts, [p["rejected"][0]["content"] for p in pairs])
    assert all(c >= r for c, r in zip(chosen, rejected)) and any(c > r for c, r in zip(chosen, rejected))
    best_of = {json.dumps(s["prompt"]): max(a["score"] for a in s["answers"]) for s in samples}
    assert [best_of[json.dumps(p)] for p in prompts] == pytest.approx(chosen, abs=1e-4)
    stats = summary["scores"]
    assert stats["best_per_prompt"]["mean"] >= stats["all_answers"]["mean"] >= stats["worst_per_prompt"]["mean"]
    assert stats["best_minus_worst"]["min"] >= 0
    assert {json.dumps(r["messages"][-1:]) for r in sft} >= {json.dumps(p["chosen"]) for p in pairs}
    assert open(out / "score_distribution.png", "rb").read(4) == b"\x89PNG"


def test_outputs_load_as_sft_and_dpo_data_and_dpo_trains(sampled, tiny_model_dir, tmp_path):
    _, out = sampled
    sft = load_distillation_file(str(out / "best_of_n.jsonl"), log=lambda s: None)
    assert sft and all(r["answer"] is not None for r in sft)
    assert len(load_preference_file(str(out / "pairs.jsonl"), log=lambda s: None)) == len(read(out / "pairs.jsonl"))
    trainer = train_rlhf.main(["--rlhf_type", "DPO", "--model_name_or_path", tiny_model_dir, "--train_data_path",
                               str(out / "pairs.jsonl"), "--output_dir", str(tmp_path / "dpo"), "--max_steps", "1",
                               "--eval_split_size", "0", "--report_to", "none", "--save_strategy", "no",
                               "--logging_steps", "1", "--disable_tqdm", "true"])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert trainer.state.global_step == 1 and losses[0] == pytest.approx(0.6931, abs=1e-3)  # ln 2: policy == ref


def test_identical_best_and_worst_give_no_pair(tiny_model_dir, tiny_rm_dir, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}, {"prompt": "Say bye."}, {"prompt": "Count."}])
    fake = [["Hi.", "Hi.", "Hi."], ["Bye now.", "", "Goodbye!"], ["", "", ""]]  # same text / an empty / all empty
    results = [[{"answer": text, "token_ids": [1] * len(text)} for text in group] for group in fake]
    monkeypatch.setattr(rejection_sampling, "sample_answers", lambda *a: (results, 1))
    summary = rejection_sampling.main(rs_flags(tiny_model_dir, tiny_rm_dir, prompts, tmp_path / "out"))
    counts = summary["counts"]
    assert (counts["pairs"], counts["pairs_skipped_identical_texts"], counts["sft_rows"]) == (1, 1, 2)
    assert (counts["empty_answers_dropped"], counts["prompts_without_any_answer"]) == (4, 1)
    pair = read(tmp_path / "out" / "pairs.jsonl")[0]
    assert pair["prompt"] == [{"role": "user", "content": "Say bye."}]
    assert {pair["chosen"][0]["content"], pair["rejected"][0]["content"]} == {"Bye now.", "Goodbye!"}


def test_best_and_worst_skip_copies_of_the_best_answer():
    assert rejection_sampling.best_and_worst(["a", "b", "a"], [0.1, 0.5, 0.1]) == (1, 0)
    assert rejection_sampling.best_and_worst(["a", "a", "b"], [0.9, 0.2, 0.4]) == (0, 2)  # not the copy at 0.2
    assert rejection_sampling.best_and_worst(["a", "a"], [0.3, 0.1]) == (0, 0)


def test_settings_and_missing_reward_model_are_refused_before_loading(tiny_model_dir, easy_data, tmp_path):
    with pytest.raises(ValueError, match="--num_samples must be >= 2"):
        rejection_sampling.main(rs_flags(tiny_model_dir, "x", easy_data[0], tmp_path / "a", "--num_samples", "1"))
    with pytest.raises(FileNotFoundError, match="reward model not found: nowhere; train one first with "
                                                "`python reward_model.py --output_dir nowhere`"):
        rejection_sampling.main(rs_flags(tiny_model_dir, "nowhere", easy_data[0], tmp_path / "b"))
