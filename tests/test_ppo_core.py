"""Tests for rlhfkit/ppo/core.py: hand-computed numbers for every piece of PPO maths."""

import math
import os
import sys

import pytest
import torch

torch.set_num_threads(1)

# Make `import rlhfkit` work however pytest is started (no conftest in this repo).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from rlhfkit.ppo.core import (  # noqa: E402
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    compute_reinforce_pp,
    compute_rewards,
    kl_estimate,
    last_token_index,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_with_moments,
    ppo_policy_loss,
    ppo_value_loss,
    response_mask,
    sequence_lengths,
    shape_scores,
    truncate_after_stop,
    update_running_moments,
)

EOS = 1


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def close(actual, expected, atol=1e-9):
    torch.testing.assert_close(actual, t(expected, actual.dtype), atol=atol, rtol=0)


# ---------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------


def test_masked_mean_hand_values_and_float_mask():
    values = t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, -9.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    close(masked_mean(values, mask), (1 + 2 + 3 + 4) / 4)
    close(masked_mean(values, mask, dim=1), [2.0, 4.0])
    close(masked_mean(values, mask.double()), (1 + 2 + 3 + 4) / 4)
    # Padded values (even nan / inf) do not matter.
    values[~mask] = float("nan")
    values[1, 3] = float("inf")
    close(masked_mean(values, mask), 2.5)
    # Empty mask: 0, not nan.
    close(masked_mean(values, torch.zeros_like(mask)), 0.0)
    with pytest.raises(ValueError):
        masked_mean(values, mask[:, :3])


def test_masked_var_hand_values_and_too_few_elements():
    values = t([[1.0, 2.0, 3.0, 4.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    # mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5
    close(masked_var(values, mask), 5 / 3)
    close(masked_var(values, mask, unbiased=False), 5 / 4)
    one = torch.tensor([[True, False, False, False, False]])
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(values, one)
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(values, torch.zeros_like(one))
    close(masked_var(values, one, unbiased=False), 0.0)


def test_masked_whiten_mean0_var1_zero_padding_and_padding_ignored():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3.0 + 5.0
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool
    )
    white = masked_whiten(values, mask)
    close(masked_mean(white, mask), 0.0, atol=1e-12)
    close(masked_var(white, mask), 1.0, atol=1e-7)
    assert torch.equal(white[~mask], torch.zeros(int((~mask).sum()), dtype=white.dtype))

    # Changing padded entries (to huge numbers or nan) changes nothing.
    altered = values.clone()
    altered[~mask] = 1e6
    assert torch.equal(masked_whiten(altered, mask), white)
    altered[~mask] = float("nan")
    assert torch.equal(masked_whiten(altered, mask), white)

    # Statistics are over masked positions only: compare with plain torch on the selected entries.
    selected = values[mask]
    expected = (selected - selected.mean()) / torch.sqrt(selected.var(unbiased=True) + 1e-8)
    torch.testing.assert_close(white[mask], expected)

    # shift_mean=False keeps the original masked mean, still unit variance.
    kept = masked_whiten(values, mask, shift_mean=False)
    close(masked_mean(kept, mask), selected.mean().item(), atol=1e-12)
    close(masked_var(kept, mask), 1.0, atol=1e-7)
    assert torch.equal(kept[~mask], torch.zeros(int((~mask).sum()), dtype=kept.dtype))


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def test_response_mask_with_pad_equal_eos():
    ids = torch.tensor(
        [
            [5, 6, EOS, EOS, EOS],  # EOS then EOS-as-pad
            [EOS, EOS, EOS, EOS, EOS],  # immediate EOS: one real token
            [5, 6, 7, 8, 9],  # truncated, no EOS
            [5, EOS, 6, EOS, EOS],  # text after the first EOS is padding too
        ]
    )
    mask = response_mask(ids, EOS)
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    assert torch.equal(sequence_lengths(mask), torch.tensor([3, 1, 5, 2]))
    assert torch.equal(last_token_index(mask), torch.tensor([2, 0, 4, 1]))
    # A naive `ids != pad` mask would have dropped the real EOS of row 0.
    assert not torch.equal(ids != EOS, expected)


def test_response_mask_pad_differs_from_eos_and_several_eos_ids():
    pad = 0
    ids = torch.tensor([[5, EOS, pad, pad], [5, 9, 6, 7], [9, pad, pad, pad]])
    assert torch.equal(
        response_mask(ids, EOS), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    )
    # 9 as a second stop token.
    assert torch.equal(
        response_mask(ids, [EOS, 9]), torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    )
    with pytest.raises(ValueError):
        response_mask(ids, None)
    with pytest.raises(ValueError):
        response_mask(ids[0], EOS)


def test_truncate_after_stop_pads_after_the_first_stop_token():
    pad = 0
    responses = torch.tensor([[5, EOS, 7, EOS], [5, 6, 7, 8], [9, 9, 2, 7]])
    cut, mask, ended = truncate_after_stop(responses, [EOS, 2], pad)  # two stop ids
    assert cut.tolist() == [[5, EOS, pad, pad], [5, 6, 7, 8], [9, 9, 2, pad]]
    assert mask.tolist() == [[True, True, False, False], [True] * 4, [True, True, True, False]]
    assert ended.tolist() == [True, False, True]
    same, everything, all_ended = truncate_after_stop(responses, None, pad)  # fixed-length responses
    assert torch.equal(same, responses) and bool(everything.all()) and all_ended.tolist() == [True] * 3


def test_shape_scores_penalty_then_clip_hand_values():
    scores, ended = t([3.0, -0.5, 12.0]), torch.tensor([True, False, False])
    penalised, shaped = shape_scores(scores, ended, missing_eos_penalty=1.0, reward_clip=10.0)
    close(penalised, [3.0, -1.5, 11.0])  # -1 for each response cut without EOS
    close(shaped, [3.0, -1.5, 10.0])  # then clipped to [-10, 10]
    penalised, shaped = shape_scores(scores, ended)
    close(penalised, [3.0, -0.5, 12.0])  # no penalty, no clipping
    close(shaped, [3.0, -0.5, 12.0])
    with pytest.raises(ValueError, match="reward_clip"):
        shape_scores(scores, ended, reward_clip=0.0)


def test_running_moments_hand_values_and_normalisation():
    stats = update_running_moments({"count": 0, "mean": 0.0, "m2": 0.0}, [1.0, 2.0, 3.0])
    assert stats == pytest.approx({"count": 3, "mean": 2.0, "m2": 2.0})  # m2 = 1 + 0 + 1
    stats = update_running_moments(stats, [4.0])
    assert stats == pytest.approx({"count": 4, "mean": 2.5, "m2": 5.0})  # 2.25 + 0.25 + 0.25 + 2.25
    close(normalize_with_moments(t([4.0, 2.5]), stats), [1.5 / math.sqrt(5 / 3), 0.0], atol=1e-7)


def test_lengths_and_last_index_float_and_empty_rows():
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.equal(sequence_lengths(mask), torch.tensor([2, 0, 3]))
    assert sequence_lengths(mask).dtype == torch.long
    # Empty row -> 0 (documented), same as a one-token row.
    assert torch.equal(last_token_index(mask), torch.tensor([1, 0, 2]))
    assert last_token_index(mask).dtype == torch.long


# ---------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_exactly_zero_for_equal_logprobs(kind):
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(8, 16, generator=g) * 10
    kl = kl_estimate(logp, logp.clone(), kind)
    assert torch.equal(kl, torch.zeros_like(logp))


def test_kl_hand_values():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])  # d = logp - ref = [0.5, -1.0]
    close(kl_estimate(logp, ref, "k1"), [0.5, -1.0])
    close(kl_estimate(logp, ref, "k2"), [0.125, 0.5])
    # k3 = (exp(-d) - 1) + d
    close(kl_estimate(logp, ref, "k3"), [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0], atol=1e-12)


def test_kl_signs_on_random_inputs():
    g = torch.Generator().manual_seed(2)
    logp = -torch.rand(64, 32, generator=g) * 8
    ref = -torch.rand(64, 32, generator=g) * 8
    # include nearly equal pairs, where cancellation could push k3 below 0
    ref[:8] = logp[:8] + torch.randn(8, 32, generator=g) * 1e-6
    k1 = kl_estimate(logp, ref, "k1")
    k2 = kl_estimate(logp, ref, "k2")
    k3 = kl_estimate(logp, ref, "k3")
    assert (k1 < 0).any() and (k1 > 0).any()
    assert (k2 >= 0).all()
    assert (k3 >= 0).all()
    # k3 ~ d^2/2 for small d
    d = t([1e-3, -1e-3, 5e-3])
    torch.testing.assert_close(kl_estimate(d, torch.zeros_like(d), "k3"), d**2 / 2, rtol=1e-2, atol=0)


def test_k1_and_k3_are_unbiased_estimates_of_kl_policy_to_ref():
    # Sample tokens from pi; the mean of k1 and k3 must approach KL(pi || pi_ref), not KL(pi_ref || pi).
    g = torch.Generator().manual_seed(3)
    pi = t([0.6, 0.3, 0.1])
    ref = t([0.2, 0.3, 0.5])
    true_kl = float((pi * (pi / ref).log()).sum())  # 0.4982
    reverse_kl = float((ref * (ref / pi).log()).sum())  # 0.5838
    assert abs(true_kl - reverse_kl) > 0.05
    x = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    for kind in ("k1", "k3"):
        est = kl_estimate(pi.log()[x], ref.log()[x], kind).mean().item()
        assert abs(est - true_kl) < 0.01, (kind, est, true_kl)


def test_unknown_kl_estimator_raises_with_allowed_names():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError) as err:
        kl_estimate(x, x, "k4")
    message = str(err.value)
    assert "k4" in message and "k1" in message and "k2" in message and "k3" in message
    with pytest.raises(ValueError, match="k1"):
        compute_rewards(torch.zeros(2), x, x, torch.ones(2, 3, dtype=torch.bool), 0.1, kl_estimator="abs")


# ---------------------------------------------------------------------------
# Reward shaping
# ---------------------------------------------------------------------------


def test_compute_rewards_score_on_last_real_token_with_pad_equal_eos():
    ids = torch.tensor([[5, 6, EOS, EOS, EOS], [EOS, EOS, EOS, EOS, EOS], [5, 6, 7, 8, 9]])
    mask = response_mask(ids, EOS)
    scores = t([2.0, -1.0, 0.5])
    logp = torch.zeros(3, 5, dtype=torch.float64)
    rewards, kl = compute_rewards(scores, logp, logp.clone(), mask, kl_coef=0.1)
    expected = t(
        [
            [0.0, 0.0, 2.0, 0.0, 0.0],  # score on the EOS at index 2, not on index 3 (old TRL)
            [-1.0, 0.0, 0.0, 0.0, 0.0],  # EOS at index 0
            [0.0, 0.0, 0.0, 0.0, 0.5],  # truncated: last position
        ]
    )
    assert torch.equal(rewards, expected)
    assert torch.equal(kl, torch.zeros_like(kl))


def test_compute_rewards_kl_penalty_hand_values_and_padding_zero():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    logp = t([[-1.0, -2.0, 1.0], [-0.5, -0.5, -0.5]])  # 1.0 = TRL's INVALID_LOGPROB at padding
    ref = t([[-1.5, -1.0, -7.0], [-0.5, -1.0, -0.25]])
    scores = t([3.0, -2.0])
    rewards, kl = compute_rewards(scores, logp, ref, mask, kl_coef=0.1, kl_estimator="k1")
    close(kl, [[0.5, -1.0, 0.0], [0.0, 0.5, -0.25]])
    close(rewards, [[-0.05, 0.1 + 3.0, 0.0], [0.0, -0.05, 0.025 - 2.0]], atol=1e-12)

    rewards3, kl3 = compute_rewards(scores, logp, ref, mask, kl_coef=0.1, kl_estimator="k3")
    k3 = lambda d: math.exp(-d) - 1 + d  # noqa: E731
    close(kl3, [[k3(0.5), k3(-1.0), 0.0], [0.0, k3(0.5), k3(-0.25)]], atol=1e-12)
    assert (kl3 >= 0).all()
    close(rewards3[:, 2], [0.0, -0.1 * k3(-0.25) - 2.0], atol=1e-12)


def test_compute_rewards_rejects_empty_row_and_bad_shapes():
    x = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="empty row"):
        compute_rewards(torch.zeros(2), x, x, mask, 0.1)
    with pytest.raises(ValueError):
        compute_rewards(torch.zeros(3), x, x, torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="prefix"):
        compute_rewards(torch.zeros(2), x, x, torch.tensor([[1, 0, 1], [1, 1, 1]]), 0.1)


# ---------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------

# Two rows, T = 3. Row 0 is full; row 1 has 2 real tokens (the EOS at index 1)
# and garbage at the padded index 2 that must not leak.
GAE_REWARDS = [[0.0, 0.0, 1.0], [0.2, -0.5, 7.0]]
GAE_VALUES = [[0.5, 0.4, 0.6], [0.3, 0.1, 9.9]]
GAE_MASK = [[1, 1, 1], [1, 1, 0]]


def test_gae_hand_example_gamma1_lam095():
    # gamma = 1, lam = 0.95, gamma*lam = 0.95
    # row 0: d2 = 1 - 0.6 = 0.4                 A2 = 0.4
    #        d1 = 0 + 0.6 - 0.4 = 0.2           A1 = 0.2 + 0.95*0.4  = 0.58
    #        d0 = 0 + 0.4 - 0.5 = -0.1          A0 = -0.1 + 0.95*0.58 = 0.451
    #        R  = A + V = [0.951, 0.98, 1.0]
    # row 1: d1 = -0.5 + 0 - 0.1 = -0.6 (V after EOS is 0)   A1 = -0.6
    #        d0 = 0.2 + 0.1 - 0.3 = 0.0         A0 = 0 + 0.95*(-0.6) = -0.57
    #        R  = [-0.27, -0.5, 0]
    adv, ret = compute_gae(t(GAE_REWARDS), t(GAE_VALUES), torch.tensor(GAE_MASK, dtype=torch.bool), 1.0, 0.95)
    close(adv, [[0.451, 0.58, 0.4], [-0.57, -0.6, 0.0]], atol=1e-12)
    close(ret, [[0.951, 0.98, 1.0], [-0.27, -0.5, 0.0]], atol=1e-12)


def test_gae_hand_example_gamma09_lam095():
    # gamma = 0.9, lam = 0.95, gamma*lam = 0.855
    # row 0: d2 = 1 - 0.6 = 0.4                      A2 = 0.4
    #        d1 = 0 + 0.9*0.6 - 0.4 = 0.14           A1 = 0.14 + 0.855*0.4   = 0.482
    #        d0 = 0 + 0.9*0.4 - 0.5 = -0.14          A0 = -0.14 + 0.855*0.482 = 0.27211
    #        R  = [0.77211, 0.882, 1.0]
    # row 1: d1 = -0.5 - 0.1 = -0.6                  A1 = -0.6
    #        d0 = 0.2 + 0.9*0.1 - 0.3 = -0.01        A0 = -0.01 + 0.855*(-0.6) = -0.523
    #        R  = [-0.223, -0.5, 0]
    adv, ret = compute_gae(t(GAE_REWARDS), t(GAE_VALUES), torch.tensor(GAE_MASK, dtype=torch.float64), 0.9, 0.95)
    close(adv, [[0.27211, 0.482, 0.4], [-0.523, -0.6, 0.0]], atol=1e-12)
    close(ret, [[0.77211, 0.882, 1.0], [-0.223, -0.5, 0.0]], atol=1e-12)


def test_gae_hand_worked_examples():
    # Worked by hand (independently of the examples above): rewards 0, 0, 1 with values 0.5 give deltas 0, 0, 0.5
    # and, with lambda 0.5, advantages 0.125, 0.25, 0.5.
    adv, ret = compute_gae(t([[0.0, 0.0, 1.0]]), t([[0.5, 0.5, 0.5]]), torch.ones(1, 3), gamma=1.0, lam=0.5)
    close(adv, [[0.125, 0.25, 0.5]], atol=1e-12)
    close(ret, [[0.625, 0.75, 1.0]], atol=1e-12)
    adv, ret = compute_gae(
        t([[0.1, -0.2, 1.0, 0.0]]), t([[0.3, 0.4, 0.6, 9.9]]), torch.tensor([[1, 1, 1, 0]]), gamma=0.9, lam=0.8
    )
    close(adv, [[0.32416, 0.228, 0.4, 0.0]], atol=1e-12)
    close(ret, [[0.62416, 0.628, 1.0, 0.0]], atol=1e-12)


def test_gae_padding_does_not_leak_and_lambda_limits():
    g = torch.Generator().manual_seed(4)
    rewards = torch.randn(3, 5, generator=g, dtype=torch.float64)
    values = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.7)
    r2, v2 = rewards.clone(), values.clone()
    r2[~mask], v2[~mask] = 123.0, float("nan")
    adv2, ret2 = compute_gae(r2, v2, mask, gamma=0.9, lam=0.7)
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()

    # lam = 1: Monte-Carlo, A_t = sum_k gamma^k r_{t+k} - V_t over the real tokens.
    gamma = 0.9
    adv_mc, ret_mc = compute_gae(rewards, values, mask, gamma=gamma, lam=1.0)
    for b in range(3):
        n = int(mask[b].sum())
        for s in range(n):
            mc = sum(gamma**k * rewards[b, s + k].item() for k in range(n - s))
            assert ret_mc[b, s].item() == pytest.approx(mc, abs=1e-12)
            assert adv_mc[b, s].item() == pytest.approx(mc - values[b, s].item(), abs=1e-12)
    # lam = 0: one-step TD error, with V = 0 after the last real token.
    adv_td, _ = compute_gae(rewards, values, mask, gamma=gamma, lam=0.0)
    next_v = torch.cat([values[:, 1:], torch.zeros(3, 1, dtype=values.dtype)], dim=1)
    next_v = torch.where(torch.cat([mask[:, 1:], torch.zeros(3, 1, dtype=torch.bool)], dim=1), next_v, 0.0)
    expected_td = torch.where(mask, rewards + gamma * next_v - values, 0.0)
    torch.testing.assert_close(adv_td, expected_td)

    with pytest.raises(ValueError):
        compute_gae(rewards, values, mask, gamma=1.5)
    with pytest.raises(ValueError, match="prefix"):
        compute_gae(rewards, values, torch.tensor([[1, 0, 1, 1, 1]] * 3))


def test_pipeline_score_reaches_eos_with_pad_equal_eos():
    # With zero KL, gamma = lam = 1 and zero values, every real token's return is the score.
    ids = torch.tensor([[5, EOS, EOS, EOS], [6, 7, 8, 9]])
    mask = response_mask(ids, EOS)
    logp = torch.zeros(2, 4)
    rewards, _ = compute_rewards(torch.tensor([2.0, -1.0]), logp, logp, mask, kl_coef=0.05)
    adv, ret = compute_gae(rewards, torch.zeros(2, 4), mask, gamma=1.0, lam=1.0)
    assert torch.equal(ret, torch.tensor([[2.0, 2.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]]))
    assert torch.equal(adv, ret)


# ---------------------------------------------------------------------------
# PPO losses
# ---------------------------------------------------------------------------


def test_reinforce_pp_hand_example_gamma09():
    """Reward-to-go with gamma 0.9, then one mean/std over all 5 real tokens of the batch (Hu 2025)."""
    inf = float("inf")
    rewards = t([[0.1, -0.2, 1.0, inf], [0.5, 2.0, -inf, inf]])  # padding may hold anything
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    advantages, returns = compute_reinforce_pp(rewards, mask, gamma=0.9)
    # row 0: G2 = 1.0, G1 = -0.2 + 0.9 * 1.0 = 0.7, G0 = 0.1 + 0.9 * 0.7 = 0.73; row 1: G1 = 2.0, G0 = 2.3
    close(returns, [[0.73, 0.7, 1.0, 0.0], [2.3, 2.0, 0.0, 0.0]], atol=1e-12)
    mean = (0.73 + 0.7 + 1.0 + 2.3 + 2.0) / 5  # 1.346
    var = sum((g - mean) ** 2 for g in (0.73, 0.7, 1.0, 2.3, 2.0)) / 4  # unbiased: 2.25432 / 4
    std = math.sqrt(var + 1e-8)
    close(advantages, [[(0.73 - mean) / std, (0.7 - mean) / std, (1.0 - mean) / std, 0.0],
                       [(2.3 - mean) / std, (2.0 - mean) / std, 0.0, 0.0]], atol=1e-9)
    assert var == pytest.approx(2.25432 / 4)


def test_reinforce_pp_gamma1_is_the_sum_of_rewards_to_come_and_checks_inputs():
    rewards = t([[0.0, -0.1, 3.0], [-0.2, 1.0, 0.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    _, returns = compute_reinforce_pp(rewards, mask)
    close(returns, [[2.9, 2.9, 3.0], [0.8, 1.0, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        compute_reinforce_pp(rewards, mask, gamma=1.5)
    with pytest.raises(ValueError, match="prefix"):
        compute_reinforce_pp(rewards, t([[1, 0, 1], [1, 1, 0]]))


def test_policy_loss_ratio_one():
    g = torch.Generator().manual_seed(5)
    logp = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 5
    adv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    loss, stats = ppo_policy_loss(logp, logp.clone(), adv, mask, cliprange=0.2)
    assert set(stats) == {"clipfrac", "approxkl", "ratio_mean"}
    assert stats["ratio_mean"].item() == 1.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["approxkl"].item() == 0.0
    torch.testing.assert_close(loss, -masked_mean(adv, mask), rtol=0, atol=1e-15)
    assert all(v.dim() == 0 and v.dtype.is_floating_point for v in stats.values())


def test_policy_loss_clipping_hand_example():
    # eps = 0.2. Four real tokens and one padded token holding garbage (-inf / nan).
    #   ratio 1.5, A=+1: max(-1.5, -1.2) = -1.2  clipped   (no gain beyond 1+eps)
    #   ratio 1.5, A=-1: max( 1.5,  1.2) =  1.5  unclipped (always pay for the bad move)
    #   ratio 0.5, A=+1: max(-0.5, -0.8) = -0.5  unclipped
    #   ratio 0.5, A=-1: max( 0.5,  0.8) =  0.8  clipped
    # loss = (-1.2 + 1.5 - 0.5 + 0.8) / 4 = 0.15, clipfrac = 2/4
    old = t([[-1.0, -1.0, -1.0, -1.0, float("-inf")]])
    logp = (old + t([[math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5), 0.0]])).clone()
    logp[0, 4] = float("nan")
    logp.requires_grad_(True)
    adv = t([[1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    loss, stats = ppo_policy_loss(logp, old, adv, mask, cliprange=0.2)
    close(loss.detach(), 0.15, atol=1e-12)
    close(stats["clipfrac"], 0.5)
    close(stats["ratio_mean"], 1.0, atol=1e-12)
    close(stats["approxkl"], 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4, atol=1e-12)
    assert not stats["approxkl"].requires_grad
    loss.backward()
    # d(-A*ratio)/dlogp = -A*ratio on unclipped tokens, 0 on clipped ones and padding; /4 tokens.
    close(logp.grad, [[0.0, 1.5 / 4, -0.5 / 4, 0.0, 0.0]], atol=1e-12)


def test_value_loss_hand_example():
    # c = 0.2, old values 0.
    #   v=0.5,  R=1: unclipped 0.25, clipped (0.2-1)^2 = 0.64  -> 0.64 (clipped)
    #   v=0.1,  R=1: inside the clip range, 0.81 both          -> 0.81
    #   v=-0.5, R=0: unclipped 0.25, clipped (-0.2)^2 = 0.04   -> 0.25
    #   padding: garbage
    # loss = 0.5 * (0.64 + 0.81 + 0.25) / 3 = 0.283333..., clipfrac = 1/3
    values = t([[0.5, 0.1, -0.5, 42.0]]).requires_grad_(True)
    old = t([[0.0, 0.0, 0.0, -42.0]])
    returns = t([[1.0, 1.0, 0.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    loss, stats = ppo_value_loss(values, old, returns, mask, cliprange_value=0.2)
    close(loss.detach(), 0.5 * (0.64 + 0.81 + 0.25) / 3, atol=1e-12)
    assert set(stats) == {"clipfrac"}
    close(stats["clipfrac"], 1 / 3, atol=1e-12)
    loss.backward()
    # Gradient 0.5 * 2 (v - R) / 3 on unclipped tokens; 0 on the clipped one and on padding.
    close(values.grad, [[0.0, (0.1 - 1.0) / 3, -0.5 / 3, 0.0]], atol=1e-12)

    # No clipping when values == old values.
    loss0, stats0 = ppo_value_loss(old[:, :3], old[:, :3], returns[:, :3], mask[:, :3], 0.2)
    close(loss0, 0.5 * (1 + 1 + 0) / 3, atol=1e-12)
    assert stats0["clipfrac"].item() == 0.0


# ---------------------------------------------------------------------------
# KL controllers
# ---------------------------------------------------------------------------


def test_adaptive_kl_controller_moves_toward_target():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL above target: error clipped to +0.2 -> factor 1 + 0.2*256/10000 = 1.00512
    assert ctl.update(12.0, n_steps=256) == pytest.approx(0.1 * 1.00512, abs=1e-15)
    assert ctl.value == pytest.approx(0.100512, abs=1e-15)
    # KL below target: error clipped to -0.2 -> factor 0.99488
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(torch.tensor(3.0), 256)
    assert ctl.value == pytest.approx(0.1 * 0.99488, abs=1e-15)
    assert ctl.value < 0.1
    # Inside the clip: error 6.6/6 - 1 = 0.1 -> factor 1.00256; at target: unchanged.
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(6.6, 256)
    assert ctl.value == pytest.approx(0.1 * 1.00256, abs=1e-15)
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(6.0, 256)
    assert ctl.value == 0.1
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, 0.0, 10000)


def test_fixed_kl_controller_is_constant():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 256) == 0.05
    ctl.update(0.0, 256)
    assert ctl.value == 0.05
    with pytest.raises(ValueError):
        FixedKLController(-1.0)
