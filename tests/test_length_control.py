"""--length_control batch: the least-squares length trend of a rollout's scores, removed (hand-computed examples)."""

import pytest
import torch

from rlhfkit.reward import remove_length_trend


def test_a_pure_length_reward_becomes_flat():
    lengths = torch.tensor([10.0, 20.0, 30.0, 40.0])
    adjusted, slope = remove_length_trend(0.1 * lengths + 2.0, lengths)  # score = 2 + 0.1 per token
    assert slope == pytest.approx(0.1)
    assert torch.allclose(adjusted, torch.full((4,), 4.5))  # every answer gets the mean score, 2 + 0.1 * 25


def test_hand_computed_trend_and_what_is_left():
    # lengths 1, 2, 3 (mean 2); scores 1, 0, 5 (mean 2): cov = (-1)(-1) + 0(-2) + 1(3) = 4, var = 2, slope = 2
    adjusted, slope = remove_length_trend(torch.tensor([1.0, 0.0, 5.0]), torch.tensor([1, 2, 3]))
    assert slope == pytest.approx(2.0)
    assert adjusted.tolist() == pytest.approx([3.0, 0.0, 3.0])  # 1 + 2, 0 - 0, 5 - 2: the mean stays 2
    assert float(adjusted.mean()) == pytest.approx(2.0)


def test_equal_lengths_leave_the_scores_alone():
    scores = torch.tensor([0.3, -1.0, 2.0])
    adjusted, slope = remove_length_trend(scores, torch.tensor([7, 7, 7]))
    assert slope == 0.0 and torch.equal(adjusted, scores)


LENGTH_REWARD = """
def length(prompts, completions, completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]
"""


@pytest.mark.parametrize("method", ["PPO", "RLOO", "GRPO"])
def test_a_pure_length_reward_is_removed_whole(method, tmp_path):
    """A reward that is the answer's length in tokens: each rollout's slope is exactly 1 token per token and its
    correlation with length 1; after --length_control batch every answer scores the rollout's mean length.
    """
    from conftest import base_flags, write_jsonl
    from test_ppo import make_toy_model

    import train_rlhf

    make_toy_model(str(tmp_path / "model"))
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"t{8 + i} t{20 + i}"} for i in range(16)])
    (tmp_path / "reward.py").write_text(LENGTH_REWARD)
    common = ["--rlhf_type", method, "--reward_model_path", "none", "--reward_function",
              f"{tmp_path / 'reward.py'}:length", "--length_control", "batch", "--eval_split_size", "0",
              "--min_new_tokens", "0", "--temperature", "1.5"]
    shape = (["--response_length", "12", "--per_device_train_batch_size", "16", "--num_ppo_epochs", "1"]
             if method == "PPO" else ["--max_completion_length", "12", "--per_device_train_batch_size", "16",
                                      "--num_generations", "4"])
    trainer = train_rlhf.main(base_flags(str(tmp_path / "model"), str(tmp_path / "p.jsonl"), tmp_path / "out",
                                         *common, *shape, "--max_steps", "1"))
    logged = {k: v for e in trainer.state.log_history for k, v in e.items()}
    assert logged["length_control/slope"] == pytest.approx(1.0, abs=1e-4)
    assert logged["completions/score_length_corr"] == pytest.approx(1.0, abs=1e-4)
    assert logged["length_control/mean_abs_change"] > 0  # the answers had different lengths
    if method == "PPO":  # the score PPO trained on: every answer got the rollout's mean length
        trainer._metrics.clear()
        gen = {"scores": {"length": torch.tensor([2.0, 4.0, 9.0])}, "mask": torch.tensor([[1] * 2 + [0] * 7,
               [1] * 4 + [0] * 5, [1] * 9]).bool(), "ended": torch.tensor([True, True, False])}
        score, _ = trainer._shape_scores(gen)
        assert score.tolist() == pytest.approx([5.0, 5.0, 5.0])
