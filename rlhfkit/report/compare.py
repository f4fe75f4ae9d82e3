"""The end of a training run: one held-out prompt answered greedily by the starting model and by the saved one."""

from __future__ import annotations

from rlhfkit.generation import generate_answers
from rlhfkit.log import info_rank0
from rlhfkit.model import load_policy


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
    answers, or None.
    """
    prompt = eval_rows[0].get("prompt") if eval_rows else None
    if not isinstance(prompt, list):
        return None
    try:
        return show_base_vs_tuned(args.model_name_or_path, config.output_dir, prompt, max_new_tokens, log)
    except Exception as error:
        log(f"[demo] could not compare the base and tuned answers: {error}")
        return None
