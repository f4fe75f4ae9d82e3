"""reward_model.py on the tiny model: it learns an easy preference, its scores ignore padding, and what it saves
reloads with the trained score head.
"""

import json
import os

import pytest
import torch
from conftest import base_flags
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import reward_model


def score(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**batch).logits[:, 0]


@pytest.fixture(scope="module")
def lora_rm(tiny_model_dir, easy_data, tmp_path_factory):
    """A LoRA reward model trained for 36 steps on the easy set; returns (trainer, output_dir)."""
    out = tmp_path_factory.mktemp("rm") / "out"
    train, held_out = easy_data
    trainer = reward_model.main(base_flags(tiny_model_dir, train, out, "--eval_data_path", held_out,
                                           "--max_steps", "36", "--learning_rate", "3e-3", "--lora_r", "8",
                                           "--per_device_train_batch_size", "4"))
    return trainer, str(out)


def test_accuracy_rises_well_above_chance(lora_rm):
    trainer, _ = lora_rm
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert evals[-1]["eval_accuracy"] >= 0.9
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6


def test_saved_lora_reward_model_reloads_with_its_score_head(lora_rm):
    from peft import AutoPeftModelForSequenceClassification

    trainer, out = lora_rm
    assert "score" in json.load(open(os.path.join(out, "adapter_config.json")))["modules_to_save"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSure, here is a friendly fact about tea."
             "<|im_end|>\n",
             "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nNo.<|im_end|>\n"]
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()
    trained = trainer.model.eval()
    assert torch.allclose(score(reloaded, tokenizer, texts), score(trained, tokenizer, texts), atol=1e-5)
    assert score(reloaded, tokenizer, texts)[0] > score(reloaded, tokenizer, texts)[1]
    # the resolved config, the log history and the curves are there too
    settings = json.load(open(os.path.join(out, "run_config.json")))
    assert settings["method"] == "reward model" and settings["args"]["lora_r"] == 8
    assert settings["training"]["learning_rate"] == 3e-3
    assert settings["world_size"] == 1 and settings["training"]["bf16"] is False
    history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    assert any("eval_accuracy" in e for e in history)
    assert open(os.path.join(out, "training_curves.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_score_does_not_change_with_padding(tiny_model_dir):
    """pad == eos for SmolLM2; the score must come from the last real token whatever padding follows."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    short = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    alone = score(model, tokenizer, [short])
    padded = score(model, tokenizer, [short, short + "and a much longer answer " * 5])[0]
    assert torch.allclose(alone[0], padded, atol=1e-5)


def test_full_fine_tuning_saves_a_loadable_model(tiny_model_dir, easy_data, tmp_path, capsys):
    train, _ = easy_data
    out = tmp_path / "full"
    trainer = reward_model.main(base_flags(tiny_model_dir, train, out, "--train_mode", "full", "--max_steps", "2",
                                           "--eval_split_size", "0"))
    model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert os.path.isfile(out / "model.safetensors")
    assert torch.allclose(score(model, tokenizer, ["hello there"]), score(trainer.model.eval(), tokenizer,
                                                                          ["hello there"]), atol=1e-5)
    # no held-out rows: the degenerate-answer probe runs on training prompts and says so
    assert "no held-out rows: probing 48 TRAINING prompts" in capsys.readouterr().out
    assert json.load(open(out / "rm_probe.json"))["n_prompts"] == 48


def test_qlora_reward_model_trains_with_an_fp32_score_head_on_cpu(tiny_model_dir, easy_data, tmp_path):
    train, _ = easy_data
    out = tmp_path / "qlora"
    trainer = reward_model.main(base_flags(tiny_model_dir, train, out, "--train_mode", "qlora", "--max_steps", "2",
                                           "--eval_split_size", "0"))
    assert trainer.model.is_loaded_in_4bit
    head = [p for n, p in trainer.model.named_parameters() if "score" in n and p.requires_grad]
    assert head and all(p.dtype == torch.float32 for p in head)  # TRL's bf16 cast is undone for fp32 runs
    assert "score" in json.load(open(out / "adapter_config.json"))["modules_to_save"]


def test_the_new_score_head_is_not_reported_as_a_loading_problem(tiny_model_dir):
    """transformers reports `score.weight | MISSING` whenever a causal LM loads as a sequence classifier; the toolkit
    drops that one report where the head is new by design, and keeps every other report.
    """
    import logging

    from transformers import AutoModelForSequenceClassification

    from rlhfkit.log import _OnlyMissingScoreHead, score_head_from_elsewhere

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(str(record.msg))

    logger = logging.getLogger("transformers.modeling_utils")
    keep = Keep()
    logger.addHandler(keep)
    try:
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        assert any("LOAD REPORT" in r and "score.weight" in r for r in records)  # what transformers prints
        records.clear()
        with score_head_from_elsewhere():
            AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        assert not any("LOAD REPORT" in r for r in records)
    finally:
        logger.removeHandler(keep)
    other = logging.LogRecord("t", logging.WARNING, "", 0, "X LOAD REPORT from: p\nKey | Status\n---+---\n"
                              "score.weight | MISSING\nmodel.norm.weight | MISSING\n", None, None)
    assert _OnlyMissingScoreHead().filter(other)  # a second missing weight is still reported


def test_odin_loss_by_hand():
    from rlhfkit.methods.odin import answer_lengths, odin_loss

    # two pairs: answers (chosen 1, chosen 2, rejected 1, rejected 2) of lengths 4, 2, 1, 1 tokens
    scores = torch.tensor([[1.0, 0.5], [0.0, 0.2], [0.0, 0.1], [0.5, 0.1]])  # (r_Q, r_L) per answer
    lengths = torch.tensor([4.0, 2.0, 1.0, 1.0])
    heads = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, -0.5]])  # w_Q . w_L = 0.5 + 0 - 1 = -0.5
    loss, stats = odin_loss(scores, lengths, heads, length_weight=1.0, orthogonal_weight=2.0)
    ranking = -torch.nn.functional.logsigmoid(torch.tensor([1.5 - 0.1, 0.2 - 0.6])).mean()
    corr = lambda x: float(torch.corrcoef(torch.stack([torch.tensor(x), lengths]))[0, 1])  # noqa: E731
    expected = ranking + abs(corr([1.0, 0.0, 0.0, 0.5])) - corr([0.5, 0.2, 0.1, 0.1]) + 2.0 * 0.5
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    assert stats["accuracy"] == 0.5 and stats["quality_accuracy"] == 0.5  # pair 1 right, pair 2 wrong (both)
    assert float(stats["corr_length_length"]) == pytest.approx(corr([0.5, 0.2, 0.1, 0.1]), abs=1e-6)
    # right-padded [chosen; rejected] ids sharing a 3-token prompt: answers of 2 and 1 tokens, pad 0
    ids = torch.tensor([[7, 8, 9, 1, 2], [7, 8, 9, 3, 0]])
    assert answer_lengths(ids, (ids != 0).long()).tolist() == [2.0, 1.0]


def confounded_pairs(n, seed=0):
    """Chosen answers say "Sure", rejected ones "No"; chosen answers are also longer on average (a length confound)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = "Sure, " + " ".join(["really"] * rng.randint(2, 12)) + " glad to help."
        rejected = "No, " + " ".join(["really"] * rng.randint(0, 8)) + " not now."
        rows.append({"prompt": [{"role": "user", "content": f"Can you help with task {i}?"}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def test_odin_quality_head_tracks_length_less_and_loads_as_a_plain_reward_model(tiny_model_dir, tmp_path):
    from conftest import write_jsonl
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file

    from rlhfkit.data.offline import load_preference_file
    from rlhfkit.report.rm_accuracy import preference_accuracy
    from rlhfkit.reward import load_reward_model, reward_scorer

    pairs = confounded_pairs(80)
    train = write_jsonl(tmp_path / "train.jsonl", pairs[:64])
    held_out = write_jsonl(tmp_path / "eval.jsonl", pairs[64:])
    correlation = {}
    for name, extra in (("plain", []), ("odin", ["--length_debias", "odin"])):
        out = tmp_path / name
        trainer = reward_model.main(base_flags(tiny_model_dir, train, out, "--eval_data_path", held_out,
                                               "--max_steps", "32", "--learning_rate", "3e-3", "--lora_r", "8",
                                               "--degenerate_negatives_ratio", "0", "--probe_prompts", "0", *extra))
        model, tokenizer = load_reward_model(str(out), device="cpu")
        result = preference_accuracy(reward_scorer(model, tokenizer), tokenizer, load_preference_file(held_out), None)
        correlation[name] = result["length_correlation"]
        saved = json.load(open(out / "rm_accuracy.json"))
        assert saved["length_correlation"] == pytest.approx(result["length_correlation"], abs=1e-4)
    logged = [e for e in trainer.state.log_history if "odin/corr_length_length" in e]
    assert logged and all(abs(e["odin/corr_quality_length"]) <= 1 for e in logged)
    assert load_file(str(tmp_path / "odin" / "odin_length_head.safetensors"))["weight"].shape == (1, 64)
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(str(tmp_path / "odin"), num_labels=1)
    assert reloaded.score.modules_to_save["default"].weight.shape == (1, 64)  # the documented way: one output
    assert abs(correlation["odin"]) < abs(correlation["plain"]), correlation
