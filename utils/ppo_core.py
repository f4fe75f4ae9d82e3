"""Core PPO maths for RLHF on language models: pure tensor functions, no models.

This module can be read on its own as a template for PPO on language models.
It contains only the arithmetic that runs after a rollout (the sampled
responses and their log-probabilities, values and scores):

1. Masks: which response positions are real tokens (:func:`response_mask`,
   :func:`truncate_after_stop`, :func:`sequence_lengths`,
   :func:`last_token_index`).
2. Score and reward shaping: missing-EOS penalty and clipping
   (:func:`shape_scores`), running normalisation
   (:func:`update_running_moments`, :func:`normalize_with_moments`), a
   per-token KL penalty plus the score on the last real token
   (:func:`kl_estimate`, :func:`compute_rewards`).
3. Advantages: Generalized Advantage Estimation (:func:`compute_gae`),
   critic-free REINFORCE++ returns (:func:`compute_reinforce_pp`) and
   masked whitening (:func:`masked_whiten`).
4. Losses: the clipped PPO surrogate and the clipped value loss
   (:func:`ppo_policy_loss`, :func:`ppo_value_loss`).
5. KL coefficient controllers (:class:`AdaptiveKLController`,
   :class:`FixedKLController`).

Conventions used throughout
---------------------------
* ``B`` is the batch size (number of responses) and ``T`` the response length
  (number of generated positions, padding included). Only response positions
  appear here; prompt tokens are never part of these tensors.
* A *mask* is a ``(B, T)`` tensor, either bool or float holding exactly 0/1.
  True (1) marks a real response token: every token up to and including the
  first EOS. False (0) marks padding after it. Masks are *prefixes*: within a
  row, real tokens come first and padding follows.
* Log-probabilities are natural logarithms (nats). ``logprobs[b, t]`` is
  ``log pi(token_t | prompt, tokens_<t)`` for the token that was sampled.
* ``values[b, t]`` is the critic's estimate of the return from position ``t``
  onward, computed from the state *before* token ``t`` is emitted.
* Values stored at padding positions are never read, so they may hold anything
  (the old TRL code put 1.0 there; a model forward puts arbitrary numbers
  there). All functions select with :func:`torch.where` rather than
  multiplying by the mask, so even ``inf``/``nan`` at padding do not leak into
  results or gradients.
* The rollout functions (:func:`compute_rewards`, :func:`compute_gae`,
  :func:`masked_whiten`) do not detach their inputs. Call them under
  :func:`torch.no_grad` or pass detached tensors, as is usual for rollout data.

References
----------
* PPO: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy
  Optimization Algorithms", arXiv:1707.06347.
* GAE: Schulman, Moritz, Levine, Jordan, Abbeel (2016), "High-Dimensional
  Continuous Control Using Generalized Advantage Estimation", arXiv:1506.02438.
* KL estimators k1/k2/k3: Schulman (2020), blog post "Approximating KL
  Divergence", http://joschu.net/blog/kl-approx.html.
* REINFORCE++: Hu (2025), "REINFORCE++: A Simple and Efficient Approach for
  Aligning Large Language Models", arXiv:2501.03262.
* Per-token KL penalty and adaptive KL coefficient: Ziegler, Stiennon, Wu,
  Brown, Radford, Amodei, Christiano, Irving (2019), "Fine-Tuning Language
  Models from Human Preferences", arXiv:1909.08593.

Differences from TRL's last PPOTrainer (``trl.experimental.ppo``, since
removed; TRL 1.16 has no PPO): the score goes on the last real token instead of the slot after
it; masks are built from token positions, so ``pad_token_id == eos_token_id``
works; the KL estimator ``"k2"`` is allowed; and ``approxkl``/``ratio_mean``
are masked means, so padding does not pull them toward "no change".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "response_mask",
    "truncate_after_stop",
    "shape_scores",
    "update_running_moments",
    "normalize_with_moments",
    "sequence_lengths",
    "last_token_index",
    "kl_estimate",
    "compute_rewards",
    "compute_gae",
    "compute_reinforce_pp",
    "ppo_policy_loss",
    "ppo_value_loss",
    "AdaptiveKLController",
    "FixedKLController",
    "KL_ESTIMATORS",
]

#: Names accepted by :func:`kl_estimate`.
KL_ESTIMATORS = ("k1", "k2", "k3")


# ---------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------


def _as_bool_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Return ``mask`` as a bool tensor after checking it has the shape of ``like``.

    Float masks are converted with ``mask != 0``, so they must hold 0/1 only.
    """
    if mask.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but values have shape {tuple(like.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless all keyword tensors share one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def _check_2d(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(tensor.shape)}")


def _check_prefix_mask(mask: torch.Tensor) -> None:
    """Raise ValueError unless every row of the bool mask is True...True False...False.

    A True after a False would mean a "hole" in the response; GAE and score
    placement assume the episode ends at the last real token, so holes are bugs.
    """
    if mask.shape[-1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError(
            "mask must be a prefix mask (real tokens first, then padding); found a real token after padding"
        )


# ---------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True.

    Args:
        values: Float tensor of any shape, typically ``(B, T)``.
        mask: Bool or {0, 1} float tensor with the same shape as ``values``.
        dim: ``None`` averages over all masked elements and returns a scalar
            (a "token mean": every real token has equal weight, so long
            responses weigh more than short ones). An integer averages along
            that dimension only, e.g. ``dim=1`` on ``(B, T)`` gives the
            per-sequence mean, shape ``(B,)``.

    Returns:
        Scalar tensor (``dim=None``) or ``values`` reduced along ``dim``.
        Same units as ``values``. If the mask selects nothing (for the
        whole tensor, or for one slice when ``dim`` is given) the result
        there is 0, not NaN, so an all-padding batch adds zero loss and
        zero gradient.

    Raises:
        ValueError: if ``mask`` and ``values`` differ in shape.

    Values at masked-out positions never influence the result, even if they
    are ``inf`` or ``nan``: they are replaced by 0 with :func:`torch.where`
    before summing.
    """
    mask = _as_bool_mask(mask, values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=dim)
    count = mask.sum(dim=dim).clamp(min=1).to(total.dtype)
    return total / count


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over all positions where ``mask`` is True.

    Args:
        values: Float tensor of any shape, typically ``(B, T)``.
        mask: Bool or {0, 1} float tensor with the same shape as ``values``.
        unbiased: If True, divide the sum of squared deviations by ``n - 1``
            (Bessel's correction), otherwise by ``n``, where ``n`` is the
            number of masked elements. TRL's whitening used the unbiased form.

    Returns:
        Scalar tensor in the squared units of ``values``.

    Raises:
        ValueError: if the shapes differ, or if ``unbiased`` is True and the
            mask selects fewer than 2 elements (the variance is undefined).
            With ``unbiased=False`` an empty mask gives 0.

    Note: checking the element count moves one number from the device to the
    host when ``unbiased`` is True.
    """
    mask = _as_bool_mask(mask, values)
    mean = masked_mean(values, mask)
    centered = torch.where(mask, values - mean, torch.zeros_like(values))
    count = mask.sum()
    variance = (centered**2).sum() / count.clamp(min=1).to(values.dtype)
    if unbiased:
        n = int(count.item())
        if n < 2:
            raise ValueError(f"unbiased variance needs at least 2 masked elements, mask selects {n}")
        variance = variance * (n / (n - 1))
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Standardise ``values`` using the mean and variance of the masked positions only.

    ``whitened = (values - mean) / sqrt(var + eps)`` where ``mean`` and the
    unbiased ``var`` are taken over the masked elements of the whole tensor
    (all rows together, not per row). Used on advantages before the policy
    loss (a standard PPO implementation detail) and optionally on rewards.

    Args:
        values: Float tensor, typically ``(B, T)`` advantages or rewards.
        mask: Bool or {0, 1} float tensor with the same shape.
        shift_mean: If True the result has mean 0 on masked positions. If False
            the mean is added back, so only the scale changes (TRL used this
            for ``whiten_rewards`` so that the sign of rewards is kept).
        eps: Added to the variance before the square root, to avoid division
            by zero when all masked values are equal.

    Returns:
        Tensor of the same shape, dimensionless. On masked positions it has
        (unbiased) variance ~1 and mean 0 (or the original mean if
        ``shift_mean=False``). **Positions outside the mask are set to 0**,
        whatever their input value, so padded values never affect the
        statistics nor the output.

    Raises:
        ValueError: if the shapes differ or the mask selects fewer than 2
            elements (see :func:`masked_var`).
    """
    mask = _as_bool_mask(mask, values)
    mean = masked_mean(values, mask)
    var = masked_var(values, mask, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


# ---------------------------------------------------------------------------
# Response masks
# ---------------------------------------------------------------------------


def response_mask(response_ids: torch.Tensor, eos_token_id: Union[int, Sequence[int]]) -> torch.Tensor:
    """Mark the real tokens of each generated response: up to and including the first EOS.

    The mask is built from token *positions* (count of EOS tokens seen so far),
    never from ``response_ids != pad_token_id``. It is therefore correct when
    the tokenizer pads with the EOS token (``pad == eos``, common for Llama /
    GPT-2 style tokenizers): the first EOS is kept as a real token and every
    later token, EOS or not, is padding. The old TRL code used ``!= pad`` and
    lost the real EOS in that case.

    Args:
        response_ids: Long tensor ``(B, T)`` of generated token ids (prompt
            excluded).
        eos_token_id: One stop token id, or a sequence of ids any of which
            ends a response.

    Returns:
        Bool tensor ``(B, T)``. ``mask[b, t]`` is True iff no EOS occurs in
        ``response_ids[b, :t]``. Rows that contain no EOS (truncated at the
        length limit) are all True. With ``T >= 1`` every row has at least
        one True, because position 0 is always real.

    Raises:
        ValueError: if ``response_ids`` is not 2-D or ``eos_token_id`` is None
            or empty.
    """
    _check_2d("response_ids", response_ids)
    if eos_token_id is None:
        raise ValueError("eos_token_id is None; a stop token id is needed to build the response mask")
    if isinstance(eos_token_id, int):
        is_eos = response_ids == eos_token_id
    else:
        eos_ids = torch.as_tensor(list(eos_token_id), dtype=response_ids.dtype, device=response_ids.device)
        if eos_ids.numel() == 0:
            raise ValueError("eos_token_id is an empty sequence")
        is_eos = torch.isin(response_ids, eos_ids)
    # Number of EOS tokens strictly before position t (inclusive cumsum minus self).
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return eos_before == 0


def truncate_after_stop(
    responses: torch.Tensor, stop_ids: Sequence[int] | None, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut sampled responses after their first stop token.

    Args:
        responses: Long tensor ``(B, T)`` of generated token ids (prompt excluded).
        stop_ids: Token ids that end a response (e.g. ``[eos_token_id]``), or
            None / empty: every token is real (fixed-length responses).
        pad_token_id: Written over every token after the first stop token.

    Returns:
        ``(responses, mask, ended)``: the responses with the tokens after the
        first stop token set to ``pad_token_id``; the ``(B, T)`` bool mask of
        :func:`response_mask` (up to and including the first stop token, from
        positions, so ``pad == eos`` works); and ``(B,)`` bool, True where the
        response contains a stop token (False: cut at the length limit). With
        no ``stop_ids`` every token is real and every response counts as ended.
    """
    _check_2d("responses", responses)
    if not stop_ids:
        ones = torch.ones_like(responses, dtype=torch.bool)
        return responses, ones, ones[:, 0].clone()
    mask = response_mask(responses, list(stop_ids))
    is_stop = torch.isin(responses, torch.tensor(list(stop_ids), dtype=responses.dtype, device=responses.device))
    ended = (is_stop & mask).any(1)
    return torch.where(mask, responses, torch.full_like(responses, pad_token_id)), mask, ended


def sequence_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Number of real tokens in each row.

    Args:
        mask: Bool or {0, 1} float tensor ``(B, T)``.

    Returns:
        Long tensor ``(B,)``; for a response mask this is the response length
        including its EOS token.

    Raises:
        ValueError: if ``mask`` is not 2-D.
    """
    _check_2d("mask", mask)
    return _as_bool_mask(mask, mask).sum(dim=1).long()


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token in each row.

    For a response mask this is the index of the first EOS, or ``T - 1`` for a
    row that was truncated without EOS. This is where the sequence-level score
    belongs (see :func:`compute_rewards`).

    Args:
        mask: Bool or {0, 1} float tensor ``(B, T)``. Works for any mask (the
            largest True index is returned), not only prefix masks.

    Returns:
        Long tensor ``(B,)`` with values in ``[0, T - 1]``. **A row with no
        real token gives 0**, the same as a row whose only real token is at
        position 0; use :func:`sequence_lengths` to tell the two apart.

    Raises:
        ValueError: if ``mask`` is not 2-D.
    """
    _check_2d("mask", mask)
    mask = _as_bool_mask(mask, mask)
    batch, length = mask.shape
    if length == 0:
        return torch.zeros(batch, dtype=torch.long, device=mask.device)
    positions = torch.arange(length, device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=1)
    return last.clamp(min=0).long()


# ---------------------------------------------------------------------------
# Score shaping
# ---------------------------------------------------------------------------


def shape_scores(
    scores: torch.Tensor, ended: torch.Tensor, missing_eos_penalty: float | None = None,
    reward_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Missing-EOS penalty, then clipping, of the sequence-level scores.

    ``penalised = scores - missing_eos_penalty * (not ended)`` (TRL's
    ``missing_eos_penalty``; Huang et al. 2024, arXiv:2403.17031, detail on
    responses cut without EOS), then ``shaped = clip(penalised, -c, c)`` with
    ``c = reward_clip`` (safe-rlhf 50, OpenRLHF 10).

    Args:
        scores: Float tensor ``(B,)`` of scores (reward units).
        ended: Bool tensor ``(B,)``: True where the response ended with a stop
            token (from :func:`truncate_after_stop`).
        missing_eos_penalty: Subtracted from responses that did not end;
            None or 0: no penalty.
        reward_clip: ``c > 0``; None: no clipping.

    Returns:
        ``(penalised, shaped)``, both ``(B,)`` in reward units: the score
        after the penalty (what is logged as ``objective/scores``) and after
        clipping as well (what the rewards are built from).

    Raises:
        ValueError: on mismatched shapes or ``reward_clip <= 0``.
    """
    if scores.shape != ended.shape or scores.dim() != 1:
        raise ValueError(f"scores and ended must both be (B,), got {tuple(scores.shape)} and {tuple(ended.shape)}")
    penalised = scores
    if missing_eos_penalty:
        penalised = scores - missing_eos_penalty * (~ended.bool()).to(scores.dtype)
    if reward_clip is None:
        return penalised, penalised
    if reward_clip <= 0:
        raise ValueError(f"reward_clip must be > 0, got {reward_clip}")
    return penalised, penalised.clamp(-reward_clip, reward_clip)


def update_running_moments(stats: dict, values: Sequence[float]) -> dict:
    """Add ``values`` to running moments with Welford's online algorithm.

    Welford (1962), "Note on a method for calculating corrected sums of
    squares and products", Technometrics 4(3); for each value ``x``::

        count += 1;  delta = x - mean;  mean += delta / count;  m2 += delta * (x - mean)

    Args:
        stats: ``{"count": int, "mean": float, "m2": float}`` (m2: the sum of
            squared deviations from the mean); ``{"count": 0, "mean": 0.0,
            "m2": 0.0}`` to start.
        values: Python floats, e.g. one rollout's scores from all processes.

    Returns:
        A new dict of the same form; ``stats`` is not changed.
    """
    count, mean, m2 = int(stats["count"]), float(stats["mean"]), float(stats["m2"])
    for x in values:
        count += 1
        delta = float(x) - mean
        mean += delta / count
        m2 += delta * (float(x) - mean)
    return {"count": count, "mean": mean, "m2": m2}


def normalize_with_moments(scores: torch.Tensor, stats: dict, eps: float = 1e-8) -> torch.Tensor:
    """Standardise scores with running moments: ``(scores - mean) / (std + eps)``.

    ``std = sqrt(m2 / (count - 1))`` is the unbiased standard deviation of
    every value seen so far (``m2 / 1`` while ``count <= 1``); safe-rlhf's
    ``normalize_reward``.

    Args:
        scores: Float tensor of any shape, in reward units.
        stats: Moments from :func:`update_running_moments`.
        eps: Added to the standard deviation.

    Returns:
        Dimensionless tensor of the shape of ``scores``.
    """
    std = math.sqrt(stats["m2"] / max(stats["count"] - 1, 1))
    return (scores - stats["mean"]) / (std + eps)


# ---------------------------------------------------------------------------
# KL penalty and reward shaping
# ---------------------------------------------------------------------------


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the log-probs of sampled tokens.

    With tokens sampled from the policy ``pi`` and ``d = logprobs - ref_logprobs``
    (the log-ratio log pi/pi_ref of the sampled token), the three estimators
    of Schulman (2020), "Approximating KL Divergence", are:

    * ``"k1"``: ``d``. Unbiased, high variance, **can be negative** for a
      single token. This is the classic RLHF penalty (Ziegler et al. 2019) and
      TRL's default.
    * ``"k2"``: ``0.5 * d**2``. Always >= 0, biased, low variance; its
      gradient equals that of the true KL to first order.
    * ``"k3"``: ``(exp(-d) - 1) + d``, i.e. ``(r - 1) - log r`` with
      ``r = pi_ref/pi``. Unbiased and always >= 0 (because ``e^x >= 1 + x``),
      lower variance than k1.

    All three are exactly 0 when ``logprobs == ref_logprobs``.

    Args:
        logprobs: Float tensor, any shape (typically ``(B, T)``), policy
            log-probs of the sampled tokens, in nats.
        ref_logprobs: Same shape, reference-model log-probs of the same tokens.
        kind: One of ``"k1"``, ``"k2"``, ``"k3"``.

    Returns:
        Tensor of the same shape: estimated KL per token, in nats. No masking
        is applied; see :func:`compute_rewards` for that.

    Raises:
        ValueError: for an unknown ``kind`` (the message lists the allowed
            names) or mismatched shapes.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; allowed: {', '.join(KL_ESTIMATORS)}")
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_ratio = logprobs - ref_logprobs  # d = log pi(x) - log pi_ref(x)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    # k3 = (exp(-d) - 1) + d. expm1 computes exp(x) - 1 accurately for small x,
    # avoiding the cancellation of exp(-d) - 1 when the policies are close.
    return torch.expm1(-log_ratio) + log_ratio


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF rewards: a KL penalty on every real token plus the score at the end.

    Following Ziegler et al. (2019), arXiv:1909.08593, eq. (2), the reward of
    token ``t`` in row ``b`` is::

        rewards[b, t] = -kl_coef * kl[b, t]                  (real tokens)
                        + scores[b]   if t == last real token of row b
        rewards[b, t] = 0                                    (padding)

    The score is placed **on the last real token** (the first EOS, or the last
    position of a truncated row), as in OpenRLHF and safe-rlhf. Old TRL put it
    on the slot *after* the last real token (TRL issues #1893, #3750), a
    padding position whose value estimate is computed on garbage input.

    Args:
        scores: Float tensor ``(B,)``: one reward-model score per response
            (after any EOS penalty / clipping / normalisation by the caller).
        logprobs: Float tensor ``(B, T)``, rollout policy log-probs of the
            sampled tokens (nats).
        ref_logprobs: Float tensor ``(B, T)``, reference-model log-probs of the
            same tokens (nats).
        mask: Bool or {0, 1} float prefix mask ``(B, T)`` of real tokens, e.g.
            from :func:`response_mask`.
        kl_coef: Non-negative KL penalty coefficient ``beta`` (reward units per
            nat), e.g. ``controller.value``.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``; see :func:`kl_estimate`.

    Returns:
        ``(rewards, kl)``, both ``(B, T)`` in the dtype of ``logprobs``.
        ``kl`` is the per-token KL estimate (nats), 0 on padding; its masked
        row sum is the usual "objective/kl" metric. ``rewards`` is in reward
        model units, 0 on padding.

    Raises:
        ValueError: on shape mismatches, an unknown estimator, a negative
            ``kl_coef``, a non-prefix mask, or a row with no real token (its
            score would have nowhere to go).
    """
    _check_2d("logprobs", logprobs)
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must have shape (B,) = ({logprobs.shape[0]},), got {tuple(scores.shape)}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    mask = _as_bool_mask(mask, logprobs)
    _check_prefix_mask(mask)
    if bool((sequence_lengths(mask) == 0).any()):
        raise ValueError("every row needs at least one real token to receive its score; found an empty row")

    kl = kl_estimate(logprobs, ref_logprobs, kl_estimator)
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    # Add each row's score at its last real token.
    last = last_token_index(mask)
    rewards = rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))
    return rewards, kl


# ---------------------------------------------------------------------------
# Generalized Advantage Estimation
# ---------------------------------------------------------------------------


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation over the response tokens.

    From Schulman et al. (2016), arXiv:1506.02438, eqs. (10)-(16), computed
    backwards over time for each row::

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t          (the value-function target, "returns")

    Each response is one episode that ends after its last real token: there
    ``V_{t+1} = 0`` and ``A_{t+1} = 0``, whatever the ``values`` tensor holds
    at padding. ``lam = 1`` gives Monte-Carlo advantages
    (``sum_k gamma^k r_{t+k} - V_t``); ``lam = 0`` gives one-step TD
    (``delta_t``).

    Args:
        rewards: Float tensor ``(B, T)`` of per-token rewards, e.g. from
            :func:`compute_rewards`. Padding entries are ignored.
        values: Float tensor ``(B, T)`` of rollout value estimates ``V_t``.
            Padding entries are ignored (they cannot leak into real tokens).
        mask: Bool or {0, 1} float prefix mask ``(B, T)`` of real tokens.
        gamma: Discount factor in ``[0, 1]`` (RLHF default 1.0).
        lam: GAE bias/variance trade-off ``lambda`` in ``[0, 1]`` (default
            0.95, TRL and safe-rlhf; OpenRLHF uses 1.0).

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, in reward units and 0
        outside the mask. Advantages are not whitened; call
        :func:`masked_whiten` on them if wanted.

    Raises:
        ValueError: on shape mismatches, a non-prefix mask, or ``gamma`` /
            ``lam`` outside ``[0, 1]``.
    """
    _check_2d("rewards", rewards)
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    mask = _as_bool_mask(mask, rewards)
    _check_prefix_mask(mask)

    zeros = torch.zeros_like(rewards)
    rewards = torch.where(mask, rewards, zeros)
    values = torch.where(mask, values.to(rewards.dtype), zeros)

    B, T = rewards.shape
    advantages_reversed = []
    next_value = rewards.new_zeros(B)  # V_T = 0: nothing after the window
    next_advantage = rewards.new_zeros(B)  # A_T = 0
    for t in reversed(range(T)):
        # Because padded values are 0, next_value is 0 right after the last
        # real token: the episode has ended.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantage = torch.where(mask[:, t], advantage, torch.zeros_like(advantage))
        advantages_reversed.append(advantage)
        next_value = values[:, t]
        next_advantage = advantage
    if T > 0:
        advantages = torch.stack(advantages_reversed[::-1], dim=1)
    else:
        advantages = zeros
    returns = torch.where(mask, advantages + values, zeros)
    return advantages, returns


def compute_reinforce_pp(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic-free REINFORCE++ advantages: reward-to-go, normalised over the whole batch.

    Hu (2025), arXiv:2501.03262, section 3: with the per-token KL-penalised
    rewards ``r_t`` of :func:`compute_rewards` (score on the last real token),
    for each row::

        G_t = sum_{k >= t} gamma^(k - t) * r_k      (over real tokens only)
        A_t = (G_t - mean(G)) / sqrt(var(G) + eps)

    where ``mean`` and the unbiased ``var`` run over every real token of the
    batch (all rows together, "global batch normalisation", which replaces
    the critic's baseline). There is no value model: the returns are the
    Monte-Carlo targets GAE would give with ``V = 0`` and ``lambda = 1``.

    Args:
        rewards: Float tensor ``(B, T)`` of per-token rewards (reward units).
            Padding entries are ignored.
        mask: Bool or {0, 1} float prefix mask ``(B, T)`` of real tokens.
        gamma: Discount factor in ``[0, 1]`` (REINFORCE++ and RLHF default 1.0).
        eps: Added to the variance before the square root.

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and 0 outside the mask:
        dimensionless normalised advantages and the reward-to-go ``G_t`` in
        reward units.

    Raises:
        ValueError: on shape mismatches, a non-prefix mask, ``gamma`` outside
            ``[0, 1]`` or fewer than 2 real tokens in the batch.
    """
    _check_2d("rewards", rewards)
    _check_same_shape(rewards=rewards, mask=mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    mask = _as_bool_mask(mask, rewards)
    _check_prefix_mask(mask)
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    returns = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[0])  # G_{t+1}; 0 after the last real token
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    returns = torch.where(mask, returns, torch.zeros_like(returns))
    return masked_whiten(returns, mask, eps=eps), returns


# ---------------------------------------------------------------------------
# PPO losses
# ---------------------------------------------------------------------------


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO surrogate loss (to minimise), averaged over real tokens.

    Schulman et al. (2017), arXiv:1707.06347, eq. (7), negated for
    minimisation::

        ratio_t = exp(logprobs_t - old_logprobs_t)
        loss    = masked_mean( max(-A_t * ratio_t,
                                   -A_t * clip(ratio_t, 1 - eps, 1 + eps)) )

    Taking the max of the two negated terms is the paper's pessimistic
    ``min``: the update gets no extra credit for moving the ratio beyond
    ``1 +- eps`` in the direction the advantage favours, but it is never
    shielded from moving the wrong way.

    Args:
        logprobs: Float tensor ``(B, T)``: log-probs of the sampled tokens under
            the current policy (with grad), nats.
        old_logprobs: Float tensor ``(B, T)``: log-probs from the rollout policy
            (no grad), nats.
        advantages: Float tensor ``(B, T)``: advantage estimates (usually
            whitened GAE), no grad.
        mask: Bool or {0, 1} float tensor ``(B, T)`` of real tokens.
        cliprange: Clip width ``eps >= 0`` (e.g. 0.2).

    Returns:
        ``(loss, stats)``. ``loss`` is a scalar; padding contributes neither
        value nor gradient (even if padded log-probs are ``inf``/``nan``).
        ``stats`` holds detached float scalar tensors, all masked token means:

        * ``"clipfrac"``: fraction of real tokens where the clipped term is
          the larger one (their gradient is zero);
        * ``"approxkl"``: ``0.5 * mean((logprobs - old_logprobs)**2)``, the k2
          estimate of KL(old || new), in nats;
        * ``"ratio_mean"``: mean probability ratio (exactly 1 on the first
          micro-batch of a rollout if log-probs are recomputed consistently).

    Raises:
        ValueError: on shape mismatches or a negative ``cliprange``.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if cliprange < 0:
        raise ValueError(f"cliprange must be >= 0, got {cliprange}")
    mask = _as_bool_mask(mask, logprobs)

    # Zero the log-ratio on padding *before* exp, so garbage there cannot
    # produce inf/nan in the forward pass or in the gradients.
    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))
    advantages = torch.where(mask, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)

    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value-function loss, averaged over real tokens.

    The PPO value-clipping variant from OpenAI baselines' ``ppo2`` (not in
    the PPO paper itself, whose value loss is the plain squared error,
    arXiv:1707.06347 eq. (9)); it keeps the critic close to its rollout
    estimates, like the policy clip::

        v_clip = clip(values, old_values - c, old_values + c)
        loss   = 0.5 * masked_mean( max((values - R)**2, (v_clip - R)**2) )

    Args:
        values: Float tensor ``(B, T)``: current critic predictions (with grad),
            reward units.
        old_values: Float tensor ``(B, T)``: critic predictions at rollout time.
        returns: Float tensor ``(B, T)``: value targets ``R_t`` from
            :func:`compute_gae`.
        mask: Bool or {0, 1} float tensor ``(B, T)`` of real tokens.
        cliprange_value: Clip half-width ``c >= 0`` in reward units (TRL 0.2;
            scale it with your reward magnitude).

    Returns:
        ``(loss, stats)``: a scalar loss in squared reward units (padding
        contributes neither value nor gradient) and ``{"clipfrac"}``, the
        detached fraction of real tokens where the clipped error is the larger
        one.

    Raises:
        ValueError: on shape mismatches or a negative ``cliprange_value``.
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if cliprange_value < 0:
        raise ValueError(f"cliprange_value must be >= 0, got {cliprange_value}")
    mask = _as_bool_mask(mask, values)

    zeros = torch.zeros_like(values)
    values = torch.where(mask, values, zeros)
    old_values = torch.where(mask, old_values.to(values.dtype), zeros)
    returns = torch.where(mask, returns.to(values.dtype), zeros)

    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)

    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, {"clipfrac": clipfrac}


# ---------------------------------------------------------------------------
# KL coefficient controllers
# ---------------------------------------------------------------------------


def _to_float(x: Union[float, torch.Tensor]) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class AdaptiveKLController:
    """Adapt the KL coefficient so that the observed KL tracks a target.

    Ziegler et al. (2019), arXiv:1909.08593, section 2.2::

        e_t     = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1 = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    When the policy drifts further from the reference than ``target`` the
    penalty grows, and it shrinks when the policy stays closer. The clip
    bounds the change per update to ``0.2 * n_steps / horizon``.

    Args:
        init_kl_coef: Initial coefficient ``beta_0 >= 0`` (reward units per nat).
        target: Target KL ``> 0``, in nats per *sequence* if you pass the
            per-sequence KL (sum over tokens, averaged over the batch), which
            is what Ziegler et al. and old TRL (target 6) did.
        horizon: ``> 0``, in the same units as ``n_steps`` (old TRL: 10000
            episodes). Larger means slower adaptation.

    Attributes:
        value: The current coefficient (float); pass it as ``kl_coef`` to
            :func:`compute_rewards`.

    Raises:
        ValueError: if ``init_kl_coef < 0``, ``target <= 0`` or ``horizon <= 0``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: Union[float, torch.Tensor], n_steps: int) -> float:
        """Update ``value`` from the KL measured on the latest rollout.

        Args:
            current_kl: Observed KL (float or scalar tensor), same units as
                ``target``.
            n_steps: Number of samples (episodes) the KL was measured on, i.e.
                the rollout batch size; ``>= 0``.

        Returns:
            The new coefficient (also stored in ``self.value``).

        Raises:
            ValueError: if ``n_steps < 0``.
        """
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        proportional_error = min(max(_to_float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"


class FixedKLController:
    """A constant KL coefficient with the same interface as :class:`AdaptiveKLController`.

    Args:
        kl_coef: The coefficient ``beta >= 0`` (reward units per nat), e.g. TRL's
            default 0.05.

    Attributes:
        value: The coefficient (float); never changes.

    Raises:
        ValueError: if ``kl_coef < 0``.
    """

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: Union[float, torch.Tensor], n_steps: int) -> float:
        """Do nothing (the arguments are accepted for interface compatibility); return ``value``."""
        return self.value

    def __repr__(self) -> str:
        return f"FixedKLController(value={self.value})"
