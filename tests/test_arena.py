"""rlhfkit/report/arena.py: win rate, bootstrap interval, length-controlled win rate, length-split accuracy, distinct-n,
checked against hand-computed values.
"""

import numpy as np
import pytest

from rlhfkit.report.arena import (
    bootstrap_interval,
    compare_to_baseline,
    distinct_n,
    length_controlled_win_rate,
    length_split_accuracy,
    pairwise_outcomes,
    read_length_split,
    win_rate,
)


def test_all_wins_give_one_and_a_degenerate_interval():
    result = compare_to_baseline([2, 3, 4, 5], [1, 1, 1, 1], [5, 5, 5, 5], [5, 5, 5, 5])
    assert result["win_rate"] == 1.0 and result["win_rate_ci"] == [1.0, 1.0]
    assert (result["wins"], result["ties"], result["losses"]) == (4, 0, 0)
    assert result["lc_win_rate"] == 1.0  # nothing to regress: every outcome is a win


def test_ties_count_half():
    assert pairwise_outcomes([1, 1, 1], [1, 1, 1]).tolist() == [0.5, 0.5, 0.5]
    result = compare_to_baseline([1.0] * 10, [1.0] * 10, range(10), range(10))
    assert result["win_rate"] == 0.5 and result["ties"] == 10 and result["win_rate_ci"] == [0.5, 0.5]


def test_mixed_outcomes_and_interval():
    outcomes = pairwise_outcomes([3, 1, 2, 0], [1, 2, 2, 5])  # win, loss, tie, loss
    assert outcomes.tolist() == [1.0, 0.0, 0.5, 0.0]
    assert win_rate(outcomes) == pytest.approx(1.5 / 4)
    values = np.r_[np.ones(60), np.zeros(40)]  # p = 0.6, n = 100: normal-approximation 95% CI 0.6 +- 0.096
    low, high = bootstrap_interval(values, seed=1)
    assert low == pytest.approx(0.504, abs=0.03) and high == pytest.approx(0.696, abs=0.03)
    assert bootstrap_interval(values, seed=1) == (low, high)  # seeded: reproducible


def test_input_errors():
    with pytest.raises(ValueError, match="same length"):
        pairwise_outcomes([1, 2], [1])
    with pytest.raises(ValueError, match="NaN"):
        pairwise_outcomes([float("nan")], [1])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1, 0], level=1.5)


def test_length_only_judge_is_near_half_after_length_control():
    rng = np.random.default_rng(0)
    baseline_len = rng.integers(10, 60, 300)
    model_len = baseline_len + rng.integers(-10, 40, 300)  # the model is usually longer, no better otherwise
    judge = lambda length: length + rng.normal(0, 10, len(length))  # noqa: E731  rewards length only
    result = compare_to_baseline(judge(model_len), judge(baseline_len), model_len, baseline_len)
    assert result["win_rate"] > 0.7  # the raw win rate rewards the longer answers
    assert abs(result["lc_win_rate"] - 0.5) < 0.1 and result["length_slope"] > 1


def test_length_control_keeps_a_real_quality_gap():
    rng = np.random.default_rng(1)
    lengths = rng.integers(10, 60, 300)
    model, baseline = rng.normal(1.0, 1, 300), rng.normal(0, 1, 300)  # better, and lengths equal on average
    result = length_controlled_win_rate(pairwise_outcomes(model, baseline), lengths, rng.permutation(lengths))
    assert result["lc_win_rate"] > 0.65 and abs(result["length_slope"]) < 0.5


def test_exact_length_judge_is_flagged_as_separated():
    baseline_len = np.array([10, 20, 30, 40, 50, 60])
    model_len = np.array([15, 25, 35, 45, 40, 60])  # longer 4 times, shorter once, equal once (a tie)
    outcomes = pairwise_outcomes(model_len, baseline_len)
    result = length_controlled_win_rate(outcomes, model_len, baseline_len)
    assert result["separated"] and result["lc_win_rate"] == pytest.approx(0.5, abs=1e-3)


def test_shorter_wins_scorer_splits_exactly():
    chosen_len, rejected_len = [5, 8, 20, 30, 7], [10, 12, 4, 9, 7]  # chosen shorter twice, longer twice, equal once
    score = lambda lengths: [-x for x in lengths]  # noqa: E731  "shorter wins"
    result = length_split_accuracy(score(chosen_len), score(rejected_len), chosen_len, rejected_len)
    assert result["accuracy_chosen_shorter"] == 1.0 and result["accuracy_chosen_longer"] == 0.0
    assert result["length_balanced_accuracy"] == 0.5 and result["picks_shorter"] == 1.0
    assert (result["n_chosen_shorter"], result["n_chosen_longer"], result["n_equal_length"]) == (2, 2, 1)
    assert result["accuracy"] == pytest.approx((2 + 0.5) / 5) == result["shorter_wins_accuracy"]


def test_reading_of_the_length_split():
    n = 200
    chosen_len = [10] * 130 + [30] * 70  # chosen shorter in 65% of pairs, as in hh-rlhf harmless
    rejected_len = [30] * 130 + [10] * 70
    shorter = length_split_accuracy([-x for x in chosen_len], [-x for x in rejected_len], chosen_len, rejected_len)
    assert shorter["shorter_wins_accuracy"] == 0.65 and shorter["accuracy"] == 0.65
    assert "no better than answer length" in read_length_split(shorter)
    good = length_split_accuracy([1.0] * n, [0.0] * n, chosen_len, rejected_len)  # always right
    assert good["length_balanced_accuracy"] == 1.0 and "more than their length" in read_length_split(good)
    assert "too few pairs" in read_length_split(length_split_accuracy([1], [0], [1], [2]))


def test_a_gap_within_noise_is_too_few_pairs_not_no_better_than_length():
    # 60 pairs, the model right on 35.5 (0.592), the best length rule on 30.5 (0.508): a gap of 0.083 with a standard
    # error of 0.063, so the pairs cannot tell; 4 p (1 - p) / gap^2 = 4 * 0.592 * 0.408 / 0.0833^2 = 139.2 -> 140
    chosen_len = [10] * 30 + [30] * 29 + [20]  # chosen shorter in 30 pairs, longer in 29, equal in 1
    rejected_len = [30] * 30 + [10] * 29 + [20]
    right = [1] * 20 + [0] * 10 + [1] * 15 + [0] * 14 + [0.5]  # 35.5 right (ties count half)
    chosen = [float(r) for r in right]
    rejected = [1 - c if c != 0.5 else 0.5 for c in chosen]
    result = length_split_accuracy(chosen, rejected, chosen_len, rejected_len)
    assert result["accuracy"] == pytest.approx(35.5 / 60)
    assert result["shorter_wins_accuracy"] == pytest.approx(30.5 / 60)
    reading = read_length_split(result)
    assert "too few pairs (60)" in reading and "about 140 pairs" in reading and "no better" not in reading


def test_length_correlation_of_a_length_scorer_is_one():
    lengths_c, lengths_r = [5, 8, 20, 30], [10, 12, 4, 9]
    result = length_split_accuracy([2 * x + 1 for x in lengths_c], [2 * x + 1 for x in lengths_r], lengths_c, lengths_r)
    assert result["length_correlation"] == pytest.approx(1.0)
    constant = length_split_accuracy([1.0] * 4, [1.0] * 4, lengths_c, lengths_r)
    assert constant["length_correlation"] is None


def test_distinct_n():
    assert distinct_n("the cat sat on the mat") == 1.0
    assert distinct_n("go go go go go") == pytest.approx(1 / 4)
    assert distinct_n("one") is None and distinct_n("a b c a b c", n=3) == pytest.approx(3 / 4)


def test_length_rules_and_length_matched_accuracy_by_hand():
    # 5 pairs: lengths (chosen, rejected); the scorer is right on pairs 0, 1, 3 and wrong on 2, 4 (a tie counts half).
    chosen_len, rejected_len = [10, 10, 10, 20, 5], [12, 30, 10, 4, 9]
    chosen, rejected = [1.0, 1.0, 0.0, 2.0, 0.5], [0.0, 0.0, 0.0, 1.0, 0.9]
    result = length_split_accuracy(chosen, rejected, chosen_len, rejected_len)
    assert result["accuracy"] == pytest.approx((1 + 1 + 0.5 + 1 + 0) / 5)
    # shorter chosen in pairs 0, 1, 4; longer in 3; equal in 2 (half to each rule)
    assert result["shorter_wins_accuracy"] == pytest.approx(3.5 / 5)
    assert result["longer_wins_accuracy"] == pytest.approx(1.5 / 5)
    # within 3 tokens: pair 0 (2 apart), pair 2 (0 apart); pair 4 is 4 apart
    assert result["n_length_matched"] == 2 and result["accuracy_length_matched"] == pytest.approx(0.75)
    wider = length_split_accuracy(chosen, rejected, chosen_len, rejected_len, matched_within=4)
    assert wider["n_length_matched"] == 3 and wider["accuracy_length_matched"] == pytest.approx(1.5 / 3)
    none = length_split_accuracy([1.0], [0.0], [1], [20])
    assert none["n_length_matched"] == 0 and none["accuracy_length_matched"] is None
