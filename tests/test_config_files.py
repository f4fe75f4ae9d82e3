"""`--config FILE`: YAML recipes and a run's own run_config.json set any field; flags override them; bad keys and
values are refused before anything loads. Every recipe in recipes/ parses, and the CPU ones train on the tiny model."""

import glob
import json
import os

import pytest
from conftest import ROOT, base_flags, easy_pairs, write_jsonl

import reward_model
import train_gkd
import train_rlhf
from common_args import CommonArgs
from reward_args.model_config import RewardModelArgs
from reward_args.training_config import RewardConfig
from rlhf_args.dpo_config import DPOConfig
from rlhf_args.gkd_config import GKDConfig, GKDModelArgs
from rlhf_args.ppo_config import PPOConfig
from utils.args import parse_args, run_config
from utils.errors import ConfigError, PathNotFoundError

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "*.yaml")))


def write(path, text):
    path.write_text(text)
    return str(path)


def test_a_recipe_sets_fields_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.delenv("RECIPE_TEST_VAR", raising=False)
    recipe = write(tmp_path / "r.yaml", "rlhf_type: DPO\nbeta: 0.3\nlora_r: 8\nloss_type: [sigmoid, sft]\n"
                                        "loss_weights: [1.0, 0.5]\nenv:\n  RECIPE_TEST_VAR: recipe value\n")
    args, config = parse_args((CommonArgs, DPOConfig), ["--config", recipe, "--beta", "0.2", "--output_dir", "x"])
    assert (args.lora_r, config.beta) == (8, 0.2)  # from the file; the flag beats the file
    assert config.loss_type == ["sigmoid", "sft"] and config.loss_weights == [1.0, 0.5]
    assert os.environ["RECIPE_TEST_VAR"] == "recipe value"
    assert train_rlhf.pick_method(["--config", write(tmp_path / "k.yaml", "rlhf_type: KTO\n")]) == "KTO"
    assert train_rlhf.pick_method(["--config", str(tmp_path / "k.yaml"), "--rlhf_type", "SFT"]) == "SFT"


@pytest.mark.parametrize("text, words", [
    ("betta: 0.2\n", "unknown key 'betta'"),
    ("train_mode: half\n", "train_mode: 'half' is not one of full, lora, qlora"),
    ("- a\n- b\n", "expected a mapping of field names to values, got list"),
    ("beta: [0.1\n", "not valid YAML"),
    ("lora_r: 0\n", "--lora_r must be at least 1"),
])
def test_bad_recipes_are_refused_naming_the_key_and_file(text, words, tmp_path):
    recipe = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as error:
        parse_args((CommonArgs, DPOConfig), ["--config", recipe, "--output_dir", "x"])
    assert words in str(error.value)
    if "lora_r" not in text:
        assert "bad.yaml" in str(error.value)
    with pytest.raises(PathNotFoundError, match="--config: no such file"):
        parse_args((CommonArgs, DPOConfig), ["--config", str(tmp_path / "none.yaml")])


def test_run_config_json_repeats_the_run(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "d.jsonl", easy_pairs(12))
    first = tmp_path / "first"
    train_rlhf.main(base_flags(tiny_model_dir, train, first, "--rlhf_type", "DPO", "--max_steps", "1", "--beta",
                               "0.3", "--lora_r", "4", "--loss_type", "sigmoid", "sft", "--per_device_train_batch_size",
                               "2", "--eval_split_size", "2", "--learning_rate", "3e-4"))
    recorded = json.load(open(first / "run_config.json"))
    args, config = parse_args((CommonArgs, DPOConfig), ["--config", str(first / "run_config.json"),
                                                        "--output_dir", str(tmp_path / "second")])
    again = json.loads(json.dumps(run_config({"common": args, "training": config}, 1), default=str))
    assert recorded["training"].pop("output_dir") != again["training"].pop("output_dir")
    assert again == recorded
    assert recorded["training"]["beta"] == 0.3 and recorded["common"]["lora_r"] == 4


def test_run_config_keeps_the_stop_token_and_masks_the_hub_token():
    args, config = parse_args((CommonArgs, PPOConfig), ["--rlhf_type", "PPO", "--output_dir", "x",
                                                        "--hub_token", "secret", "--stop_token", "none"])
    settings = run_config({"common": args, "training": config}, 1)
    assert settings["training"]["stop_token"] == "none"
    assert settings["training"]["hub_token"] == "<HUB_TOKEN>"


def script_of(recipe: str):
    """The entry point and dataclasses a recipe is for: reward model, GKD, or train_rlhf.py's method."""
    name = os.path.basename(recipe)
    if name.startswith("reward_model"):
        return reward_model.main, (RewardModelArgs, RewardConfig)
    if name.startswith("gkd"):
        return train_gkd.main, (GKDModelArgs, GKDConfig)
    method = train_rlhf.METHODS[train_rlhf.pick_method(["--config", recipe])]
    return train_rlhf.main, (CommonArgs, method.config)


def test_there_is_a_recipe_per_stage():
    names = {os.path.relpath(r, os.path.join(ROOT, "recipes")) for r in RECIPES}
    for stage in ("reward_model", "dpo", "simpo", "kto", "sft", "ppo_separate", "ppo_adapters", "ppo_shared", "rloo",
                  "grpo", "gkd"):
        assert f"cpu/{stage}.yaml" in names
    gpu = " ".join(n for n in names if n.startswith("gpu/"))
    for kind in ("reward_model", "dpo", "rloo", "ppo", "qlora", "zero2", "zero3"):
        assert kind in gpu
    for recipe in RECIPES:
        text = open(recipe).read()
        assert "accelerate launch" in text or "python " in text, recipe  # the command is written beside it
        if "/gpu/" in recipe:
            assert "not yet run here" in text, recipe


@pytest.mark.parametrize("recipe", RECIPES, ids=[os.path.relpath(r, ROOT) for r in RECIPES])
def test_every_recipe_parses(recipe):
    _, types = script_of(recipe)
    parse_args(types, ["--config", recipe])


# Each CPU recipe trains 1 step on the tiny model: only the paths and the length of the run are overridden.
def tiny_overrides(recipe, model, data, chats, out):
    name = os.path.basename(recipe)
    flags = ["--model_name_or_path", model, "--output_dir", out, "--max_steps", "1", "--report_to", "none",
             "--save_strategy", "no", "--disable_tqdm", "true", "--eval_split_size", "0"]
    if name.startswith(("ppo", "rloo", "grpo")):
        flags += ["--reward_model_path", "none", "--reward_function", "script/example_reward.py:concise_and_polite",
                  "--train_data_path", data]
    if name.startswith("ppo"):
        flags += ["--response_length", "4", "--per_device_train_batch_size", "4", "--num_ppo_epochs", "1"]
    if name.startswith(("rloo", "grpo")):
        flags += ["--max_completion_length", "4", "--per_device_train_batch_size", "2", "--num_generations", "2"]
    if name.startswith("gkd"):
        flags += ["--teacher_model_name_or_path", model, "--train_data_path", chats, "--max_new_tokens", "4"]
    if name.startswith(("dpo", "simpo", "kto", "reward_model")):
        flags += ["--train_data_path", data]
    if name.startswith("sft"):
        flags += ["--train_data_path", chats]
    return flags


FAST = {"dpo.yaml", "reward_model.yaml", "ppo_adapters.yaml", "grpo.yaml"}
CPU = [r for r in RECIPES if "/cpu/" in r]


@pytest.mark.parametrize("recipe", [pytest.param(r, marks=() if os.path.basename(r) in FAST else pytest.mark.slow)
                                    for r in CPU], ids=[os.path.basename(r) for r in CPU])
def test_cpu_recipe_trains_one_step(recipe, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", easy_pairs(16))
    chats = write_jsonl(tmp_path / "c.jsonl", [{"messages": r["prompt"] + r["chosen"]} for r in easy_pairs(16)])
    main, _ = script_of(recipe)
    out = tmp_path / "out"
    trainer = main(["--config", recipe, *tiny_overrides(recipe, tiny_model_dir, data, chats, str(out))])
    assert trainer.state.global_step == 1
    assert (out / "run_config.json").is_file()
