"""The offline preference family on the tiny model: CPO, SimPO, CPO-SimPO, ORPO, KTO, SFT and DPO's loss variants.

Each method trains on the easy preference set (`easy_data`: polite "Sure, ..." chosen vs a rude "No." rejected),
saves, and reloads to the same logits; its own signal must move the right way within a few dozen steps:
the policy's log-probability margin log p(chosen|x) - log p(rejected|x) on held-out pairs grows (pairwise methods),
KTO's implicit reward of desirable completions rises, SFT's loss falls with no loss on prompt tokens.
Data checks (KTO rows, SFT conversations, class weights, batch size) run without a model.
"""

import json
import os

import pytest
import torch
from conftest import ROOT, base_flags, easy_pairs, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

import train_rlhf
from common_args import CommonArgs
from rlhf_args.kto_config import KTOConfig, kto_class_weights
from rlhf_args.sft_config import SFTConfig
from rlhfkit.args import parse_args
from rlhfkit.data.offline import kto_data, sft_data
from rlhfkit.data.reader import DataFormatError
from rlhfkit.data.shapes import ShapeOptions, convert_row

PROBE = "<|im_start|>user\nTell me about tea.<|im_end|>\n<|im_start|>assistant\nSure"


def answer_logprob(model, tokenizer, prompt: list[dict], answer: list[dict]) -> float:
    """log p(answer | prompt) under `model`, summed over the answer tokens (chat template applied), in nats."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    ids = torch.tensor([tokenizer.apply_chat_template(prompt + answer, tokenize=True)["input_ids"]],
                       device=model.device)
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
    token_logps = logps.gather(-1, ids[0, 1:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1:].sum().item()


def mean_margin(model, tokenizer, pairs: list[dict]) -> float:
    """Mean over pairs of log p(chosen|prompt) - log p(rejected|prompt), each summed over answer tokens (nats)."""
    model.eval()
    return sum(answer_logprob(model, tokenizer, p["prompt"], p["chosen"])
               - answer_logprob(model, tokenizer, p["prompt"], p["rejected"]) for p in pairs) / len(pairs)


def logits_of(model, tokenizer):
    batch = tokenizer([PROBE], return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        return model(**batch).logits.float()


def history(trainer, key):
    return [e[key] for e in trainer.state.log_history if key in e and "eval_runtime" not in e]


# ----------------------------------------------------------------------------------------------------------
# Pairwise methods: the policy's log-probability margin grows


PAIRWISE = {
    "CPO": ["--rlhf_type", "CPO"],
    "SimPO": ["--rlhf_type", "SimPO"],
    "CPOSimPO": ["--rlhf_type", "CPOSimPO"],
    "ORPO": ["--rlhf_type", "ORPO"],
    "DPO-ipo": ["--rlhf_type", "DPO", "--loss_type", "ipo"],
    "DPO-robust": ["--rlhf_type", "DPO", "--loss_type", "robust", "--label_smoothing", "0.1"],
}


@pytest.fixture(scope="module", params=list(PAIRWISE))
def pairwise_run(request, tiny_model_dir, easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "out"
    train, held_out = easy_data
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, *PAIRWISE[request.param], "--max_steps", "10",
                                         "--per_device_train_batch_size", "2", "--learning_rate", "5e-3",
                                         "--eval_split_size", "0"))
    return request.param, trainer, out


def test_pairwise_margin_grows(pairwise_run, easy_data):
    name, trainer, _ = pairwise_run
    held_out = [json.loads(line) for line in open(easy_data[1])]
    tokenizer = trainer.processing_class
    after = mean_margin(trainer.model, tokenizer, held_out)
    with trainer.model.disable_adapter():  # the LoRA adapter off = the starting policy
        before = mean_margin(trainer.model, tokenizer, held_out)
    assert after - before > 3.0, (name, before, after)  # nats; the rude "No." starts far more likely


def test_pairwise_run_saves_and_reloads(pairwise_run):
    from peft import AutoPeftModelForCausalLM

    name, trainer, out = pairwise_run
    reloaded = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)
    settings = json.load(open(out / "run_config.json"))
    assert settings["method"] == settings["args"]["rlhf_type"] == PAIRWISE[name][1]
    state = json.load(open(out / "trainer_state.json"))
    assert state["global_step"] == 10
    assert open(out / "training_curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    if name == "DPO-robust":
        assert settings["training"]["loss_type"] == ["robust"] and settings["training"]["label_smoothing"] == 0.1
    if name == "SimPO":
        assert (settings["training"]["loss_type"], settings["training"]["cpo_alpha"]) == ("simpo", 0.0)


# ----------------------------------------------------------------------------------------------------------
# KTO


@pytest.fixture(scope="module")
def kto_run(tiny_model_dir, easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kto") / "out"
    train, held_out = easy_data
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--rlhf_type", "KTO", "--max_steps", "10",
                                         "--per_device_train_batch_size", "4", "--learning_rate", "5e-3",
                                         "--eval_split_size", "0"))
    return trainer, out


def test_kto_reward_of_desirable_completions_rises(kto_run, easy_data):
    trainer, out = kto_run
    rewards = history(trainer, "rewards/chosen")  # beta * (log pi - log ref) of the desirable rows of each step
    assert abs(rewards[0]) < 1e-3  # step 1: policy == reference
    assert sum(rewards[-3:]) / 3 > 0.5
    held_out = [json.loads(line) for line in open(easy_data[1])]
    tokenizer = trainer.processing_class
    desirable = [answer_logprob(trainer.model, tokenizer, p["prompt"], p["chosen"]) for p in held_out]
    with trainer.model.disable_adapter():
        reference = [answer_logprob(trainer.model, tokenizer, p["prompt"], p["chosen"]) for p in held_out]
    assert sum(desirable) / len(desirable) - sum(reference) / len(reference) > 5.0  # held-out desirable answers


def test_kto_saves_reloads_and_records_balanced_weights(kto_run):
    from peft import AutoPeftModelForCausalLM

    trainer, out = kto_run
    reloaded = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)
    training = json.load(open(out / "run_config.json"))["training"]
    assert (training["desirable_weight"], training["undesirable_weight"]) == (1.0, 1.0)  # 48 vs 48: balanced
    labels = trainer.train_dataset["label"]
    batches = [labels[i:i + 4] for i in range(0, 96, 4)]
    assert sum(len(set(b)) == 2 for b in batches) >= 16  # shuffled: batches mix desirable and undesirable rows


# ----------------------------------------------------------------------------------------------------------
# SFT


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, easy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "out"
    train, _ = easy_data  # a preference file: SFT trains prompt + chosen
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--rlhf_type", "SFT", "--max_steps", "12",
                                         "--learning_rate", "5e-3", "--eval_split_size", "0"))
    return trainer, out


def test_sft_loss_falls(sft_run):
    trainer, _ = sft_run
    losses, accuracy = history(trainer, "loss"), history(trainer, "mean_token_accuracy")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5  # nats per answer token
    assert accuracy[0] < 0.1 and accuracy[-1] > 0.5  # next-token accuracy on the answer tokens


def test_sft_prompt_tokens_carry_no_loss(sft_run):
    trainer, _ = sft_run
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, pair in enumerate(easy_pairs(2)):
        n_prompt = len(tokenizer.apply_chat_template(pair["prompt"], tokenize=True,
                                                     add_generation_prompt=True)["input_ids"])
        n_all = len(tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True)["input_ids"])
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        assert (labels[:n_prompt] == -100).all()  # system, user turn, template markup
        assert torch.equal(labels[n_prompt:n_all], ids[n_prompt:n_all])  # the answer and its <|im_end|>
        assert (labels[n_all:] == -100).all()  # padding
        answer = tokenizer.decode(ids[n_prompt:n_all])
        assert answer.startswith("Sure, here is a friendly fact") and "<|im_end|>" in answer


def test_sft_saves_and_reloads(sft_run):
    from peft import AutoPeftModelForCausalLM

    trainer, out = sft_run
    reloaded = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Full fine-tuning: every method saves a whole model; DPO can precompute the reference log-probs


@pytest.fixture
def no_curves(monkeypatch):
    """Skip drawing training_curves.png (matplotlib takes seconds per run; the LoRA runs above check the PNG)."""
    import rlhfkit.outputs

    monkeypatch.setattr(rlhfkit.outputs, "plot_log_history", lambda *a, **k: [])


@pytest.mark.parametrize("method", ["CPO", "SimPO", "CPOSimPO", "ORPO", "KTO", "SFT"])
def test_full_fine_tuning_saves_a_model(method, tiny_model_dir, easy_data, tmp_path, no_curves):
    out = tmp_path / "full"
    trainer = train_rlhf.main(base_flags(tiny_model_dir, easy_data[0], out, "--rlhf_type", method, "--train_mode",
                                         "full", "--max_steps", "1", "--eval_split_size", "0",
                                         "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
                                         "--warmup_steps", "0"))  # no warm-up: step 1 already changes the weights
    assert os.path.isfile(out / "model.safetensors") and not os.path.exists(out / "adapter_config.json")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.allclose(logits_of(reloaded, tokenizer), logits_of(trainer.model.eval(), tokenizer), atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert not torch.allclose(logits_of(base, tokenizer), logits_of(reloaded, tokenizer), atol=1e-5)  # it trained


def test_dpo_full_with_precomputed_reference_log_probs(tiny_model_dir, tmp_path, no_curves):
    out = tmp_path / "pre"
    train = write_jsonl(tmp_path / "train.jsonl", easy_pairs(8))  # the reference scores every row up front
    trainer = train_rlhf.main(base_flags(tiny_model_dir, train, out, "--train_mode", "full",
                                         "--precompute_ref_log_probs", "true", "--max_steps", "2",
                                         "--eval_split_size", "0", "--learning_rate", "1e-3"))
    assert trainer.ref_model is None  # the reference was scored once, up front, then freed
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    assert abs(history(trainer, "rewards/margins")[0]) < 1e-4  # step 1: policy == reference
    assert os.path.isfile(out / "model.safetensors")


# ----------------------------------------------------------------------------------------------------------
# Data and settings checks (no model)

OK_UNPAIRED = {"prompt": "Hi?", "completion": "Hello!", "label": True}


def kto_args(tmp_path, rows, *flags):
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    return parse_args((CommonArgs, KTOConfig), ["--train_data_path", path, "--output_dir", str(tmp_path / "o"),
                                                "--eval_split_size", "0", *flags])


def test_kto_unpaired_rows_are_checked_with_file_line_field(tmp_path):
    rows = [OK_UNPAIRED, {"prompt": "Hi?", "completion": "Hey", "label": "yes"},
            {"prompt": "Hi?", "completion": " ", "label": False}, {"prompt": "Hi?", "label": True},
            {"prompt": "Hi?", "completion": "Hey", "label": 1}]
    args, config = kto_args(tmp_path, rows)
    with pytest.raises(DataFormatError) as e:
        kto_data(args, config, None, "", log=lambda *_: None)
    assert [str(p) for p in e.value.problems] == [
        f"{args.train_data_path}:2: field 'label': expected true or false (a JSON boolean), got str 'yes'",
        f"{args.train_data_path}:3: field 'completion': empty answer",
        f"{args.train_data_path}:4: field 'completion': missing field (an unpaired KTO row needs prompt, "
        f"completion and label)",
        f"{args.train_data_path}:5: field 'label': expected true or false (a JSON boolean), got int 1"]


def test_kto_converts_pairs_with_a_note_and_balances_weights(tiny_model_dir, tmp_path):
    pairs = easy_pairs(6)
    unpaired = [{"prompt": f"Question {i}?", "completion": "No.", "label": False} for i in range(8)]
    args, config = kto_args(tmp_path, pairs + unpaired)
    said = []
    train, held_out = kto_data(args, config, AutoTokenizer.from_pretrained(tiny_model_dir), "", log=said.append)
    assert len(train) == 20 and not held_out
    assert any("chosen -> desirable (label true), rejected -> undesirable (label false)" in s for s in said)
    assert sum(r["label"] for r in train) == 6
    assert 1 <= config.desirable_weight * 6 / (config.undesirable_weight * 14) <= 4 / 3
    assert config.undesirable_weight == 1.0  # the rarer desirable class is up-weighted
    assert [r["label"] for r in train] != sorted([r["label"] for r in train], reverse=True)  # shuffled


@pytest.mark.parametrize("n_d, n_u, given, expected", [
    (10, 100, (None, None), (7 / 6 * 10, 1.0)),  # rare desirable rows are up-weighted to the ratio 7/6
    (100, 10, (None, None), (1.0, 10 / (7 / 6))),  # rare undesirable rows likewise
    (60, 50, (None, None), (1.0, 1.0)),  # 1.2 is already in [1, 4/3]
    (10, 100, (2.0, None), (2.0, 2.0 * 10 / (7 / 6 * 100))),  # a weight the user set is kept
    (10, 100, (None, 0.5), (7 / 6 * 0.5 * 10, 0.5)),
    (10, 100, (1.0, 1.0), (1.0, 1.0)),  # both set: kept as given, even out of range
])
def test_kto_class_weights_follow_the_paper_range(n_d, n_u, given, expected):
    d, u = kto_class_weights(n_d, n_u, *given)
    assert (d, u) == pytest.approx(expected)
    if given != (1.0, 1.0):
        assert 1 <= d * n_d / (u * n_u) <= 4 / 3


def test_kto_batch_size_one_is_refused_with_the_reason(tiny_model_dir, easy_data, tmp_path, monkeypatch):
    monkeypatch.setattr("rlhfkit.methods.offline.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match=r"per_device_train_batch_size >= 2 \(got 1\).*KL reference point"):
        train_rlhf.main(base_flags(tiny_model_dir, easy_data[0], tmp_path / "o", "--rlhf_type", "KTO",
                                   "--per_device_train_batch_size", "1"))


def test_simpo_and_cposimpo_settings_are_guarded():
    from rlhf_args.cposimpo_config import CPOSimPOConfig
    from rlhf_args.simpo_config import SimPOConfig

    with pytest.raises(ValueError, match="use --rlhf_type CPOSimPO"):
        SimPOConfig(output_dir="x", cpo_alpha=1.0)
    with pytest.raises(ValueError, match="use --rlhf_type SimPO"):
        CPOSimPOConfig(output_dir="x", cpo_alpha=0.0)
    simpo = SimPOConfig(output_dir="x")
    assert simpo.simpo_gamma / simpo.beta == pytest.approx(0.55)  # SimPO README, Llama3-Instruct preset


def test_sft_conversations_become_prompt_completion_rows():
    conversation = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
                                 {"role": "assistant", "content": "4"}]}
    shape, rows = convert_row(conversation, "sft")
    assert shape == "messages" and len(rows) == 2
    assert rows[0] == {"prompt": conversation["messages"][:2], "completion": [conversation["messages"][2]]}
    assert rows[1] == {"prompt": conversation["messages"][:4], "completion": [conversation["messages"][4]]}
    assert convert_row(conversation, "sft", ShapeOptions(assistant_turns="last"))[1] == rows[1:]
    assert convert_row({"prompt": "q", "chosen": "good", "rejected": "bad"}, "sft")[1] == [
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "good"}]}]
    assert convert_row({"prompt": "q", "chosen": "good", "rejected": "bad"}, "unpaired")[1][1]["label"] is False


def test_sft_bad_rows_name_file_line_field(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            {"messages": [{"role": "user", "content": "Hi"}]},
            {"messages": [{"role": "assistant", "content": "Hello"}]},
            {"text": "plain text"},
            {"prompt": "q", "completion": ""}]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    args, config = parse_args((CommonArgs, SFTConfig), ["--train_data_path", path, "--output_dir", "x"])
    with pytest.raises(DataFormatError) as e:
        sft_data(args, config, None, "", log=lambda *_: None)
    assert [str(p) for p in e.value.problems] == [
        f"{path}:2: field 'messages[0].role': the conversation must end with the assistant answer to train on, "
        f"not a 'user' turn",
        f"{path}:3: field 'messages[0].role': the final assistant turn must follow a user (or tool) turn",
        f"{path}:4: field 'messages': missing field: an SFT row needs 'messages' (a conversation ending with an "
        f"assistant turn), or 'prompt' + 'completion', or 'prompt' + 'chosen'",
        f"{path}:5: field 'completion': empty answer"]


def test_example_sft_file_loads(tiny_model_dir):
    example = os.path.join(ROOT, "data_example", "sft_data.jsonl")
    args, config = parse_args((CommonArgs, SFTConfig), ["--train_data_path", example,
                                                        "--output_dir", "x", "--eval_split_size", "0"])
    train, _ = sft_data(args, config, AutoTokenizer.from_pretrained(tiny_model_dir), "", log=lambda *_: None)
    lines = [json.loads(line) for line in open(example)]
    assert len(lines) >= 40
    assert sum(len([m for m in r.get("messages", []) if m["role"] == "user"]) > 1 for r in lines) >= 3
    assert sum(r.get("messages", [{}])[0].get("role") == "system" for r in lines) >= 3
    assert len(train) > len(lines)  # multi-turn conversations give one row per assistant turn
