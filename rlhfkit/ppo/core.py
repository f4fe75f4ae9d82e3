"""PPO maths for RLHF on language models, pure tensor functions in the order a rollout meets them: masks -> score
shaping -> KL penalty + per-token rewards -> advantages (GAE / REINFORCE++) -> whitening -> losses -> KL controllers.

Conventions: `B` responses, `T` response positions (padding included, no prompt tokens). Masks are (B, T), bool or
0/1 float, True on real tokens (up to and including the first EOS), and prefix masks (real tokens, then padding).
Log-probs are in nats; `values[b, t]` estimates the return from `t` on, from the state before token `t`. Padding
never leaks: everything selects with `torch.where` (never multiplies by the mask), so even inf/nan there cannot reach
results or gradients. Rollout functions do not detach: call them under `torch.no_grad()`. Unlike TRL's removed PPO,
the score goes on the last real token, masks come from positions (pad == eos works), approxkl is a masked mean.

References:
- PPO: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
- GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", arXiv:1506.02438.
- KL estimators k1/k2/k3: Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
- REINFORCE++: Hu 2025, arXiv:2501.03262.
- Per-token KL penalty, adaptive KL coefficient: Ziegler et al. 2019, arXiv:1909.08593.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")  # the names `kl_estimate` accepts


def _as_bool_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """`mask` as bool (float masks: `!= 0`) after checking it has the shape of `like`."""
    if mask.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but values have shape {tuple(like.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def _check_2d(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(tensor.shape)}")


def _check_prefix_mask(mask: torch.Tensor) -> None:
    """ValueError on a real token after padding: GAE and score placement assume the episode ends at the last one."""
    if mask.shape[-1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be a prefix mask (real tokens first, then padding); "
                         "found a real token after padding")


# --- 1. Masks and masked statistics
def response_mask(response_ids: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """(B, T) bool: True up to and including the first EOS (any of `eos_token_id`), from positions, never `!= pad`,
    so `pad == eos` keeps the real EOS. Rows without EOS are all True. ValueError: not 2-D, no or empty EOS id.
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
    return torch.cumsum(is_eos.long(), dim=1) - is_eos.long() == 0  # no EOS strictly before position t


def truncate_after_stop(responses: torch.Tensor, stop_ids: Sequence[int] | None,
                        pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut (B, T) responses after their first stop token: `(responses, mask, ended)`, the responses with
    `pad_token_id` after it, the `response_mask` and (B,) bool True where a stop token came (False: length limit).
    No `stop_ids`: every token is real and every response has ended.
    """
    _check_2d("responses", responses)
    if not stop_ids:
        ones = torch.ones_like(responses, dtype=torch.bool)
        return responses, ones, ones[:, 0].clone()
    mask = response_mask(responses, list(stop_ids))
    is_stop = torch.isin(responses, torch.tensor(list(stop_ids), dtype=responses.dtype, device=responses.device))
    return torch.where(mask, responses, torch.full_like(responses, pad_token_id)), mask, (is_stop & mask).any(1)


def sequence_lengths(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: real tokens per row (a response's length, EOS included). ValueError if not 2-D."""
    _check_2d("mask", mask)
    return _as_bool_mask(mask, mask).sum(dim=1).long()


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the largest True index per row (the first EOS, or T - 1 if truncated), where the score goes.
    A row with no real token gives 0, like one whose only real token is at 0. ValueError if not 2-D.
    """
    _check_2d("mask", mask)
    mask = _as_bool_mask(mask, mask)
    if mask.shape[1] == 0:
        return torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=1).clamp(min=0).long()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is True: a scalar token mean (`dim=None`) or reduced along `dim` (`dim=1` on
    (B, T): per-row means). An empty mask (or slice) gives 0, not NaN. ValueError if the shapes differ.
    """
    mask = _as_bool_mask(mask, values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=dim)
    return total / mask.sum(dim=dim).clamp(min=1).to(total.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Scalar variance of the masked `values` (`unbiased`: Bessel's n - 1, one device-to-host sync). ValueError:
    shapes differ, or `unbiased` with fewer than 2 masked elements; `unbiased=False` on an empty mask gives 0.
    """
    mask = _as_bool_mask(mask, values)
    centered = torch.where(mask, values - masked_mean(values, mask), torch.zeros_like(values))
    count = mask.sum()
    variance = (centered**2).sum() / count.clamp(min=1).to(values.dtype)
    if unbiased:
        n = int(count.item())
        if n < 2:
            raise ValueError(f"unbiased variance needs at least 2 masked elements, mask selects {n}")
        variance = variance * (n / (n - 1))
    return variance


# --- 2. Score shaping
def shape_scores(scores: torch.Tensor, ended: torch.Tensor, missing_eos_penalty: float | None = None,
                 reward_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(penalised, shaped)`, (B,): scores minus `missing_eos_penalty` (None or 0: none) where not `ended` (TRL; Huang
    et al. 2024, arXiv:2403.17031), then clipped to +-`reward_clip` (None: no clip; safe-rlhf 50, OpenRLHF 10).
    `penalised` is logged as objective/scores, `shaped` builds the rewards. ValueError: bad shapes, clip <= 0.
    """
    if scores.shape != ended.shape or scores.dim() != 1:
        raise ValueError(f"scores and ended must both be (B,), got {tuple(scores.shape)} and {tuple(ended.shape)}")
    penalised = scores - missing_eos_penalty * (~ended.bool()).to(scores.dtype) if missing_eos_penalty else scores
    if reward_clip is None:
        return penalised, penalised
    if reward_clip <= 0:
        raise ValueError(f"reward_clip must be > 0, got {reward_clip}")
    return penalised, penalised.clamp(-reward_clip, reward_clip)


def update_running_moments(stats: dict, values: Sequence[float]) -> dict:
    """A new `{"count", "mean", "m2"}` (m2: summed squared deviations; start from zeros) with `values` added by
    Welford's online algorithm (Welford 1962, Technometrics 4(3)). `stats` is not changed.
    """
    count, mean, m2 = int(stats["count"]), float(stats["mean"]), float(stats["m2"])
    for x in values:
        count += 1
        delta = float(x) - mean
        mean += delta / count
        m2 += delta * (float(x) - mean)
    return {"count": count, "mean": mean, "m2": m2}


def normalize_with_moments(scores: torch.Tensor, stats: dict, eps: float = 1e-8) -> torch.Tensor:
    """`(scores - mean) / (std + eps)` with the running unbiased std `sqrt(m2 / max(count - 1, 1))` of
    `update_running_moments` (safe-rlhf's `normalize_reward`). Dimensionless, shape of `scores`.
    """
    std = math.sqrt(stats["m2"] / max(stats["count"] - 1, 1))
    return (scores - stats["mean"]) / (std + eps)


# --- 3. KL penalty and per-token rewards
def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) in nats from sampled-token log-probs, d = logprobs - ref_logprobs (Schulman 2020):
    "k1" d (unbiased, can be < 0; TRL's default), "k2" d**2 / 2 (>= 0, biased), "k3" exp(-d) - 1 + d (unbiased,
    >= 0). Unmasked, same shape. ValueError: unknown `kind` (the message lists the names) or shape mismatch.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; allowed: {', '.join(KL_ESTIMATORS)}")
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio  # expm1: no cancellation when the policies are close


def compute_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                    kl_coef: float, kl_estimator: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """`(rewards, kl)`, (B, T), 0 on padding: `rewards = -kl_coef * kl` on real tokens plus `scores[b]` (B,) on the
    last real token (Ziegler et al. 2019 eq. 2; OpenRLHF and safe-rlhf placement, old TRL used the slot after it,
    TRL #1893, #3750). `kl` in nats per token. ValueError: shapes, estimator, kl_coef < 0, non-prefix or empty row.
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
    last = last_token_index(mask)
    rewards = (-kl_coef * kl).scatter_add(1, last.unsqueeze(1), scores.to(kl.dtype).unsqueeze(1))
    return rewards, kl


# --- 4. Advantages: GAE (with a critic) or REINFORCE++ (without)
def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """`(advantages, returns)`, (B, T) in reward units, 0 on padding, not whitened (Schulman et al. 2016, eqs.
    10-16): `delta_t = r_t + gamma V_{t+1} - V_t`, `A_t = delta_t + gamma lam A_{t+1}`, `R_t = A_t + V_t`; V and A
    are 0 after the last real token. lam 0.95 (TRL, safe-rlhf; OpenRLHF 1.0). ValueError: shapes, non-prefix mask,
    gamma or lam outside [0, 1].
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
    values = torch.where(mask, values.to(rewards.dtype), zeros)  # 0 at padding: the episode has ended there
    advantages_reversed = []
    next_value, next_advantage = rewards.new_zeros(rewards.shape[0]), rewards.new_zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantage = torch.where(mask[:, t], advantage, torch.zeros_like(advantage))
        advantages_reversed.append(advantage)
        next_value, next_advantage = values[:, t], advantage
    advantages = torch.stack(advantages_reversed[::-1], dim=1) if advantages_reversed else zeros
    return advantages, torch.where(mask, advantages + values, zeros)


def compute_reinforce_pp(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                         eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic-free REINFORCE++ (Hu 2025, arXiv:2501.03262, section 3): `(advantages, returns)`, (B, T), 0 on
    padding; returns are the reward-to-go `G_t = sum_k gamma^(k-t) r_k`, advantages G whitened over every real token
    of the batch. ValueError: shapes, non-prefix mask, gamma outside [0, 1], fewer than 2 real tokens.
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


# --- 5. Whitening
def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """`(values - mean) / sqrt(var + eps)` with the mean and unbiased variance of all masked elements (all rows
    together); `shift_mean=False` adds the mean back (TRL's `whiten_rewards`, keeps the sign). Positions outside the
    mask are set to 0. ValueError: shapes differ, or fewer than 2 masked elements.
    """
    mask = _as_bool_mask(mask, values)
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask, unbiased=True) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


# --- 6. Losses
def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO surrogate to minimise (Schulman et al. 2017, eq. 7): token mean of `max(-A ratio, -A clip(ratio,
    1 -+ cliprange))`, `ratio = exp(logprobs - old_logprobs)`, all (B, T). `(loss, stats)`, stats detached token
    means: "clipfrac", "approxkl" (k2 of KL(old || new), nats), "ratio_mean". ValueError: shapes, cliprange < 0.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if cliprange < 0:
        raise ValueError(f"cliprange must be >= 0, got {cliprange}")
    mask = _as_bool_mask(mask, logprobs)
    # The log-ratio is zeroed on padding before exp, so garbage there cannot give inf/nan, even in gradients.
    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))
    advantages = torch.where(mask, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
                 "approxkl": 0.5 * masked_mean(log_ratio**2, mask), "ratio_mean": masked_mean(ratio, mask)}
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (OpenAI baselines' ppo2; the paper's eq. 9 is the plain squared error): `0.5 * token mean
    of max((V - R)**2, (clip(V, V_old -+ c) - R)**2)`, all (B, T), `c = cliprange_value` in reward units.
    `(loss, {"clipfrac"})`, clipfrac detached. ValueError: shapes, cliprange_value < 0.
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
    loss_unclipped, loss_clipped = (values - returns) ** 2, (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, {"clipfrac": clipfrac}


# --- 7. KL coefficient controllers
class AdaptiveKLController:
    """KL coefficient `value` tracking a target KL (Ziegler et al. 2019, section 2.2): `e = clip(KL / target - 1,
    -0.2, 0.2)`, `value *= 1 + e * n_steps / horizon`. `target` in nats per sequence (old TRL 6), `horizon` in
    episodes (old TRL 10000). ValueError: init_kl_coef < 0, target <= 0 or horizon <= 0.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Update and return `value` from the KL measured on `n_steps` episodes. ValueError if n_steps < 0."""
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        current_kl = float(current_kl.item()) if isinstance(current_kl, torch.Tensor) else float(current_kl)
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"


class FixedKLController:
    """A constant KL coefficient `value` (TRL's default 0.05), with `AdaptiveKLController`'s interface. ValueError if
    kl_coef < 0.
    """

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"FixedKLController(value={self.value})"
