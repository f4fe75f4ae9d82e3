"""DPO with R-DPO's length term: TRL's `DPOTrainer` plus `--rdpo_alpha` (Park et al. 2024, "Disentangling Length
from Quality in Direct Preference Optimization", arXiv:2403.19159, eq. 9):

    loss = -log sigmoid(beta * (log-ratio(chosen) - log-ratio(rejected)) + alpha * (|chosen| - |rejected|))

with log-ratio = log pi - log ref and |y| the answer's length in tokens. The sign, from the paper's derivation: the
length-penalised objective max E[r - alpha |y|] - beta KL has its optimum at beta log-ratio = r - alpha |y| - const,
so r = beta log-ratio + alpha |y|, and the Bradley-Terry likelihood of a pair gets + alpha (|chosen| - |rejected|).
A longer chosen answer thus already explains part of the preference and earns the policy less margin: length stops
paying. (Public copies of the formula disagree on this sign; tests/test_dpo.py checks it by hand.)

It is implemented by adding alpha / beta nats to the policy's log-probability of every answer token (the reference's
are left alone), so the log-ratio difference grows by (alpha / beta) (|chosen| - |rejected|) in whichever loss
`--loss_type` picks; the logged rewards/* are then R-DPO's implicit rewards beta log-ratio + alpha |y|.
"""

from __future__ import annotations

import trl


class LengthBonus:
    """Calls `model` and adds `bonus` nats to the log-probability of every answer token (label != -100) of TRL's
    fused LM-head output (log-probs (B, T - 1), zero where the label is -100); everything else passes through.
    """

    def __init__(self, model, bonus: float):
        self.model, self.bonus = model, bonus

    def __call__(self, *args, labels=None, **kwargs):
        outputs = self.model(*args, labels=labels, **kwargs)
        outputs.log_probs = outputs.log_probs + self.bonus * (labels[:, 1:] != -100)
        return outputs

    def __getattr__(self, name):
        return getattr(self.model, name)


class DPOTrainer(trl.DPOTrainer):
    """TRL's `DPOTrainer`; with `args.rdpo_alpha` > 0, R-DPO's length term (module docstring)."""

    def _compute_loss(self, model, inputs, return_outputs):
        if self.args.rdpo_alpha:
            model = LengthBonus(model, self.args.rdpo_alpha / self.beta)
        return super()._compute_loss(model, inputs, return_outputs)
