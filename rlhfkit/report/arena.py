"""The numbers of a model-vs-baseline comparison and of a reward model's honest accuracy: pure maths, no models.

* `pairwise_outcomes`, `win_rate`, `bootstrap_interval`: per prompt, 1 if the model's answer scores above the
  baseline's, 0.5 for a tie, 0 below; their mean; a seeded percentile bootstrap interval over prompts (Efron and
  Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13).
* `length_controlled_win_rate`: the win rate the judge would give if both answers had the same length, in the spirit
  of AlpacaEval 2.0 (Dubois et al. 2024, "Length-Controlled AlpacaEval", arXiv:2404.04475), fitted with statsmodels.
* `length_split_accuracy`: a reward model's accuracy on preference pairs, split by whether the chosen answer is the
  longer or the shorter one, and the accuracy of the rule "the shorter answer wins" on the same pairs.
* `accuracy_interval`, `paired_accuracy_test`: held-out accuracy under a verifier with its Wilson 95% interval
  (Wilson 1927; statsmodels), and the exact McNemar test of a model against a baseline on the same prompts
  (McNemar 1947: a two-sided binomial test on the prompts where exactly one of the two is right).
* `distinct_n`: share of distinct word n-grams in an answer (Li et al. 2016, "A Diversity-Promoting Objective
  Function for Neural Conversation Models"), a repetition measure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def pairwise_outcomes(model_scores: Sequence[float], baseline_scores: Sequence[float]) -> np.ndarray:
    """Per prompt: 1.0 where the model's score is above the baseline's, 0.5 where equal, 0.0 below.

    Both sequences hold one judge score per prompt, in the same prompt order; shape (n,) each.
    Returns a float array of shape (n,). Raises `ValueError` if the lengths differ, n is 0 or a score is NaN.
    """
    model, baseline = np.asarray(model_scores, dtype=float), np.asarray(baseline_scores, dtype=float)
    if model.shape != baseline.shape or model.ndim != 1:
        raise ValueError(f"need two 1-d score lists of the same length, got shapes {model.shape} and {baseline.shape}")
    if not len(model):
        raise ValueError("no scores to compare")
    if np.isnan(model).any() or np.isnan(baseline).any():
        raise ValueError("a score is NaN; the judge failed on some answer")
    return np.where(model > baseline, 1.0, np.where(model == baseline, 0.5, 0.0))


def win_rate(outcomes: Sequence[float]) -> float:
    """Mean of per-prompt outcomes (1 win, 0.5 tie, 0 loss): the share of prompts won, ties counted as half.

    Raises `ValueError` if `outcomes` is empty.
    """
    outcomes = np.asarray(outcomes, dtype=float)
    if not len(outcomes):
        raise ValueError("no outcomes")
    return float(outcomes.mean())


def bootstrap_interval(values: Sequence[float], level: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling the n values with replacement).

    `values` has shape (n,), e.g. per-prompt outcomes; `level` 0.95 gives the 2.5th and 97.5th percentiles of
    `n_resamples` resampled means, drawn with numpy's generator seeded with `seed` (the same inputs give the same
    interval). All values equal (e.g. every prompt won) gives the degenerate interval (v, v).
    Returns `(low, high)`. Raises `ValueError` for empty `values`, `level` outside (0, 1) or `n_resamples` < 1.
    """
    values = np.asarray(values, dtype=float)
    if not len(values):
        raise ValueError("no values to resample")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def length_controlled_win_rate(outcomes: Sequence[float], model_lengths: Sequence[float],
                               baseline_lengths: Sequence[float]) -> dict:
    """The win rate the judge would give at equal answer lengths (AlpacaEval 2.0's length control, simplified).

    Fits the logistic regression (a GLM, binomial family, logit link, statsmodels)

        P(model beats baseline on prompt i) = sigmoid(a + b * d_i / std(d)),   d_i = model - baseline length

    to the outcomes (1 / 0.5 / 0; a tie is a half win, which the binomial GLM takes as a proportion) and predicts
    at d = 0: sigmoid(a). Simplifications of AlpacaEval 2.0 (Dubois et al. 2024, eq. 2): it also fits
    per-instruction difficulty terms across many models, which one model, one baseline and one answer each per
    prompt cannot identify, so this fit keeps the intercept and the length slope only; and it scales the length
    difference with tanh(d / std) to bound a GPT-4 judge's length effect, while a Bradley-Terry reward model whose
    score grows linearly with length has a win logit linear in d, which the standardized term removes without
    bias (with tanh, a judge that rewards length only still got 0.62 instead of 0.5 in this toolkit's tests).
    Lengths are in any unit (tokens here), shape (n,) each, in the outcomes' prompt order.

    Returns `{"lc_win_rate": float, "length_slope": b, "separated": bool}`. When every outcome is the same, or all
    length differences are 0, there is nothing to regress and `lc_win_rate` is the raw win rate (slope 0).
    `separated` is True when length alone separates wins from losses (statsmodels' perfect-separation warning):
    the fit then says the judge's verdicts are explained by length, and `lc_win_rate` is only indicative.
    Raises `ValueError` if the three sequences differ in length or are empty.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    y = np.asarray(outcomes, dtype=float)
    diff = np.asarray(model_lengths, dtype=float) - np.asarray(baseline_lengths, dtype=float)
    if y.shape != diff.shape or y.ndim != 1 or not len(y):
        raise ValueError(f"need outcomes and lengths of one equal, non-zero length, got {y.shape} and {diff.shape}")
    raw = float(y.mean())
    if np.all(y == y[0]) or not diff.std() > 0:
        return {"lc_win_rate": raw, "length_slope": 0.0, "separated": False}
    x = sm.add_constant(diff / diff.std(), has_constant="add")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    separated = any(issubclass(w.category, PerfectSeparationWarning) for w in caught)
    intercept, slope = (float(p) for p in fit.params)
    return {"lc_win_rate": 1 / (1 + math.exp(-intercept)), "length_slope": slope, "separated": separated}


def compare_to_baseline(model_scores: Sequence[float], baseline_scores: Sequence[float],
                        model_lengths: Sequence[float], baseline_lengths: Sequence[float], seed: int = 0) -> dict:
    """Win rate (ties 0.5), its 95% bootstrap interval and the length-controlled win rate of a model vs a baseline.

    All four sequences have shape (n,), one entry per prompt in the same order (scores from one judge, lengths in
    tokens). Returns `{"n", "wins", "ties", "losses", "win_rate", "win_rate_ci": [low, high], "lc_win_rate",
    "length_slope", "lc_separated"}`. Raises `ValueError` as `pairwise_outcomes` does.
    """
    outcomes = pairwise_outcomes(model_scores, baseline_scores)
    low, high = bootstrap_interval(outcomes, seed=seed)
    lc = length_controlled_win_rate(outcomes, model_lengths, baseline_lengths)
    return {"n": int(len(outcomes)), "wins": int((outcomes == 1).sum()), "ties": int((outcomes == 0.5).sum()),
            "losses": int((outcomes == 0).sum()), "win_rate": win_rate(outcomes), "win_rate_ci": [low, high],
            "lc_win_rate": lc["lc_win_rate"], "length_slope": lc["length_slope"], "lc_separated": lc["separated"]}


def accuracy_interval(correct: Sequence[bool]) -> dict:
    """Accuracy of (n,) right/wrong outcomes with its Wilson 95% interval.

    Returns `{"n", "correct", "accuracy", "accuracy_ci": [low, high]}`. Raises `ValueError` if `correct` is empty.
    """
    from statsmodels.stats.proportion import proportion_confint  # statsmodels is slow to import

    n, k = len(correct), int(sum(bool(c) for c in correct))
    if not n:
        raise ValueError("no outcomes")
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return {"n": n, "correct": k, "accuracy": k / n, "accuracy_ci": [float(low), float(high)]}


def paired_accuracy_test(model_correct: Sequence[bool], baseline_correct: Sequence[bool]) -> dict:
    """Exact McNemar test of a model against a baseline, both (n,) right/wrong outcomes on the same prompts.

    Returns `{"n", "difference" (model minus baseline accuracy), "model_only" (prompts only the model gets right),
    "baseline_only", "p_value" (two-sided; 1.0 when the two never disagree)}`. Raises `ValueError` for lists of
    different or zero length.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if len(model_correct) != len(baseline_correct) or not len(model_correct):
        raise ValueError(f"need two outcome lists of the same non-zero length, got {len(model_correct)} and "
                         f"{len(baseline_correct)}")
    m, b = [bool(x) for x in model_correct], [bool(x) for x in baseline_correct]
    model_only = sum(x and not y for x, y in zip(m, b))
    baseline_only = sum(y and not x for x, y in zip(m, b))
    both = sum(x and y for x, y in zip(m, b))
    neither = len(m) - model_only - baseline_only - both
    p_value = float(mcnemar([[both, model_only], [baseline_only, neither]], exact=True).pvalue)
    return {"n": len(m), "difference": (model_only - baseline_only) / len(m), "model_only": model_only,
            "baseline_only": baseline_only, "p_value": min(1.0, p_value)}


def length_split_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float],
                          chosen_lengths: Sequence[float], rejected_lengths: Sequence[float],
                          matched_within: int = 3) -> dict:
    """A scorer's accuracy on preference pairs, overall and split by which answer is longer; and the length rule.

    Inputs have shape (n,), one entry per pair: the scorer's score of the chosen and of the rejected answer, and the
    two answers' lengths (tokens). A pair is right when chosen scores above rejected (a tie counts 0.5).
    Returns:
        n: pairs; accuracy: share right over all n pairs;
        n_chosen_longer / accuracy_chosen_longer: the pairs whose chosen answer is longer, and the accuracy on them;
        n_chosen_shorter / accuracy_chosen_shorter: the same for a shorter chosen answer;
        n_equal_length: pairs of equal length (in neither split);
        length_balanced_accuracy: mean of the two split accuracies (what a judge blind to length would get where
            length points either way; 0.5 for any pure length rule);
        shorter_wins_accuracy / longer_wins_accuracy: accuracy of the rule "the shorter (longer) answer wins" on all n
            pairs (equal lengths: 0.5);
        n_length_matched / accuracy_length_matched: the pairs whose answers differ by at most `matched_within`
            tokens, and the accuracy on them (what length cannot fake);
        picks_shorter: share of pairs of different lengths where the scorer ranks the shorter answer higher.
        length_correlation: Pearson correlation of the score with the answer length over all 2n answers (None when
            the scores or the lengths are constant): how much of what the scorer says is length.
    A split with no pairs has accuracy None (and the balanced accuracy is None). Raises `ValueError` if the inputs
    differ in length or are empty.
    """
    right = pairwise_outcomes(chosen_scores, rejected_scores)
    chosen_len, rejected_len = np.asarray(chosen_lengths, float), np.asarray(rejected_lengths, float)
    if chosen_len.shape != right.shape or rejected_len.shape != right.shape:
        raise ValueError("scores and lengths must have one entry per pair")
    longer, shorter = chosen_len > rejected_len, chosen_len < rejected_len
    mean_or_none = lambda v: float(v.mean()) if len(v) else None  # noqa: E731
    acc_longer, acc_shorter = mean_or_none(right[longer]), mean_or_none(right[shorter])
    rule = np.where(shorter, 1.0, np.where(longer, 0.0, 0.5))
    differ = longer | shorter
    matched = np.abs(chosen_len - rejected_len) <= matched_within
    picks_shorter = np.where(shorter, right, 1 - right)[differ]
    return {"n": int(len(right)), "accuracy": float(right.mean()),
            "n_chosen_longer": int(longer.sum()), "accuracy_chosen_longer": acc_longer,
            "n_chosen_shorter": int(shorter.sum()), "accuracy_chosen_shorter": acc_shorter,
            "n_equal_length": int((~differ).sum()),
            "length_balanced_accuracy": None if acc_longer is None or acc_shorter is None
            else (acc_longer + acc_shorter) / 2,
            "shorter_wins_accuracy": float(rule.mean()), "longer_wins_accuracy": float(1 - rule.mean()),
            "n_length_matched": int(matched.sum()), "accuracy_length_matched": mean_or_none(right[matched]),
            "matched_within": matched_within, "picks_shorter": mean_or_none(picks_shorter),
            "length_correlation": pearson(np.concatenate([chosen_scores, rejected_scores]),
                                          np.concatenate([chosen_len, rejected_len]))}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equally long sequences, or None when either is constant (or has < 2 values)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or not x.std() > 0 or not y.std() > 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def read_length_split(result: dict) -> str:
    """One plain-English line on a `length_split_accuracy` result: is the scorer better than answer length?

    Compares the accuracy with the better of the two length rules ("shorter wins", "longer wins") and the
    length-balanced accuracy with chance, each against twice the binomial standard error sqrt(p (1 - p) / n). A gap
    within that noise is reported as too few pairs to tell, with the number of pairs that would tell a gap that size.
    """
    n, acc = result["n"], result["accuracy"]
    if n < 20:
        return f"too few pairs ({n}) to tell the model from answer length; evaluate on at least a few hundred"
    rule = max(result["shorter_wins_accuracy"], 1 - result["shorter_wins_accuracy"])
    which = "shorter" if result["shorter_wins_accuracy"] >= 0.5 else "longer"
    variance = max(acc * (1 - acc), 1e-9)
    if acc <= rule:
        return (f"the model is no better than answer length: the rule 'the {which} answer wins' scores {rule:.3f} "
                f"against its {acc:.3f}")
    if acc - rule <= 2 * math.sqrt(variance / n):
        needed = math.ceil(4 * variance / (acc - rule) ** 2)
        return (f"too few pairs ({n}) to tell the model from answer length: it scores {acc:.3f} against {rule:.3f} "
                f"for the rule 'the {which} answer wins', a gap within noise; about {needed} pairs would tell a gap "
                f"that size")
    balanced = result["length_balanced_accuracy"]
    if balanced is not None:
        n_split = min(result["n_chosen_longer"], result["n_chosen_shorter"])
        se_balanced = math.sqrt(0.25 / max(n_split, 1))
        if balanced - 0.5 <= 2 * se_balanced:
            return (f"the model beats the length rule, but its length-balanced accuracy {balanced:.3f} is within "
                    f"noise of chance: it is right mostly where length agrees with the label")
    return f"the model ranks answers by more than their length (length-balanced accuracy {balanced:.3f})" \
        if balanced is not None else "the model beats the length rule (no pairs to split by length)"


def distinct_n(text: str, n: int = 2) -> float | None:
    """Distinct-n of one answer: unique word n-grams / all word n-grams (words split on whitespace).

    1.0: no n-gram repeats; an answer looping on one phrase goes toward 0. Returns None for an answer with fewer
    than n words (nothing to count). Raises `ValueError` if n < 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None
