"""ODIN: a reward model with a quality head and a length head (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates
Hacking in RLHF", arXiv:2402.07319), for `reward_model.py --length_debias odin`.

The score layer gets two outputs: column 0 is the quality score r_Q, column 1 the length score r_L. On each batch of
pairs the loss is (the paper's sec. 4)

    -log sigmoid((r_Q + r_L)(chosen) - (r_Q + r_L)(rejected))      Bradley-Terry on the sum of the heads
    + length_weight * (|rho(r_Q, L)| - rho(r_L, L))                 rho: Pearson over the batch's answers, L: tokens
    + orthogonal_weight * |w_Q . w_L|                               the two heads' weight vectors kept orthogonal

After training only the quality head is kept (`keep_quality_head`): the saved folder is an ordinary one-output reward
model, so every tool that scores with it (PPO, RLOO, GRPO, rejection sampling, evaluate.py, the probe) uses r_Q. The
length head is saved beside it as `odin_length_head.safetensors`.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F
from trl import RewardTrainer

from rlhfkit.reward import tensor_pearson

LENGTH_HEAD_FILE = "odin_length_head.safetensors"


def answer_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(2B,) answer lengths in tokens of a [chosen; rejected] batch (2B, T), right-padded: each sequence's length
    minus the prefix it shares with its pair (the prompt).
    """
    lengths = attention_mask.sum(1)
    chosen, rejected = input_ids.chunk(2)
    shorter = torch.minimum(*lengths.chunk(2))
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    same = (chosen == rejected) & (positions < shorter.unsqueeze(1))
    prefix = same.long().cumprod(1).sum(1)
    return (lengths - prefix.repeat(2)).float()


def odin_loss(scores: torch.Tensor, lengths: torch.Tensor, heads: torch.Tensor, length_weight: float = 1.0,
              orthogonal_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ODIN's loss on a [chosen; rejected] batch: `scores` (2B, 2) = (r_Q, r_L) per answer, `lengths` (2B,) in tokens,
    `heads` (2, H) the score layer's weights. Returns `(loss, stats)`; stats (detached): `accuracy` of the sum,
    `quality_accuracy` of r_Q, `corr_quality_length`, `corr_length_length` and `head_product` |w_Q . w_L|.
    """
    total_chosen, total_rejected = scores.sum(1).chunk(2)
    ranking = -F.logsigmoid(total_chosen - total_rejected).mean()
    corr_quality, corr_length = tensor_pearson(scores[:, 0], lengths), tensor_pearson(scores[:, 1], lengths)
    product = (heads[0] * heads[1]).sum().abs()
    loss = ranking + length_weight * (corr_quality.abs() - corr_length) + orthogonal_weight * product
    quality_chosen, quality_rejected = scores[:, 0].chunk(2)
    stats = {"accuracy": (total_chosen > total_rejected).float().mean(),
             "quality_accuracy": (quality_chosen > quality_rejected).float().mean(),
             "corr_quality_length": corr_quality, "corr_length_length": corr_length, "head_product": product}
    return loss, {k: v.detach() for k, v in stats.items()}


def score_layers(model) -> list[nn.Linear]:
    """The 2-output score layers of a sequence classifier: the layer itself, or under LoRA PEFT's trained copy and
    the original (the trained one first).
    """
    layers = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 2
              and "score" in name]
    return sorted(layers, key=lambda m: not m.weight.requires_grad)


class ODINRewardTrainer(RewardTrainer):
    """TRL's `RewardTrainer` with ODIN's loss; the model is a 2-output sequence classifier (`num_labels=2`).

    TRL checks that a reward model has one output; the model's config says so (`num_labels = 1`) while the score
    layer keeps its second row, the length head, until `keep_quality_head` drops it before saving.
    """

    def __init__(self, model, args, **kwargs):
        model.config.num_labels = 1
        super().__init__(model=model, args=args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        heads = score_layers(self.accelerator.unwrap_model(model))[0].weight
        loss, stats = odin_loss(outputs.logits.float(), answer_lengths(inputs["input_ids"], inputs["attention_mask"]),
                                heads.float(), self.args.odin_length_weight, self.args.odin_orthogonal_weight)
        for name, value in stats.items():
            key = name if name == "accuracy" else f"odin/{name}"
            self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value).mean().item())
        return (loss, outputs) if return_outputs else loss


def keep_quality_head(model, output_dir: str | None = None) -> torch.Tensor:
    """Cut the score layer(s) to their first row, the quality head, so the model is a one-output reward model again
    (call it after training, before saving). With `output_dir`, also write the length head (1, H) there as
    `odin_length_head.safetensors`. Returns the length head.
    """
    layers = score_layers(model)
    length_head = layers[0].weight.detach()[1:].float().cpu().contiguous()
    for layer in layers:
        layer.weight = nn.Parameter(layer.weight.data[:1].clone(), requires_grad=layer.weight.requires_grad)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[:1].clone(), requires_grad=layer.bias.requires_grad)
        layer.out_features = 1
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        save_file({"weight": length_head}, os.path.join(output_dir, LENGTH_HEAD_FILE))
    return length_head
