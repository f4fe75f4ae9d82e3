"""Answers from a policy for evaluation, generated in batches (the policy comes from `utils.model.load_policy`).

Used by evaluate.py, rejection_sampling.py and train_rlhf.py's closing base-vs-tuned print. Greedy by default; with a
temperature > 0, sampled (seeded). Each answer comes with its length in tokens and whether it ended (a stop token
before the cap).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, set_seed

from utils.log import info_rank0
from utils.model import load_policy


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
                     num_return_sequences: int = 1) -> list[dict]:
    """`num_return_sequences` answers per prompt (lists of chat messages, rendered with the tokenizer's chat template).

    Greedy when `temperature` is 0, else sampled at that temperature with nucleus `top_p` after `set_seed(seed)`.
    Prompts are left-truncated to `max_prompt_length` tokens and generated `batch_size` prompts at a time,
    left-padded, with an explicit `GenerationConfig` (nothing is inherited from the checkpoint's generation_config).
    Returns `len(prompts) x num_return_sequences` dicts, grouped by prompt in prompt order: `answer` (decoded, special
    tokens removed, whitespace stripped), `length` (answer tokens before the first stop token), `ended` (a stop token
    came before `max_new_tokens`), `token_ids` (the answer's tokens, stop token excluded). Raises `ValueError` for a
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
        for start in range(0, len(prompts), batch_size):
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


def show_base_vs_tuned(base_path: str, tuned_path: str, prompt: list[dict], max_new_tokens: int = 64,
                       log=info_rank0) -> dict[str, str]:
    """Print the base model's and the tuned model's greedy answers to one prompt, one above the other.

    `base_path` / `tuned_path` are checkpoint or LoRA adapter folders (the tuned one is usually the run's
    `output_dir`). Loads one model at a time. Returns `{"base": answer, "tuned": answer}`.
    """
    answers = {}
    for name, path in (("base", base_path), ("tuned", tuned_path)):
        model, tokenizer = load_policy(path)
        (result,) = generate_answers(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)
        answers[name] = result["answer"] + ("" if result["ended"] else " [...cut at max_new_tokens]")
        del model
    question = prompt[-1]["content"]
    log(f"[demo] one held-out prompt, greedy answers (at most {max_new_tokens} tokens):\n"
        f"  prompt: {question}\n  base  ({base_path}): {answers['base']}\n  tuned ({tuned_path}): {answers['tuned']}\n"
        f"[demo] compare many prompts with a judge: python evaluate.py --models base={base_path} tuned={tuned_path} "
        f"--reward_model_path RM_DIR --eval_data_path DATA.jsonl --output_dir OUT")
    return answers


def compare_on_held_out_prompt(args, config, eval_rows: list[dict], max_new_tokens: int = 48,
                               log=info_rank0) -> dict[str, str] | None:
    """End of train_rlhf.py: `show_base_vs_tuned` for the run's first held-out prompt (`eval_rows[0]["prompt"]`, the
    rows the method's data loader held out), the starting checkpoint (`args.model_name_or_path`) against what the
    run saved in `config.output_dir`. Informative only: a failure is printed as one line, not raised. Returns the two
    answers, or None."""
    prompt = eval_rows[0].get("prompt") if eval_rows else None
    if not isinstance(prompt, list):
        return None
    try:
        return show_base_vs_tuned(args.model_name_or_path, config.output_dir, prompt, max_new_tokens, log)
    except Exception as error:  # noqa: BLE001  the run is saved; never fail it over the demo print
        log(f"[demo] could not compare the base and tuned answers: {error}")
        return None
