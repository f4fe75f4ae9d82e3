r"""Example Python reward functions for PPO / RLOO / GRPO (`--reward_function script/example_reward.py:NAME`).

A reward function has TRL's signature and returns one float per response (None: no opinion on that response):

    def my_reward(prompts, completions, completion_ids, **kwargs) -> list[float | None]

* prompts: the prompts, each a list of chat messages (as in the data file);
* completions: the sampled responses, each `[{"role": "assistant", "content": text}]` (special tokens removed);
* completion_ids: the response token ids (up to and including the EOS);
* kwargs: the row's other data columns (e.g. a gold `answer`: see `rlhfkit/verifiers.py`), and `trainer_state` (the
  Trainer's state: `global_step`, ...).

Given with `--reward_model_path`, its value is added to the reward model's score (PPO) or is a second reward
(RLOO/GRPO sum them, weighted by `--reward_weights`). Given alone (`--reward_model_path none`), it is the reward.

    python train_rlhf.py --rlhf_type PPO --reward_function script/example_reward.py:concise_and_polite \\
        --reward_model_path output/reward_model
"""

import re

POLITE = re.compile(r"\b(please|thank|thanks|sure|happy to|glad)\b", re.IGNORECASE)


def concise_and_polite(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """+0.5 for a polite word, minus 0.5 per 100 tokens beyond the first 100: a nudge against rambling.

    An empty answer gets -1 (weak reward models sometimes love empty answers; see docs/online-rl.md, "Reward
    hacking").
    """
    rewards = []
    for completion, ids in zip(completions, completion_ids):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        if not text.strip():
            rewards.append(-1.0)
            continue
        reward = 0.5 if POLITE.search(text) else 0.0
        reward -= 0.5 * max(0, len(ids) - 100) / 100
        rewards.append(reward)
    return rewards


def answer_length(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """Number of response tokens / 100: a toy reward to check that a run learns (the length should grow)."""
    return [len(ids) / 100 for ids in completion_ids]
