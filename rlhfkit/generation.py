"""Answers from a policy for evaluation, generated in batches (the policy comes from `rlhfkit.model.load_policy`).

Used by evaluate.py, rejection_sampling.py and the closing base-vs-tuned print (`rlhfkit.report.compare`). Greedy
by default; with a temperature > 0, sampled (seeded). Each answer comes with its length in tokens and whether it
ended (a stop token before the cap).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, set_seed


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the tokenizer's EOS and any EOS in the model's generation config."""
    stop = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stop |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(stop)


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 256,
                     temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8,
                     max_prompt_length: int | None = None, seed: int = 42,
                     num_return_sequences: int = 1, progress: str | None = None) -> list[dict]:
    """`num_return_sequences` answers per prompt (lists of chat messages, rendered with the tokenizer's chat template).

    Greedy when `temperature` is 0, else sampled at that temperature with nucleus `top_p` after `set_seed(seed)`.
    Prompts are left-truncated to `max_prompt_length` tokens and generated `batch_size` prompts at a time,
    left-padded, with an explicit `GenerationConfig` (nothing is inherited from the checkpoint's generation_config).
    Returns `len(prompts) x num_return_sequences` dicts, grouped by prompt in prompt order: `answer` (decoded, special
    tokens removed, whitespace stripped), `length` (answer tokens before the first stop token), `ended` (a stop token
    came before `max_new_tokens`), `token_ids` (the answer's tokens, stop token excluded). `progress`: a progress
    bar's label (None: no bar). Raises `ValueError` for a
    negative temperature, or several answers per prompt without sampling (greedy answers would all be equal).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if num_return_sequences > 1 and temperature == 0:
        raise ValueError("several answers per prompt need sampling: set a temperature > 0")
    stop = stop_token_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0, eos_token_id=stop or None,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              num_return_sequences=num_return_sequences,
                              **({"temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {}))
    saved, model.generation_config = model.generation_config, config  # generate() fills unset fields from it
    set_seed(seed)
    results = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=progress, unit="batch", disable=progress is None):
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start:start + batch_size]]
            ids = [x[-max_prompt_length:] if max_prompt_length else x
                   for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            batch = tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")
            out = model.generate(input_ids=batch["input_ids"].to(model.device),
                                 attention_mask=batch["attention_mask"].to(model.device), generation_config=config)
            for row in out[:, batch["input_ids"].shape[1]:].tolist():
                cut = next((i for i, t in enumerate(row) if t in stop), None)
                tokens = row if cut is None else row[:cut]
                results.append({"answer": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                                "length": len(tokens), "ended": cut is not None, "token_ids": tokens})
    finally:
        model.generation_config = saved
    return results
