"""Reward-model ensembles (`--reward_model_path rm_a,rm_b --reward_ensemble mean|min|mean_minus_std`): the maths by
hand, the checks before any weights load, and each path that takes a reward model (PPO, RLOO, GRPO, evaluate.py in
both modes, rejection sampling) scoring with the combined members on the toy model of test_ppo.py.
"""

import json

import pytest
import torch
from conftest import write_jsonl
from test_ppo import LAYOUTS, build_trainer, make_lora_reward_model, make_toy, toy_flags

import evaluate
import rejection_sampling
import train_rlhf
from rlhfkit.errors import ConfigError, PathNotFoundError
from rlhfkit.model_folders import reward_model_paths
from rlhfkit.reward import check_reward_model_path, load_reward_model, reward_scorer
from rlhfkit.reward_ensemble import RewardEnsemble, combine_scores


def test_combine_scores_by_hand():
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 3.0]])
    assert combine_scores(scores, "mean").tolist() == pytest.approx([2.0, 0.0, 1.0])
    assert combine_scores(scores, "min").tolist() == pytest.approx([1.0, 0.0, -1.0])
    # population standard deviations: sqrt(2/3), 0, sqrt(8/3)
    assert combine_scores(scores, "mean_minus_std").tolist() == pytest.approx(
        [2 - (2 / 3) ** 0.5, 0.0, 1 - (8 / 3) ** 0.5])
    assert combine_scores(torch.tensor([[4.0]]), "mean_minus_std").tolist() == [4.0]  # one member: no spread
    with pytest.raises(ValueError, match="combine must be one of mean, min, mean_minus_std"):
        combine_scores(scores, "max")


def test_reward_model_paths(tmp_path):
    assert reward_model_paths("output/rm") == ["output/rm"]
    assert reward_model_paths("a, b ,c,") == ["a", "b", "c"]
    odd = tmp_path / "rm,v2"
    odd.mkdir()
    assert reward_model_paths(str(odd)) == [str(odd)]  # a folder named with a comma is one model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def members(toy, tmp_path_factory):
    """Two different random LoRA reward models on the toy base (seeds 1 and 2)."""
    folder = tmp_path_factory.mktemp("members")
    first = make_lora_reward_model(toy["model"], str(folder / "rm_a"))
    second = make_lora_reward_model(toy["model"], str(folder / "rm_b"), seed=2)
    return first, second


def member_scores(paths, prompts, answers):
    """(n, K): each member's own score of each (prompt, answer), loaded and scored alone."""
    columns = []
    for path in paths:
        model, tokenizer = load_reward_model(path, "cpu")
        columns.append(reward_scorer(model, tokenizer)(prompts, answers))
    return torch.tensor(columns).T


def test_ensemble_logits_are_the_members_scores_combined(members):
    prompts, answers = ["t9 t10", "t11", "t12 t13 t14"], ["t7 t7", "t20 t21 t22", "t8"]
    alone = member_scores(members, prompts, answers)
    assert not torch.allclose(alone[:, 0], alone[:, 1])  # two different models
    for combine in ("mean", "min", "mean_minus_std"):
        model, tokenizer = load_reward_model(",".join(members), "cpu", ensemble=combine)
        assert isinstance(model, RewardEnsemble) and model.config._name_or_path == f"reward_ensemble_{combine}"
        got = reward_scorer(model, tokenizer)(prompts, answers)
        assert got == pytest.approx(combine_scores(alone, combine).tolist(), abs=1e-5)


def test_members_are_checked_before_any_weights_load(members, tiny_model_dir, tmp_path):
    with pytest.raises(PathNotFoundError, match="reward model not found: nowhere"):
        check_reward_model_path(f"{members[0]},nowhere")
    with pytest.raises(ConfigError, match="a member is given twice"):
        check_reward_model_path(f"{members[0]},{members[0]}")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    other = str(tmp_path / "other_vocabulary")
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(other)
    with pytest.raises(ConfigError, match="the members' tokenizers differ"):
        check_reward_model_path(f"{members[0]},{other}")
    with pytest.raises(ConfigError, match="the value model is one model"):
        check_reward_model_path(",".join(members), "--value_model_path")
    check_reward_model_path(",".join(members))  # a good ensemble passes


def test_ppo_scores_rollouts_with_the_worst_member(members, toy, tmp_path):
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["separate-lora"], "--reward_model_path", ",".join(members),
                            "--reward_ensemble", "min", "--reward_function", "none", "--per_device_train_batch_size",
                            "4")
    assert isinstance(trainer.reward_model, RewardEnsemble) and len(trainer.reward_model.members) == 2
    assert trainer.model.value_model.peft_config["default"].task_type == "SEQ_CLS"  # from the first member
    rows = list(trainer.train_dataset)[:4]
    generated = trainer._generate(trainer.model, rows)
    expected = member_scores(members, [r["prompt"] for r in rows], generated["texts"]).min(dim=1).values
    assert generated["scores"]["reward_model"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("method", ["RLOO", "GRPO"])
def test_rloo_and_grpo_train_on_the_ensemble(method, members, toy, tmp_path):
    trainer = train_rlhf.main(toy_flags(toy, tmp_path / method, "--rlhf_type", method, "--reward_model_path",
                                        ",".join(members), "--reward_ensemble", "mean_minus_std",
                                        "--reward_function", "none", "--max_steps", "2",
                                        "--max_completion_length", "8"))
    assert trainer.state.global_step == 2
    logged = [e["rewards/reward_ensemble_mean_minus_std/mean"] for e in trainer.state.log_history
              if "rewards/reward_ensemble_mean_minus_std/mean" in e]
    assert logged and all(abs(v) < 1e3 for v in logged)


def test_evaluate_scores_answers_and_pairs_with_the_ensemble(members, toy, tmp_path):
    pairs = [{"prompt": f"t{10 + i} t{20 + i}", "chosen": f"t7 t{30 + i}", "rejected": f"t{40 + i} t{41 + i} t9"}
             for i in range(6)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    both = ",".join(members)
    summary = evaluate.main(["--models", f"toy={toy['model']}", "--reward_model_path", both, "--reward_ensemble",
                             "min", "--eval_data_path", data, "--max_new_tokens", "6", "--output_dir",
                             str(tmp_path / "answers")])
    generations = [json.loads(line) for line in open(tmp_path / "answers" / "generations.jsonl")]
    alone = member_scores(members, [p["prompt"] for p in pairs], [g["answer"] for g in generations])
    assert [g["score"] for g in generations] == pytest.approx(alone.min(dim=1).values.tolist(), abs=1e-5)
    accuracy = evaluate.main(["--reward_model_path", both, "--eval_data_path", data, "--output_dir",
                              str(tmp_path / "accuracy")])["reward_model_accuracy"]
    prompts = [p["prompt"] for p in pairs]
    chosen = member_scores(members, prompts, [p["chosen"] for p in pairs]).mean(dim=1)
    rejected = member_scores(members, prompts, [p["rejected"] for p in pairs]).mean(dim=1)
    assert accuracy["n"] == 6 and accuracy["accuracy"] == pytest.approx(((chosen > rejected).float()
                                                                         + 0.5 * (chosen == rejected).float()).mean())
    assert summary["models"]["toy"]["mean_score_by_judge"]["reward_model"] == pytest.approx(
        alone.min(dim=1).values.mean().item(), abs=1e-5)


def test_rejection_sampling_scores_with_the_ensemble(members, toy, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "t9 t10"}, {"prompt": "t11 t12"}])
    texts = [["t7 t7", "t20", "t21 t22"], ["t8", "t7", "t30 t31"]]
    results = [[{"answer": t, "token_ids": [1], "ended": True} for t in group] for group in texts]
    monkeypatch.setattr(rejection_sampling, "sample_answers", lambda *a: (results, 0))
    rejection_sampling.main(["--policy_name_or_path", toy["model"], "--reward_model_path", ",".join(members),
                             "--reward_ensemble", "mean_minus_std", "--prompts_path", prompts, "--num_samples", "3",
                             "--output_dir", str(tmp_path / "out")])
    samples = [json.loads(line) for line in open(tmp_path / "out" / "samples.jsonl")]
    alone = member_scores(members, ["t9 t10"] * 3 + ["t11 t12"] * 3, [t for group in texts for t in group])
    expected = combine_scores(alone, "mean_minus_std").tolist()
    assert [a["score"] for s in samples for a in s["answers"]] == pytest.approx(expected, abs=1e-5)
