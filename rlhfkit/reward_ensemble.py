"""Reward-model ensembles: several reward models scored as one (`--reward_model_path rm_a,rm_b,rm_c`).

Each member scores the same tokens (the members share one tokenizer); `--reward_ensemble` combines the K scores of
each answer: `mean`, `min` (worst case) or `mean_minus_std` (mean minus the members' standard deviation: an answer
the members disagree on is trusted less). Coste et al. 2024, "Reward model ensembles help mitigate
overoptimization" (their WCO and UWO objectives). Every member is held in memory whole: K reward models cost K
times one reward model's weights and forward passes.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

Combine = Literal["mean", "min", "mean_minus_std"]
COMBINES = get_args(Combine)


def combine_scores(scores: torch.Tensor, combine: Combine) -> torch.Tensor:
    """Combine the members' scores, (B, K) -> (B,): their mean, their minimum, or their mean minus their standard
    deviation (population, `correction=0`: 0 for a single member). Raises `ValueError` for another `combine`.
    """
    if combine == "mean":
        return scores.mean(dim=-1)
    if combine == "min":
        return scores.min(dim=-1).values
    if combine == "mean_minus_std":
        return scores.mean(dim=-1) - scores.std(dim=-1, correction=0)
    raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")


class RewardEnsemble(torch.nn.Module):
    """K frozen sequence classifiers (num_labels 1) called as one: `forward(input_ids, attention_mask).logits` is
    (B, 1), the members' scores combined by `combine_scores`. `config` is the first member's, named
    `reward_ensemble_<combine>` (TRL logs the reward under that name); `members_scores` keeps the last (B, K).
    """

    def __init__(self, members: list[torch.nn.Module], combine: Combine = "mean"):
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.members = torch.nn.ModuleList(members)
        self.combine = combine
        self.config = copy.deepcopy(members[0].config)
        self.config._name_or_path = f"reward_ensemble_{combine}"
        self.members_scores: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        scores = torch.stack([member(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
                              for member in self.members], dim=-1)
        self.members_scores = scores.detach()
        return SequenceClassifierOutput(logits=combine_scores(scores, self.combine)[:, None])
