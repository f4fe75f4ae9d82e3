"""PPO-ptx (Ouyang et al. 2022, arXiv:2203.02155, eq. 2): the policy's language-model loss on supervised rows, added
to PPO's loss as `ptx_coef` x its token mean. `PtxBatches` tokenises the rows once and serves batches of them in a
seeded shuffled cycle; imported by the trainer only when `--ptx_data_path` is given.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import pad, selective_log_softmax

from rlhfkit.ppo.core import masked_mean
from rlhfkit.ppo.models import POLICY


def tokenize_ptx_row(tokenizer, row: dict, max_length: int) -> dict:
    """`input_ids` and `labels` (-100 on the prompt) of a row rendered as TRL's SFTTrainer does, cut to `max_length`."""
    if isinstance(row["prompt"], list):
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    else:
        prompt, full = row["prompt"], row["prompt"] + row["completion"]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return {"input_ids": ids[:max_length], "labels": ([-100] * n_prompt + ids[n_prompt:])[:max_length]}


def ptx_loss(model, batch: dict) -> torch.Tensor:
    """SFT loss of the policy of `model` (a `PolicyAndValue`) in nats per labelled token (fp32, temperature 1)."""
    if model.adapters:
        model.use_adapter(POLICY)
    logits = model.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return masked_mean(-selective_log_softmax(logits, labels.clamp(min=0)), labels != -100)


class PtxBatches:
    """SFT rows `{"prompt", "completion"}` (`rlhfkit.data.offline.sft_data`), tokenised; `next_batch` gives the next
    `batch_size` of a shuffled cycle seeded with `seed`, right-padded (b, L), labels -100 on prompt and padding.
    """

    def __init__(self, rows: list[dict], tokenizer, max_length: int, batch_size: int, seed: int):
        self.rows = [tokenize_ptx_row(tokenizer, row, max_length) for row in rows]
        self.pad_id, self.batch_size = tokenizer.pad_token_id, batch_size
        self.order, self.generator = [], torch.Generator().manual_seed(seed)

    def next_batch(self, device) -> dict:
        rows = []
        while len(rows) < self.batch_size:
            if not self.order:
                self.order = torch.randperm(len(self.rows), generator=self.generator).tolist()
            rows.append(self.rows[self.order.pop()])
        ids = [torch.tensor(r["input_ids"]) for r in rows]
        return {"input_ids": pad(ids, padding_value=self.pad_id).to(device),
                "attention_mask": pad([torch.ones_like(x) for x in ids], padding_value=0).to(device),
                "labels": pad([torch.tensor(r["labels"]) for r in rows], padding_value=-100).to(device)}

    def loss(self, model, device) -> torch.Tensor:
        """`ptx_loss` of `model` (a `PolicyAndValue`) on the next batch, put on `device`."""
        return ptx_loss(model, self.next_batch(device))
