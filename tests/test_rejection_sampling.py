"""rejection_sampling.py on tiny models: best-of-N SFT rows and best-vs-worst pairs whose chosen answer scores at
least as high as the rejected one; identical best/worst answers give no pair; `--pairs all` gives every right x wrong
pair up to the cap; unfinished answers are left out by default; train_rlhf.py trains DPO on the pairs.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, write_jsonl
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

import rejection_sampling
import train_rlhf
from rlhfkit.data.distillation import load_distillation_file
from rlhfkit.data.offline import load_preference_file
from rlhfkit.reward import load_reward_model, reward_scorer


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
    summary = rejection_sampling.main(rs_flags(tiny_model_dir, tiny_rm_dir, easy_data[0], out, "--max_prompts", "6",
                                               "--keep_unfinished", "true"))  # a tiny random model never ends
    return summary, out


def test_pairs_are_best_versus_worst_by_the_reward_model(sampled, tiny_rm_dir):
    summary, out = sampled
    counts = summary["counts"]
    pairs, sft, samples = read(out / "pairs.jsonl"), read(out / "best_of_n.jsonl"), read(out / "samples.jsonl")
    assert counts["prompts"] == len(samples) == 6 and counts["answers_sampled"] == 18
    assert len(pairs) == counts["pairs"] >= 4
    assert (counts["pairs"] + counts["prompts_without_pair_identical_texts"] + counts["prompts_without_pair_small_gap"]
            == len(sft))
    assert counts["answers_cut_at_max_new_tokens"] == 18 and counts["unfinished_answers_left_out"] == 0
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
    results = [[{"answer": text, "token_ids": [1] * len(text), "ended": True} for text in group] for group in fake]
    monkeypatch.setattr(rejection_sampling, "sample_answers", lambda *a: (results, 1))
    summary = rejection_sampling.main(rs_flags(tiny_model_dir, tiny_rm_dir, prompts, tmp_path / "out"))
    counts = summary["counts"]
    assert (counts["pairs"], counts["prompts_without_pair_identical_texts"], counts["sft_rows"]) == (1, 1, 2)
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


def pair_settings(**changes):
    return SimpleNamespace(**{"pairs": "all", "min_score_gap": 0.0, "max_pairs_per_prompt": 16, **changes})


def test_all_pairs_are_every_right_wrong_combination_up_to_the_cap():
    import random

    texts = ["12", "13", "14", "15", "16", "17", "18", "12"]  # 2 right ("12" twice: one text), 6 wrong
    scores = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    pairs, why = rejection_sampling.pairs_of(texts, scores, pair_settings(), random.Random(0))
    assert why == "" and len(pairs) == 6  # the copy of "12" makes no second set of pairs
    assert {(texts[c], texts[r]) for c, r in pairs} == {("12", t) for t in texts[1:7]}
    capped, _ = rejection_sampling.pairs_of(texts, scores, pair_settings(max_pairs_per_prompt=4), random.Random(0))
    assert len(capped) == 4 and set(capped) <= set(pairs)
    texts, scores = ["a", "b", "c", "d"], [3.0, 2.0, 1.0, 1.0]  # graded scores: largest gaps first
    graded, _ = rejection_sampling.pairs_of(texts, scores, pair_settings(max_pairs_per_prompt=3), random.Random(1))
    assert [scores[c] - scores[r] for c, r in graded] == [2.0, 2.0, 1.0]
    assert rejection_sampling.pairs_of(["a", "a"], [1.0, 0.0], pair_settings(), random.Random(0)) == ([], "identical")
    assert rejection_sampling.pairs_of(["a", "b"], [1.0, 1.0], pair_settings(), random.Random(0)) == ([], "small_gap")
    assert rejection_sampling.pairs_of(["a", "b"], [1.0, 0.5], pair_settings(min_score_gap=1),
                                       random.Random(0)) == ([], "small_gap")


def test_unfinished_answers_make_no_pair_and_all_pairs_are_written(tiny_model_dir, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2 plus 3?", "answer": 5},
                                                 {"prompt": "What is 1 plus 1?", "answer": 2}])
    fake = [[("5", True), ("6", True), ("7", True), ("5 and then", False)],  # 1 right, 2 wrong; a cut right one
            [("2", False), ("3", True), ("4", True), ("5", True)]]  # the only right answer did not end
    results = [[{"answer": a, "token_ids": [1], "ended": e} for a, e in group] for group in fake]
    monkeypatch.setattr(rejection_sampling, "sample_answers", lambda *a: (results, 2))
    flags = ["--policy_name_or_path", tiny_model_dir, "--reward_model_path", "none", "--reward_function",
             "rlhfkit.verifiers:exact_number", "--prompts_path", prompts, "--num_samples", "4", "--pairs", "all"]
    summary = rejection_sampling.main([*flags, "--output_dir", str(tmp_path / "out")])
    counts = summary["counts"]
    assert (counts["pairs"], counts["unfinished_answers_left_out"]) == (2, 2)
    assert counts["prompts_without_pair_small_gap"] == 1
    pairs = read(tmp_path / "out" / "pairs.jsonl")
    assert sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs) == [("5", "6"), ("5", "7")]
    assert [a["ended"] for a in read(tmp_path / "out" / "samples.jsonl")[1]["answers"]] == [False, True, True, True]
    kept = rejection_sampling.main([*flags, "--keep_unfinished", "true", "--output_dir", str(tmp_path / "kept")])
    assert kept["counts"]["pairs"] == 2 * 2 + 3 and kept["counts"]["unfinished_answers_left_out"] == 0
