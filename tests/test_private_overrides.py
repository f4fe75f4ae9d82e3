"""The one list of private (underscore) methods of TRL, transformers and argparse that the toolkit overrides.

Private methods may change in any release. Pinned: trl==1.16.0, transformers==5.23.0 (requirements.txt). When an
upgrade renames one or changes its parameters, this test fails naming the override and the file to adapt.
"""

import importlib
import inspect

import pytest

# (the toolkit's class, the method, the library class it overrides, why)
PRIVATE_OVERRIDES = [
    ("rlhfkit.methods.offline:DPOTrainer", "_compute_loss", "trl:DPOTrainer", "R-DPO's length term"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_generate_and_score_completions", "trl:GRPOTrainer",
     "samples.jsonl every sample_every rollouts"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_generate_and_score_completions", "trl:RLOOTrainer",
     "samples.jsonl every sample_every rollouts"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_calculate_rewards", "trl:GRPOTrainer",
     "score-length correlation, --length_control batch"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_calculate_rewards", "trl:RLOOTrainer",
     "score-length correlation, --length_control batch"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_tokenize_prompts", "trl:GRPOTrainer", "--max_prompt_length"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_tokenize_prompts", "trl:RLOOTrainer", "--max_prompt_length"),
    ("rlhfkit.methods.trl_online:OnlineExtras", "_save", "transformers:Trainer", "online_curves.png with the model"),
    ("rlhfkit.ppo.trainer:PPOTrainer", "_set_signature_columns_if_needed", "transformers:Trainer",
     "keep the prompt rows' columns"),
    ("rlhfkit.ppo.trainer:PPOTrainer", "_get_train_sampler", "transformers:Trainer", "one shuffle per rollout"),
    ("rlhfkit.ppo.trainer:PPOTrainer", "_prepare_inputs", "transformers:Trainer", "the rollout"),
    ("rlhfkit.ppo.trainer:PPOTrainer", "_save", "transformers:Trainer", "policy, value head and layouts"),
    ("rlhfkit.ppo.trainer:PPOTrainer", "_load_from_checkpoint", "transformers:Trainer", "resume the value model"),
    ("rlhfkit.args:ToolkitArgumentParser", "_check_value", "argparse:ArgumentParser", "choices in one line"),
]


def load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def positional(function) -> int:
    """The number of positional parameters, `self` included."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in inspect.signature(function).parameters.values())


@pytest.mark.parametrize("ours, method, theirs, why", PRIVATE_OVERRIDES, ids=lambda v: str(v).split(":")[-1])
def test_each_overridden_private_method_still_exists_with_the_same_arity(ours, method, theirs, why):
    override, parent = getattr(load(ours), method), getattr(load(theirs), method, None)
    where = f"{ours.split(':')[0].replace('.', '/')}.py"
    assert parent is not None, (f"{theirs}.{method} is gone (renamed?) in this version; {where} overrides it for "
                                f"{why}: adapt the override and this list (tests/test_private_overrides.py)")
    assert positional(override) == positional(parent), (
        f"{theirs}.{method} now takes {inspect.signature(parent)}; {where} overrides it as "
        f"{inspect.signature(override)} for {why}: adapt the override and this list")


def test_the_list_is_complete():
    """Every underscore method a toolkit class defines that a library base class also defines is in the list."""
    listed = {(ours, method) for ours, method, _, _ in PRIVATE_OVERRIDES}
    found = set()
    for ours in {o for o, _, _, _ in PRIVATE_OVERRIDES} | {"rlhfkit.methods.trl_online:GRPOTrainer",
                                                         "rlhfkit.methods.trl_online:RLOOTrainer",
                                                         "rlhfkit.methods.odin:ODINRewardTrainer"}:
        for cls in load(ours).__mro__:
            if not cls.__module__.startswith("rlhfkit"):
                continue
            for name in vars(cls):
                library = [b for b in load(ours).__mro__ if not b.__module__.startswith("rlhfkit") and name in vars(b)]
                if name.startswith("_") and not name.startswith("__") and library:
                    found.add((f"{cls.__module__}:{cls.__name__}", name))
    assert found <= listed, f"overrides missing from PRIVATE_OVERRIDES: {sorted(found - listed)}"
