"""train_rlhf.py --rlhf_type DPO on the tiny model: LoRA, full and QLoRA; what it saves reloads to the same
logits; a killed run resumes.
"""

import json
import os

import pytest
import torch
from conftest import base_flags
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOTrainer

import train_rlhf
from rlhfkit.outputs import plot_log_history

PROBE = "<|im_start|>user\nTell me about tea.<|im_end|>\n<|im_start|>assistant\nSure"


def logits_of(model, tokenizer):
    batch = tokenizer([PROBE], return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        return model(**batch).logits.float()


def history(trainer, key):
    return [e[key] for e in trainer.state.log_history if key in e]


@pytest.fixture(scope="module")
def lora_dpo(tiny_model_dir, easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "out"
    train, held_out = easy_data
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--rlhf_type", "DPO", "--eval_data_path",
                                         held_out, "--max_steps", "24", "--learning_rate", "5e-3", "--beta", "0.1"))
    return trainer, out


def test_dpo_margin_grows_on_an_easy_preference(lora_dpo):
    trainer, _ = lora_dpo
    margins = history(trainer, "rewards/margins")
    assert abs(margins[0]) < 0.05  # step 1: policy == reference (adapter starts as a no-op)
    assert sum(margins[-4:]) / 4 > 0.5
    assert history(trainer, "eval_rewards/accuracies")[-1] >= 0.9


def test_lora_adapter_reloads_to_identical_logits(lora_dpo):
    from peft import AutoPeftModelForCausalLM

    trainer, out = lora_dpo
    tokenizer = AutoTokenizer.from_pretrained(out)
    reloaded = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)
    settings = json.load(open(out / "run_config.json"))
    assert settings["method"] == settings["args"]["rlhf_type"] == "DPO" and settings["training"]["beta"] == 0.1
    assert os.path.isfile(out / "adapter_model.safetensors") and os.path.isfile(out / "trainer_state.json")


def test_curves_have_the_dpo_metrics(lora_dpo, tmp_path):
    trainer, out = lora_dpo
    names = plot_log_history(trainer.state.log_history, str(tmp_path / "c.png"))
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= set(names)
    assert open(out / "training_curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_full_fine_tuning_uses_a_reference_and_saves_a_model(tiny_model_dir, easy_data, tmp_path):
    train, _ = easy_data
    out = tmp_path / "full"
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--train_mode", "full", "--max_steps", "3",
                                         "--learning_rate", "1e-3", "--eval_split_size", "0"))
    assert trainer.ref_model is not None  # a frozen copy loaded from the same checkpoint
    assert abs(history(trainer, "rewards/margins")[0]) < 1e-4  # step 1: policy == reference, so KL-reward 0
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert os.path.isfile(out / "model.safetensors")
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)


def test_qlora_trains_a_4bit_base_and_saves_an_adapter(tiny_model_dir, easy_data, tmp_path):
    from peft import PeftModel

    train, _ = easy_data
    out = tmp_path / "qlora"
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--train_mode", "qlora", "--max_steps", "2",
                                         "--eval_split_size", "0"))
    assert trainer.model.is_loaded_in_4bit
    assert all(torch.isfinite(torch.tensor(history(trainer, "loss"))))
    assert json.load(open(out / "adapter_config.json"))["peft_type"] == "LORA"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    assert torch.isfinite(logits_of(reloaded, AutoTokenizer.from_pretrained(out))).all()


def test_killed_run_resumes_and_continues_the_step_count(tiny_model_dir, easy_data, tmp_path, monkeypatch):
    train, _ = easy_data
    out = tmp_path / "resume"
    flags = base_flags(tiny_model_dir, train, out, "--eval_split_size", "0", "--save_strategy", "steps",
                       "--save_steps", "2")
    train_rlhf.main(flags + ["--max_steps", "2"])  # stands for a run killed after its checkpoint at step 2
    assert os.path.isdir(out / "checkpoint-2")
    with pytest.raises(FileExistsError, match="is not empty; nothing is overwritten"):
        train_rlhf.main(flags + ["--max_steps", "4"])
    steps_run = []
    original = DPOTrainer.training_step
    monkeypatch.setattr(DPOTrainer, "training_step",
                        lambda self, *a, **k: steps_run.append(1) or original(self, *a, **k))
    trainer = train_rlhf.main(flags + ["--max_steps", "4", "--resume_from_checkpoint", "true"])
    assert trainer.state.global_step == 4 and len(steps_run) == 2  # steps 1-2 came from the checkpoint
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]


def test_raw_hh_rlhf_transcripts_train_dpo_and_the_reward_model_as_they_are(tiny_model_dir, tmp_path):
    from conftest import write_jsonl

    import reward_model

    rows = [{"chosen": f"\n\nHuman: Hi ({i})\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: An apple.",
             "rejected": f"\n\nHuman: Hi ({i})\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: No."}
            for i in range(8)]
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    for script, out in ((train_rlhf, tmp_path / "dpo"), (reward_model, tmp_path / "rm")):
        trainer = script.main(base_flags(tiny_model_dir, data, out, "--max_steps", "2", "--eval_split_size", "0"))
        assert trainer.state.global_step == 2
        assert all(torch.isfinite(torch.tensor(history(trainer, "loss"))))
        first = trainer.train_dataset[0]  # the multi-turn prompt made it into the tokenized text
        text = trainer.processing_class.decode(first.get("prompt_ids") or first.get("chosen_ids") or
                                               first["chosen_input_ids"])
        assert "Name a fruit." in text and "Hello!" in text


def test_rdpo_length_term_has_the_papers_sign(tiny_model_dir, tmp_path):
    """At the first step the policy is the reference (a fresh LoRA adapter), so every log-ratio is 0 and the loss is
    -log sigmoid(alpha * (|chosen| - |rejected|)) by hand: below log 2 when chosen answers are longer (R-DPO, eq. 9);
    the opposite sign would give -log sigmoid(-alpha * D), above log 2.
    """
    import math

    from conftest import write_jsonl

    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": "Sure, here is a friendly and careful answer."}],
             "rejected": [{"role": "assistant", "content": "No."}]} for i in range(8)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    losses = {}
    for alpha in ("0", "0.05"):
        trainer = train_rlhf.main(base_flags(tiny_model_dir, data, tmp_path / alpha, "--rdpo_alpha", alpha,
                                             "--max_steps", "1", "--learning_rate", "0", "--eval_split_size", "0"))
        losses[alpha] = history(trainer, "loss")[0]
        row = trainer.train_dataset[0]
        difference = len(row["chosen_ids"]) - len(row["rejected_ids"])  # answer tokens, as TRL masks them
    assert difference > 0
    assert losses["0"] == pytest.approx(math.log(2), abs=1e-4)
    expected = -math.log(1 / (1 + math.exp(-0.05 * difference)))
    assert losses["0.05"] == pytest.approx(expected, abs=1e-4) and losses["0.05"] < math.log(2)
