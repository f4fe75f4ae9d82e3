"""PPO's run for train_rlhf.py: prompts -> reward sources -> policy, reward, value and reference models -> the
toolkit's `PPOTrainer` (rlhfkit/ppo/trainer.py).
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from rlhfkit.log import show_dataset_progress
from rlhfkit.methods.online import online_inputs, ppo_models, ppo_prompt_data
from rlhfkit.methods.trainer_inputs import trainer_inputs
from rlhfkit.model import load_model
from rlhfkit.ppo.trainer import PPOTrainer
from rlhfkit.report.preflight import preflight


def ppo_trainer(args, config, tokenizer) -> tuple[PPOTrainer, list[dict]] | None:
    """Steps 1-3 of a PPO run: the prompts (at least one rollout's), the reward sources, value model and PPO-ptx
    rows (checked), the policy and the other models, the trainer. Returns `(trainer, eval_rows)`, or None with
    `--check` (the preflight report printed, no weights loaded). Raises a `UserError` for bad input before any
    weights load.
    """
    # 1. Data: the prompts, then the reward and value models' folders, the reward function, PPO-ptx's rows.
    train_rows, eval_rows = ppo_prompt_data(args, config, tokenizer, "PPOTrainer keeps their last tokens")
    sources = online_inputs(args, config, tokenizer, train_rows + eval_rows)
    if args.check:  # --check: show what would be trained, load no weights
        preflight(tokenizer, train_rows, eval_rows, args.model_name_or_path, "PPO")
        return None
    show_dataset_progress(len(train_rows))  # progress bars for tokenizing only when it takes long

    # 2. Models: the policy (LoRA: the reference is the policy with its adapter off), then the reward, value and,
    # for full fine-tuning, reference models (`ppo_models`).
    model = load_model(AutoModelForCausalLM, args, config, tokenizer)
    models = ppo_models(args, config, tokenizer, **sources)

    # 3. Trainer.
    return PPOTrainer(**trainer_inputs(model, args, config, tokenizer, train_rows, eval_rows), **models), eval_rows
