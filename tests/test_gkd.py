"""train_gkd.py on tiny models: supervised KD / mixed / on-policy GKD / SeqKD each train and save; the student's
KL to the teacher falls; mismatched tokenizers are refused before any weights load; the data checks.
"""

import json
import os

import pytest
import torch
from conftest import TINY, base_flags, easy_pairs, write_jsonl
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import train_gkd
from rlhfkit.data.distillation import distillation_data, load_distillation_file
from rlhfkit.data.reader import DataFormatError


def chats(n, seed=0):
    """`easy_pairs` as GKD rows in the seed's shape: `messages` (ending with the polite answer) plus a `prompt` list."""
    return [{"messages": r["prompt"] + r["chosen"], "prompt": r["prompt"]} for r in easy_pairs(n, seed)]


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, tmp_path_factory):
    """A different tiny random Llama whose output layer is scaled up, so its next-token distributions are peaked
    and far from the student's (tiny_model_dir): the KL between the two starts large.
    """
    path = str(tmp_path_factory.mktemp("teacher"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY)
    teacher = LlamaForCausalLM(config)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(20.0)
    teacher.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gkd_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gkd_data")
    rows = chats(20)
    return write_jsonl(folder / "train.jsonl", rows[:16]), write_jsonl(folder / "eval.jsonl", rows[16:])


def gkd_flags(student, teacher, train, out, *extra):
    return base_flags(student, train, out, "--teacher_model_name_or_path", teacher, "--max_new_tokens", "6",
                      "--per_device_train_batch_size", "2", *extra)


def record_generations(monkeypatch):
    """Record, for each sampling step, whether the student (a LoRA PeftModel) or the teacher wrote the answers."""
    calls = []
    original = train_gkd.GKDTrainer.generate_on_policy_outputs

    def spy(model, inputs, generation_config):
        calls.append("student" if hasattr(model, "peft_config") else "teacher")
        return original(model, inputs, generation_config)

    monkeypatch.setattr(train_gkd.GKDTrainer, "generate_on_policy_outputs", staticmethod(spy))
    return calls


@pytest.mark.parametrize("lmbda, seq_kd, steps, expected", [
    ("0", "false", 2, []),                                  # supervised KD: dataset answers only
    ("1", "false", 2, ["student"] * 2),                     # on-policy GKD: every step samples from the student
    ("0", "true", 2, ["teacher"] * 2),                      # SeqKD: every step samples from the teacher
    ("0.5", "false", 6, None),                              # mixed: some steps on-policy, some not
])
def test_each_method_trains_and_saves(teacher_dir, tiny_model_dir, gkd_data, tmp_path, monkeypatch,
                                      lmbda, seq_kd, steps, expected):
    train, held_out = gkd_data
    calls = record_generations(monkeypatch)
    out = tmp_path / "out"
    trainer = train_gkd.main(gkd_flags(tiny_model_dir, teacher_dir, train, out, "--lmbda", lmbda, "--seq_kd", seq_kd,
                                       "--max_steps", str(steps), "--eval_data_path", held_out))
    if expected is not None:
        assert calls == expected
    else:
        assert set(calls) == {"student"} and 0 < len(calls) < steps  # seed 42: a mix of the two kinds of step
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == steps and all(0 < loss < 1e4 for loss in losses)  # teacher != student: divergence > 0
    recorded = json.load(open(out / "run_config.json"))
    settings = recorded["training"]
    assert (settings["lmbda"], settings["seq_kd"]) == (float(lmbda), seq_kd == "true") and recorded["method"] == "GKD"
    for name in ("adapter_model.safetensors", "trainer_state.json", "training_curves.png"):
        assert os.path.isfile(out / name), name
    assert [e["step"] for e in trainer.state.log_history if "eval_loss" in e] == [0, steps]  # before and after


def forward_kl(student, teacher, tokenizer, rows):
    """Mean KL(teacher || student) per answer token on a fixed batch, as GKD's loss computes it with beta=0."""
    from trl.experimental.utils import DataCollatorForChatML

    batch = DataCollatorForChatML(tokenizer=tokenizer, max_length=256)([{"messages": r["messages"]} for r in rows])
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return float(train_gkd.GKDTrainer.generalized_jsd_loss(s, t, batch["labels"][:, 1:], beta=0.0))


@pytest.mark.parametrize("lmbda, beta, most", [
    ("0", "0", 0.5),    # supervised KD with forward KL: trains on exactly the measured kind of text
    ("1", "0.5", 0.85),  # on-policy GKD with JSD(0.5): trains on the student's own samples, measured on the data
])
def test_student_kl_to_the_teacher_falls(teacher_dir, tiny_model_dir, gkd_data, tmp_path, lmbda, beta, most):
    train, held_out = gkd_data
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    fixed = [json.loads(line) for line in open(held_out)]
    before = forward_kl(LlamaForCausalLM.from_pretrained(tiny_model_dir).eval(), teacher, tokenizer, fixed)
    trainer = train_gkd.main(gkd_flags(tiny_model_dir, teacher_dir, train, tmp_path / "kl", "--train_mode", "full",
                                       "--lmbda", lmbda, "--beta", beta, "--learning_rate", "1e-2", "--max_steps",
                                       "20", "--max_new_tokens", "12", "--eval_split_size", "0", "--warmup_steps", "0",
                                       "--lr_scheduler_type", "constant"))
    after = forward_kl(trainer.model.eval(), teacher, tokenizer, fixed)
    assert before > 4.0 and after < most * before, (before, after)  # before: 4.86 nats per answer token
    saved = LlamaForCausalLM.from_pretrained(tmp_path / "kl").eval()
    assert forward_kl(saved, teacher, tokenizer, fixed) == pytest.approx(after, rel=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Teacher / student checks (tokenizer and config files only)


@pytest.fixture(scope="module")
def other_template_dir(teacher_dir, tmp_path_factory):
    """The teacher's config + tokenizer with a different chat template (no weights needed)."""
    path = str(tmp_path_factory.mktemp("other_template"))
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    tokenizer.chat_template = tokenizer.chat_template.replace("<|im_start|>", "<|im_start|> ")
    tokenizer.save_pretrained(path)
    LlamaConfig.from_pretrained(teacher_dir).save_pretrained(path)
    return path


def test_mismatched_tokenizer_stops_before_any_weights_load(tiny_model_dir, other_template_dir, gkd_data, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(train_gkd, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match="teacher and student tokenizers differ") as error:
        train_gkd.main(gkd_flags(tiny_model_dir, other_template_dir, gkd_data[0], tmp_path / "x", "--max_steps", "1"))
    message = str(error.value)
    assert "chat template: differs from character" in message and "same model family" in message
    assert "vocabulary" not in message


def test_tokenizer_differences_name_the_tokens(tiny_model_dir):
    student = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert train_gkd.tokenizer_differences(student, teacher) == []
    teacher.add_tokens(["<extra_tok>"])
    teacher.chat_template = None
    differences = train_gkd.tokenizer_differences(student, teacher)
    assert differences[0] == (f"vocabulary: student {len(student)} tokens, teacher {len(student) + 1}; "
                              f"1 only in the teacher (e.g. '<extra_tok>')")
    assert differences[1] == "chat template: only the student has one"


def test_a_student_larger_than_the_teacher_gets_a_warning(tiny_model_dir, tmp_path):
    big = str(tmp_path / "big")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_model_dir, num_hidden_layers=4)).save_pretrained(big)
    tokenizer.save_pretrained(big)
    assert train_gkd.parameter_count(big) > train_gkd.parameter_count(tiny_model_dir) > 6_000_000
    said = []
    train_gkd.check_teacher_student(big, tiny_model_dir, tokenizer, log=said.append)
    assert any("WARNING: the student (6.44M parameters) is larger than the teacher (6.37M)" in s for s in said), said
    said.clear()
    train_gkd.check_teacher_student(tiny_model_dir, big, tokenizer, log=said.append)
    assert not any("WARNING" in s for s in said)


# ---------------------------------------------------------------------------------------------------------
# Data


class Settings:
    def __init__(self, lmbda=0.5, seq_kd=False, max_length=1024, long_rows="drop", seed=0):
        self.lmbda, self.seq_kd, self.max_length, self.long_rows, self.seed = lmbda, seq_kd, max_length, long_rows, seed


class Paths:
    def __init__(self, train, eval_path=None, model="x"):
        self.train_data_path, self.eval_data_path, self.model_name_or_path = train, eval_path, model
        self.drop_bad_rows, self.eval_split_size = False, 0


def test_bad_rows_are_named_by_file_line_and_field(tmp_path):
    good = chats(1)[0]
    path = write_jsonl(tmp_path / "bad.jsonl", [
        good,
        {"messages": good["messages"], "prompt": [{"role": "user", "content": "something else"}]},
        {"messages": good["messages"][:-1]},
        {"text": "no chat"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]},
    ])
    with pytest.raises(DataFormatError) as error:
        load_distillation_file(path)
    message = str(error.value)
    assert f"{path}:2: field 'prompt': differs from messages[:-1]" in message
    assert f"{path}:3: field 'messages': must end with the assistant answer to distil on, not 'user'" in message
    assert f"{path}:4: field 'messages': missing field" in message
    assert f"{path}:5: field 'messages[1].role': unknown role 'robot'" in message
    assert len(load_distillation_file(path, drop_bad_rows=True, log=lambda s: None)) == 1


def test_prompt_only_rows_need_sampled_answers(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = write_jsonl(tmp_path / "mixed.jsonl", chats(3) + [{"prompt": "Tell me about tea."}])
    with pytest.raises(DataFormatError, match=r"mixed.jsonl:4: field 'messages': prompt only \(no answer\); with "
                                              r"lmbda=0.5 and seq_kd off"):
        distillation_data(Paths(path), Settings(lmbda=0.5), tokenizer, log=lambda s: None)
    for settings in (Settings(lmbda=1.0), Settings(lmbda=0.0, seq_kd=True)):
        train, _ = distillation_data(Paths(path), settings, tokenizer, log=lambda s: None)
        assert train[3] == {"messages": [{"role": "user", "content": "Tell me about tea."},
                                         {"role": "assistant", "content": ""}]}  # placeholder, replaced by samples
        assert set(train[0]) == {"messages"}  # the seed's list-valued 'prompt' is dropped (TRL's collator crash)


def test_rows_longer_than_max_length_are_counted_then_dropped_or_cut(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    short = chats(2)
    long_prompt = {"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "Ok."}]}
    long_answer = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 80}]}
    path = write_jsonl(tmp_path / "long.jsonl", short + [long_prompt, long_answer])
    said = []
    train, _ = distillation_data(Paths(path), Settings(max_length=60), tokenizer, log=said.append)
    assert len(train) == 2 and "2 of 4 training rows are longer than max_length=60 tokens: dropped" in said[-1]
    said.clear()
    train, _ = distillation_data(Paths(path), Settings(max_length=60, long_rows="cut"), tokenizer, log=said.append)
    assert len(train) == 3 and train[2] == long_prompt  # the long answer leaves no prompt token: dropped anyway
    assert "2 of 4 training rows are longer than max_length=60 tokens: cut" in said[-1]
    assert "1 whose answer alone fills max_length dropped" in said[-1]


def test_cut_rows_train(teacher_dir, tiny_model_dir, tmp_path):
    long_prompt = [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "Ok."}]
    rows = chats(4) + [{"messages": long_prompt}]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    trainer = train_gkd.main(gkd_flags(tiny_model_dir, teacher_dir, train, tmp_path / "out", "--lmbda", "0",
                                       "--max_length", "60", "--long_rows", "cut", "--max_steps", "3",
                                       "--eval_split_size", "0"))
    assert trainer.state.global_step == 3 and len(trainer.train_dataset) == 5


def test_qlora_student_with_a_4bit_teacher(teacher_dir, tiny_model_dir, gkd_data, tmp_path):
    trainer = train_gkd.main(gkd_flags(tiny_model_dir, teacher_dir, gkd_data[0], tmp_path / "q", "--train_mode",
                                       "qlora", "--teacher_quantization", "4bit", "--lmbda", "0", "--max_steps", "2",
                                       "--eval_split_size", "0"))
    assert trainer.model.is_loaded_in_4bit and trainer.teacher_model.is_loaded_in_4bit
    assert not any(p.requires_grad for p in trainer.teacher_model.parameters())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(0 < loss < 1e4 for loss in losses)
    assert json.load(open(tmp_path / "q" / "adapter_config.json"))["peft_type"] == "LORA"
