"""Load a reward model saved by reward_model.py (full model or LoRA adapter) and score (prompt, answer) pairs.

Used by the reward-model probe, the online methods (PPO, RLOO, GRPO) and rejection sampling.
"""

from __future__ import annotations

from typing import Callable, Sequence

from utils.model import load_frozen_model

ScoreFn = Callable[[list, list], Sequence[float]]  # (prompts as message lists, answer strings) -> scores

def _model_device(model):
    dev = getattr(model, "device", None)
    if dev is not None:
        return dev
    return next(model.parameters()).device


def reward_scorer(model, tokenizer, batch_size: int = 8, max_length: int = 1024) -> ScoreFn:
    """Wrap a sequence-classification reward model as a ``score_fn`` for :func:`run_probe`.

    Each (prompt, answer) is rendered as
    ``tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)``
    and tokenized with ``add_special_tokens=False`` (the template already
    contains them), right padding, and truncation to ``max_length`` tokens
    (on the tokenizer's ``truncation_side``). Texts are scored in batches of
    ``batch_size``, sorted by length to reduce padding, in eval mode under
    ``torch.no_grad()`` on the model's device; the model's previous train/eval
    mode is restored afterwards.

    Side effects: if the tokenizer has no pad token its EOS token is used;
    ``model.config.pad_token_id`` is set to ``tokenizer.pad_token_id`` (the
    model uses it to find the last real token of each padded sequence).

    Args:
        model: an ``AutoModelForSequenceClassification`` (or PEFT-wrapped)
            model with ``num_labels=1``.
        tokenizer: its tokenizer; must have a chat template.
        batch_size: texts per forward pass (>= 1).
        max_length: maximum tokens per text (>= 1).

    Returns:
        ``score_fn(prompts: list[list[dict]], answers: list[str]) -> list[float]``
        giving ``logits[:, 0]`` for each pair, in input order.
        ``score_fn`` raises ValueError if the two lists differ in length.

    Raises:
        ValueError: ``batch_size`` or ``max_length`` < 1, or the tokenizer
            has neither a pad nor an EOS token.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    _sync_pad_token_id(model, tokenizer)

    def score_fn(prompts, answers):
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        texts = []
        for prompt, answer in zip(prompts, answers):
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            messages = prompt + [{"role": "assistant", "content": answer}]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            if not isinstance(text, str):  # defensive: some versions may wrap it
                text = text[0]
            texts.append(text)
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        scores = [0.0] * len(texts)
        device = _model_device(model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    enc = tokenizer(
                        [texts[k] for k in chunk],
                        padding=True,
                        padding_side="right",
                        truncation=True,
                        max_length=max_length,
                        add_special_tokens=False,
                        return_tensors="pt",
                    )
                    logits = model(
                        input_ids=enc["input_ids"].to(device),
                        attention_mask=enc["attention_mask"].to(device),
                    ).logits
                    for k, s in zip(chunk, logits[:, 0].float().cpu().tolist()):
                        scores[k] = float(s)
        finally:
            if was_training:
                model.train()
        return scores

    return score_fn


def _sync_pad_token_id(model, tokenizer) -> None:
    config = model.config
    config.pad_token_id = tokenizer.pad_token_id
    get_text = getattr(config, "get_text_config", None)
    if get_text is not None:
        text_config = get_text()
        if text_config is not config:
            text_config.pad_token_id = tokenizer.pad_token_id


def load_reward_model(rm_dir: str, device: str | None = None, config=None, merge: bool = False,
                      base_model_path: str | None = None):
    """Load a reward model and its tokenizer from `rm_dir`, frozen, for scoring.

    Args:
        rm_dir: a full `AutoModelForSequenceClassification` save, or a LoRA adapter folder from reward_model.py
            (its score head is saved with it); the base is found with `utils.model.resolve_checkpoint`. The
            tokenizer is loaded from `rm_dir` too.
        device: torch device string; default "cuda" if available else "cpu".
        config: the run's training config, for the precision (`utils.model.inference_dtype`): the run's compute
            dtype; None: bf16 on GPUs that support it, else fp32.
        merge: fold a LoRA adapter into the weights (a `PreTrainedModel` comes back) instead of a `PeftModel`.
        base_model_path: the base model folder, instead of the one the adapter records.

    Returns:
        `(model, tokenizer)`: the model in eval mode on `device`, gradients off, `config.pad_token_id` set from
        the tokenizer (EOS is used as pad token if the tokenizer has none).

    Raises:
        `PathNotFoundError` if `rm_dir` is not a model or adapter folder, or the adapter's base folder is gone.
    """
    import torch
    from transformers import AutoTokenizer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_frozen_model(rm_dir, config, task_type="SEQ_CLS", tokenizer=tokenizer, device=device, merge=merge,
                              base_model_path=base_model_path)
    return model, tokenizer
