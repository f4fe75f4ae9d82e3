"""`--config FILE`: YAML recipes and a run's own run_config.json set any field; flags override them; bad keys and
values are refused before anything loads. Every recipe in recipes/ parses, and the CPU ones train on the tiny model.
"""

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
from rlhfkit.args import parse_args, run_config
from rlhfkit.errors import ConfigError, PathNotFoundError

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
    again = json.loads(json.dumps(run_config("DPO", args, config, 1), default=str))
    assert recorded["training"].pop("output_dir") != again["training"].pop("output_dir")
    assert again == recorded
    assert recorded["training"]["beta"] == 0.3 and recorded["args"]["lora_r"] == 4


def test_run_config_keeps_the_stop_token_and_masks_the_hub_token():
    args, config = parse_args((CommonArgs, PPOConfig), ["--rlhf_type", "PPO", "--output_dir", "x",
                                                        "--hub_token", "secret", "--stop_token", "none"])
    settings = run_config("DPO", args, config, 1)
    assert settings["training"]["stop_token"] == "none"
    assert settings["training"]["hub_token"] == "<HUB_TOKEN>"


def script_of(recipe: str):
    """The entry point and dataclasses a recipe is for: reward model, GKD, or train_rlhf.py's method."""
    name = os.path.basename(recipe)
    if name.startswith("reward_model"):
        return reward_model.main, (RewardModelArgs, RewardConfig)
    if name.startswith("gkd"):
        return train_gkd.main, (GKDModelArgs, GKDConfig)
    return train_rlhf.main, (CommonArgs, train_rlhf.config_class(train_rlhf.pick_method(["--config", recipe])))


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


# Values of the wrong YAML type are refused by field type, before anything loads: one line naming file, key, type.
@pytest.mark.parametrize("text, expected", [
    ("lora_target_modules: [q_proj, v_proj]\n",
     "lora_target_modules: expected a string, got a list ['q_proj', 'v_proj']"),
    ("train_data_path: 0.5\n",
     "train_data_path: expected a list (a YAML list, as TRL's own configs take) or a string, got float 0.5"),
])
def test_a_recipe_value_of_the_wrong_type_is_one_error_line(text, expected, tmp_path, monkeypatch, capsys):
    import transformers

    from rlhfkit.errors import run_cli

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("weights were loaded")))
    recipe = write(tmp_path / "r.yaml", text)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_rlhf.main, ["--config", recipe, "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert err == f"error: --config {recipe}: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_the_command_line_refuses_a_list_for_a_string_field(tmp_path):
    import subprocess
    import sys

    recipe = write(tmp_path / "x.yaml", "rlhf_type: DPO\nlora_target_modules: [q_proj, v_proj]\n")
    done = subprocess.run([sys.executable, "train_rlhf.py", "--config", recipe, "--output_dir", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", RLHF_DEBUG="0"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: --config {recipe}: lora_target_modules: expected a "
                                                    f"string, got a list ['q_proj', 'v_proj']")


A_LIST = "a list (a YAML list, as TRL's own configs take)"


@pytest.mark.parametrize("text, words", [
    ("train_data_ratios: 0.5\n", f"train_data_ratios: expected {A_LIST} or null, got float 0.5"),
    ("train_data_ratios: [0.5, x]\n", "train_data_ratios: expected a list of numbers or null, got a list [0.5, 'x']"),
    ("loss_weights: 1.0\n", f"loss_weights: expected {A_LIST} or null, got float 1.0"),
    ("loss_type: 3\n", f"loss_type: expected {A_LIST}, got int 3"),
    ("loss_type: sigmoid\n", f"loss_type: expected {A_LIST}, got str 'sigmoid'"),
    ("lora_r: true\n", "lora_r: expected an integer, got bool True"),
    ("lora_r: 8.5\n", "lora_r: expected an integer, got float 8.5"),
    ("beta: [0.1]\n", "beta: expected a number, got a list [0.1]"),
    ("beta: high\n", "beta: expected a number, got str 'high'"),
    ("use_dora: 1\n", "use_dora: expected a boolean (true or false), got int 1"),
    ("model_name_or_path: null\n", "model_name_or_path: expected a string, got null"),
    ("eval_data_path: {a: 1}\n", "eval_data_path: expected a string or null, got a mapping {'a': 1}"),
])
def test_recipe_values_are_checked_against_the_field_types(text, words, tmp_path):
    recipe = write(tmp_path / "t.yaml", text)
    with pytest.raises(ConfigError) as error:
        parse_args((CommonArgs, DPOConfig), ["--config", recipe, "--output_dir", "x"])
    assert str(error.value) == f"--config {recipe}: {words}"


def test_recipe_values_that_the_command_line_would_take_are_kept(tmp_path):
    recipe = write(tmp_path / "ok.yaml", "lora_r: 8\nlora_dropout: 0\nlearning_rate: 1e-4\nuse_dora: 'true'\n"
                                         "train_data_path: [a.jsonl, b.jsonl]\ntrain_data_ratios: [1, 0.5]\n"
                                         "eval_data_path: null\nloss_weights: null\nreport_to: [none]\n"
                                         "drop_bad_rows: 'yes'\n")  # as --drop_bad_rows yes
    args, config = parse_args((CommonArgs, DPOConfig), ["--config", recipe, "--output_dir", "x"])
    assert (args.lora_r, args.lora_dropout, config.learning_rate, args.use_dora) == (8, 0, 1e-4, True)
    assert args.train_data_path == ["a.jsonl", "b.jsonl"] and args.train_data_ratios == [1, 0.5]
    assert args.eval_data_path is None and args.drop_bad_rows is True


def test_help_comes_from_the_field_metadata(capsys):
    with pytest.raises(SystemExit):
        parse_args((CommonArgs, PPOConfig), ["--rlhf_type", "PPO", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model_mode {separate,adapters,shared}" in text and "--kl_estimator {k1,k2,k3}" in text
    assert "one adapter for policy and value, the value head on the policy's last hidden state" in text
    assert "off on CPU (30% faster) (default: None)" in text


def test_choices_are_checked_for_configs_built_in_python():
    with pytest.raises(ConfigError, match=r"--kl_estimator must be one of k1, k2, k3, got 'k9'"):
        PPOConfig(output_dir="x", kl_estimator="k9")
    with pytest.raises(ConfigError, match=r"--value_train_mode must be one of full, lora, qlora, got 'half'"):
        PPOConfig(output_dir="x", value_train_mode="half")
    assert PPOConfig(output_dir="x", value_train_mode=None).value_train_mode is None
    with pytest.raises(ConfigError, match=r"--stop_token must be one of eos, none \(invalid choice: 'never'\)"):
        parse_args((CommonArgs, PPOConfig), ["--rlhf_type", "PPO", "--stop_token", "never"])
