"""rlhfkit.data.degenerate and rlhfkit.report.rm_probe: the degenerate answers, the augmentation, the probe's numbers
for hand-built scorers, the saved report, the CLI, and (on the tiny model) that reward_model.py with degenerate
negatives ranks the chosen answer far above empty and truncated ones where plain training does not.
"""

import json
import pathlib
import random

import pytest
import torch
from conftest import base_flags, demo_tokenizer, write_jsonl

import reward_model
from rlhfkit.data.degenerate import (
    VARIANTS,
    augment_with_degenerate_negatives,
    degenerate_answer,
    parse_variant_weights,
)
from rlhfkit.report import rm_probe
from rlhfkit.report.probe_table import format_probe_table, print_saved_probe
from rlhfkit.report.rm_probe import run_probe, save_probe_report
from rlhfkit.reward import load_reward_model, reward_scorer

ANSWER = "Paris is the capital of France and its largest city by far."  # 12 words


def make_row(i, answer=None):
    answer = answer if answer is not None else f"Answer number {i} explains the topic in several clear words here."
    return {
        "prompt": [{"role": "user", "content": f"Question {i}?"}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": f"bad {i}"}],
    }


def text(ans):
    return ans if isinstance(ans, str) else ans[-1]["content"]


# ----------------------------------------------------------------- degenerate_answer
def test_degenerate_answer_each_variant():
    assert degenerate_answer(ANSWER, "empty") == ""
    assert degenerate_answer(ANSWER, "filler") == "Ok."
    assert degenerate_answer(ANSWER, "truncated") == "Paris is the"  # 12 // 4 = 3 words
    assert degenerate_answer(ANSWER, "repeated") == "\n\n".join([ANSWER] * 3)
    assert degenerate_answer(ANSWER, "off_topic", other_answer="Use a hash map.") == "Use a hash map."


def test_truncated_is_prefix_and_about_a_quarter():
    for n_words in (2, 3, 4, 7, 8, 9, 40, 101):
        answer = "  ".join(f"w{k}" for k in range(n_words))  # odd spacing must be kept
        t = degenerate_answer(answer, "truncated")
        assert answer.startswith(t)
        n_t = len(t.split())
        assert n_t == max(1, n_words // 4)
        assert 1 <= n_t < n_words
    assert degenerate_answer("Yes.", "truncated") == "Yes."


def test_unknown_variant_and_missing_other_answer():
    with pytest.raises(ValueError) as e:
        degenerate_answer(ANSWER, "shouting")
    for name in VARIANTS:
        assert name in str(e.value)
    assert "shouting" in str(e.value)
    with pytest.raises(ValueError, match="other_answer"):
        degenerate_answer(ANSWER, "off_topic")


# ----------------------------------------------------------------- augmentation
def test_augmentation_pairs_content_and_skips(capsys):
    rows = [make_row(0, ANSWER), make_row(1, "Yes."), make_row(2)]
    out = augment_with_degenerate_negatives(rows, len(VARIANTS), seed=3)  # asks for more than exist: all of them
    extra = out[3:]
    assert out[:3] == rows
    # one-word answer: its truncation equals it -> skipped; every other (row, variant) pair is there once
    assert len(extra) == 3 * len(VARIANTS) - 1
    assert "added 14 (chosen, degenerate) pairs to 3 training pairs" in capsys.readouterr().out
    by = {(r["prompt"][0]["content"], text(r["rejected"])): r for r in extra}
    assert ("Question 0?", "Paris is the") in by and ("Question 1?", "Yes.") not in by
    for r in extra:
        assert set(r) == {"prompt", "chosen", "rejected"}
        assert r["rejected"][0]["role"] == "assistant" and text(r["rejected"]) != text(r["chosen"])
    # off-topic answers are other rows' chosen answers
    chosen = [text(r["chosen"]) for r in rows]
    for i in range(3):
        borrowed = [text(r["rejected"]) for r in extra if r["prompt"] == rows[i]["prompt"]
                    and text(r["rejected"]) in chosen]
        assert len(borrowed) == 1 and borrowed[0] != chosen[i]
    # one row: no other answer to borrow, so no off-topic pair (and no error)
    assert len(augment_with_degenerate_negatives(rows[:1], 10)) == 1 + 4


def test_augmentation_skips_pairs_longer_than_max_length(capsys):
    tokenizer = demo_tokenizer()
    rows = [make_row(i) for i in range(10)]
    limit = max(len(tokenizer.apply_chat_template(r["prompt"] + r["chosen"], tokenize=True)["input_ids"])
                for r in rows) + 5  # every chosen answer fits, no answer repeated 3 times does
    out = augment_with_degenerate_negatives(rows, 5, tokenizer=tokenizer, max_length=limit)
    assert len(out) == 10 + 40
    assert all("\n\n" not in text(r["rejected"]) for r in out[10:])
    said = capsys.readouterr().out
    assert "repeated 0, off_topic 10; skipped 10 longer than max_length" in said


# ----------------------------------------------------------------- run_probe
def short_scorer(prompts, answers):
    assert len(prompts) == len(answers)
    return [-float(len(a)) for a in answers]


def long_scorer(prompts, answers):
    return [float(len(a)) for a in answers]


def test_run_probe_shortness_and_length_scorers():
    rows = [make_row(i) for i in range(6)]
    res = run_probe(short_scorer, rows)
    assert res["n_prompts"] == 6
    v = res["variants"]
    assert v["empty"]["win_rate"] == 1.0
    assert v["filler"]["win_rate"] == 1.0
    assert v["truncated"]["win_rate"] == 1.0
    assert v["repeated"]["win_rate"] == 0.0
    assert all(v[name]["n"] == 6 for name in VARIANTS)

    res = run_probe(long_scorer, rows)
    v = res["variants"]
    assert v["empty"]["win_rate"] == 0.0
    assert v["filler"]["win_rate"] == 0.0
    assert v["truncated"]["win_rate"] == 0.0
    assert v["repeated"]["win_rate"] == 1.0


def test_run_probe_mean_gap_hand_checked():
    # chosen lengths 8 and 16 words; score = -len(answer) (characters)
    a0 = "one two three four five six seven eight"  # 39 chars, truncated -> "one two" (7)
    a1 = "aa bb cc dd ee ff gg hh ii jj kk ll mm nn oo pp"  # 47 chars, truncated -> "aa bb cc dd" (11)
    rows = [make_row(0, a0), make_row(1, a1)]
    res = run_probe(short_scorer, rows, variants=("empty", "filler", "truncated", "repeated", "off_topic"))
    v = res["variants"]
    assert len(a0) == 39 and len(a1) == 47
    # gap = chosen - variant = -len(chosen) + len(variant)
    assert v["empty"]["mean_gap"] == pytest.approx(((-39 + 0) + (-47 + 0)) / 2)  # -43
    assert v["filler"]["mean_gap"] == pytest.approx(((-39 + 3) + (-47 + 3)) / 2)  # -40
    assert v["truncated"]["mean_gap"] == pytest.approx(((-39 + 7) + (-47 + 11)) / 2)  # -34
    rep0, rep1 = 3 * 39 + 4, 3 * 47 + 4
    assert v["repeated"]["mean_gap"] == pytest.approx(((-39 + rep0) + (-47 + rep1)) / 2)  # 86
    # with 2 rows each one's off-topic answer is the other's chosen answer
    assert v["off_topic"]["mean_gap"] == pytest.approx(((-39 + 47) + (-47 + 39)) / 2) == 0.0
    assert v["off_topic"]["win_rate"] == 0.5


def test_run_probe_max_prompts_and_bad_scorer():
    rows = [make_row(i) for i in range(30)]
    seen = []

    def spy(prompts, answers):
        seen.extend(p[0]["content"] for p in prompts)
        return short_scorer(prompts, answers)

    res = run_probe(spy, rows, max_prompts=7, seed=1)
    assert res["n_prompts"] == 7
    assert len(set(seen)) == 7
    assert len(seen) == 7 * (1 + len(VARIANTS))
    with pytest.raises(ValueError, match="scores"):
        run_probe(lambda p, a: [0.0], rows, max_prompts=3)


def test_augment_ratio_half_adds_five_deterministic():
    rows = [make_row(i) for i in range(10)]
    out = augment_with_degenerate_negatives(rows, 0.5, seed=0)
    assert len(out) == 15
    assert out[:10] == rows
    extra = out[10:]
    for r in extra:
        assert set(r) == set(rows[0])
        assert "variant" not in r
        assert text(r["rejected"]) != text(r["chosen"])
    # 5 pairs cycling through 5 variants -> one of each
    rejected_texts = [text(r["rejected"]) for r in extra]
    assert "" in rejected_texts and "Ok." in rejected_texts
    assert augment_with_degenerate_negatives(rows, 0.5, seed=0) == out
    assert augment_with_degenerate_negatives(rows, 0.5, seed=1) != out
    assert rows == [make_row(i) for i in range(10)]  # input not mutated


def test_augment_even_variant_split_ratio_zero_and_errors():
    rows = [make_row(i) for i in range(10)]
    assert augment_with_degenerate_negatives(rows, 0) == rows
    assert len(augment_with_degenerate_negatives(rows, 0)) == 10
    with pytest.raises(ValueError, match="ratio"):
        augment_with_degenerate_negatives(rows, -0.1)
    out = augment_with_degenerate_negatives(rows, 2.0, seed=0)
    assert len(out) == 30
    # 20 extra rows over 5 variants -> exactly 4 of each
    counts = {"empty": 0, "filler": 0, "other": 0}
    for r in out[10:]:
        t = text(r["rejected"])
        counts["empty" if t == "" else "filler" if t == "Ok." else "other"] += 1
    assert counts == {"empty": 4, "filler": 4, "other": 12}


def test_variant_weights_set_the_shares_and_a_variant_that_runs_out_leaves_its_share(capsys):
    rows = [make_row(i) for i in range(40)]
    weights = parse_variant_weights("empty:1, filler:0,truncated:2,off_topic:5")
    assert weights == {"empty": 1.0, "truncated": 2.0, "off_topic": 5.0}  # weight 0 = left out
    out = augment_with_degenerate_negatives(rows, 0.4, seed=0, variants=weights)  # 16 extra pairs: 2 / 4 / 10
    assert "added 16 (chosen, degenerate) pairs to 40 training pairs (ratio 0.4): empty 2, truncated 4, off_topic 10" \
        in capsys.readouterr().out
    extra = [text(r["rejected"]) for r in out[40:]]
    assert extra.count("") == 2 and "Ok." not in extra
    assert sum(t.startswith("Answer number") and len(t.split()) == 2 for t in extra) == 4  # a quarter of 10 words
    # off_topic has at most one pair per row: asking for 60 extra pairs fills the rest from the other variants
    out = augment_with_degenerate_negatives(rows, 1.5, seed=0, variants={"empty": 1, "off_topic": 100})
    assert "empty 20, off_topic 40" in capsys.readouterr().out
    assert len(out) == 40 + 60
    # weight 0 passed straight to the function: still no pairs of that kind, even when the others run out
    out = augment_with_degenerate_negatives(rows, 1.5, seed=0, variants={"empty": 1, "filler": 0})
    assert "added 40 (chosen, degenerate) pairs to 40 training pairs (ratio 1.5): empty 40\n" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["empty:1,offtopic:2", "empty", "empty:-1", "empty:x", "empty:0,filler:0", ""])
def test_variant_weights_errors_name_the_field(spec):
    with pytest.raises(ValueError, match="degenerate_variant_weights"):
        parse_variant_weights(spec)


def test_reward_model_py_refuses_bad_variant_weights_before_loading_the_model(tiny_model_dir, tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "t.jsonl", rambling_pairs(8))
    monkeypatch.setattr(reward_model, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(ValueError, match="degenerate_variant_weights: bad entry 'of_topic:3'"):
        reward_model.main(base_flags(tiny_model_dir, train, tmp_path / "out",
                                     "--degenerate_variant_weights", "empty:1,of_topic:3"))


# ----------------------------------------------------------------- table / report
RESULT = {
    "n_prompts": 100,
    "variants": {
        "empty": {"win_rate": 0.79, "mean_gap": -0.8, "n": 100},
        "filler": {"win_rate": 0.85, "mean_gap": -1.1, "n": 100},
        "truncated": {"win_rate": 0.10, "mean_gap": 0.2, "n": 100},  # exactly 10%: no warning
        "repeated": {"win_rate": 0.30, "mean_gap": 0.1, "n": 100},
        "off_topic": {"win_rate": 0.02, "mean_gap": 2.5, "n": 100},
    },
}


def test_format_probe_table_warnings_only_above_ten_percent():
    table = format_probe_table(RESULT)
    warn = [line for line in table.splitlines() if "WARNING" in line]
    assert len(warn) == 3
    for name, line in zip(("empty", "filler", "repeated"), warn):
        assert f"[{name}]" in line
        assert "PPO/RLOO/GRPO" in line
        assert "--degenerate_negatives_ratio" in line and "--degenerate_variant_weights" in line
    assert "79.0%" in table and "85.0%" in table and "10.0%" in table
    assert not any("[truncated]" in line or "[off_topic]" in line for line in warn)
    ok = {"n_prompts": 3, "variants": {v: {"win_rate": 0.0, "mean_gap": 1.0, "n": 3} for v in VARIANTS}}
    assert "WARNING" not in format_probe_table(ok) and "OK: no degenerate answer" in format_probe_table(ok)


def test_save_probe_report_roundtrip_and_png(tmp_path):
    path_json, path_png = save_probe_report(RESULT, str(tmp_path / "out"))
    assert pathlib.Path(path_json).name == "rm_probe.json"
    assert pathlib.Path(path_png).name == "rm_probe.png"
    assert json.loads(pathlib.Path(path_json).read_text()) == RESULT
    data = pathlib.Path(path_png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_print_saved_probe_for_the_online_methods(tmp_path, capsys):
    assert print_saved_probe(str(tmp_path)) is None and capsys.readouterr().out == ""  # no probe saved: silent
    save_probe_report(RESULT, str(tmp_path))
    table = print_saved_probe(str(tmp_path))
    assert table == format_probe_table(RESULT) and table in capsys.readouterr().out
    assert table.count("WARNING:") == 3
    (tmp_path / "rm_probe.json").write_text('{"variants": {"empty": {"win_rate": 0.')  # a cut file: warn, go on
    assert print_saved_probe(str(tmp_path)) is None
    assert "WARNING: the saved probe is not shown" in capsys.readouterr().out


# ----------------------------------------------------------------- reward_scorer and the CLI
@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


@pytest.fixture(scope="module")
def tiny_rm(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForSequenceClassification(config)


def test_reward_scorer_padding_invariance(tokenizer, tiny_rm):
    tiny_rm.train()  # scorer must switch to eval and restore the mode
    tiny_rm.config.pad_token_id = None  # scorer must set it from the tokenizer
    seen = []
    hook = tiny_rm.register_forward_pre_hook(
        lambda mod, args: seen.append((torch.is_grad_enabled(), mod.training))
    )
    score = reward_scorer(tiny_rm, tokenizer, batch_size=8)
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    short = "Paris."
    long = " ".join(["Paris is the capital of France, on the Seine."] * 20)
    alone = score([prompt], [short])
    both = score([prompt, prompt], [long, short])
    assert len(alone) == 1 and len(both) == 2
    assert all(isinstance(s, float) for s in both)
    assert both[1] == pytest.approx(alone[0], abs=1e-5)
    assert abs(both[0] - both[1]) > 1e-6  # different answers, different scores
    # batch_size=1 path gives the same numbers, and order is preserved
    one_by_one = reward_scorer(tiny_rm, tokenizer, batch_size=1)([prompt, prompt], [long, short])
    assert one_by_one == pytest.approx(both, abs=1e-5)
    hook.remove()
    assert seen and all(state == (False, False) for state in seen)  # no_grad + eval mode
    assert tiny_rm.training
    assert tiny_rm.config.pad_token_id == tokenizer.pad_token_id
    with pytest.raises(ValueError):
        score([prompt], [short, long])


def test_reward_scorer_runs_in_probe(tokenizer, tiny_rm):
    rows = [make_row(i) for i in range(3)]
    res = run_probe(reward_scorer(tiny_rm, tokenizer, batch_size=4), rows)
    assert res["n_prompts"] == 3
    for v in VARIANTS:
        wr = res["variants"][v]["win_rate"]
        assert 0.0 <= wr <= 1.0 and wr * 3 == pytest.approx(round(wr * 3))
        assert isinstance(res["variants"][v]["mean_gap"], float)


def test_cli_main_full_model(tmp_path, tokenizer, tiny_rm, capsys):
    rm_dir = tmp_path / "rm"
    tiny_rm.save_pretrained(str(rm_dir))
    tokenizer.save_pretrained(str(rm_dir))
    rows = [make_row(i) for i in range(4)]
    data = write_jsonl(tmp_path / "data.jsonl", rows + [
        {"prompt": "Q?", "chosen": "A plain string answer works too.", "rejected": "no"},  # converted
        {"prompt": "Q?", "chosen": "no rejected answer"}])  # a bad row: dropped, not fatal
    assert rm_probe.main([str(rm_dir), data, "--max_prompts", "3", "--output_dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 bad row(s)" in out and "(3 prompts;" in out
    saved = json.loads((tmp_path / "o" / "rm_probe.json").read_text())
    assert saved["n_prompts"] == 3 and list(saved["variants"]) == list(VARIANTS)
    assert (tmp_path / "o" / "rm_probe.png").read_bytes()[:4] == b"\x89PNG"
    # the same numbers as the functions give on the loaded rows (seed 42, the training scripts' default)
    from rlhfkit.data.offline import load_preference_file

    model, tok = load_reward_model(str(rm_dir), device="cpu")
    expected = run_probe(reward_scorer(model, tok), load_preference_file(data, True), max_prompts=3, seed=42)
    assert saved == expected


def test_cli_main_lora_adapter(tmp_path, tokenizer, tiny_rm, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForSequenceClassification

    base_dir = tmp_path / "base"
    tiny_rm.save_pretrained(str(base_dir))
    base = LlamaForSequenceClassification.from_pretrained(str(base_dir))  # records name_or_path
    torch.manual_seed(1)
    peft_model = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir)
    assert not (adapter_dir / "model.safetensors").exists()

    model, _ = load_reward_model(str(adapter_dir), device="cpu")
    assert type(model).__name__.startswith("Peft")
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert not model.training

    data = write_jsonl(tmp_path / "data.jsonl", [make_row(i) for i in range(2)])
    assert rm_probe.main([str(adapter_dir), data]) == 0
    assert "2 prompts" in capsys.readouterr().out
    saved = json.loads((adapter_dir / "rm_probe.json").read_text())  # default output_dir = RM_DIR
    assert saved["n_prompts"] == 2
    assert (adapter_dir / "rm_probe.png").read_bytes()[:4] == b"\x89PNG"


def test_run_probe_ties_do_not_count_as_wins():
    rows = [make_row(i) for i in range(4)]
    res = run_probe(lambda p, a: [1.0] * len(a), rows)
    for name in VARIANTS:
        assert res["variants"][name]["win_rate"] == 0.0
        assert res["variants"][name]["mean_gap"] == 0.0


# ----------------------------------------------------------------- reward_model.py with and without augmentation
TOPICS = ["cats", "rain", "bread", "maths", "rivers", "music", "trains", "tea", "stars", "chess", "boats", "snow"]


def rambling_pairs(n, seed=0):
    """Chosen: a short friendly answer; rejected: a long rambling one. Nothing here shows an empty answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = rng.choice(TOPICS)
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about {t} ({i})."}],
                     "chosen": [{"role": "assistant", "content": f"Sure: {t} are lovely, people enjoy {t} a lot."}],
                     "rejected": [{"role": "assistant", "content": f"Well, um, {t}, you know, like, whatever, I "
                                   f"mean {t} is a thing I guess, maybe, sort of, who really knows, honestly, um."}]})
    return rows


def test_degenerate_negatives_teach_the_reward_model_to_rank_chosen_above_empty_and_truncated(
        tiny_model_dir, tmp_path, capsys):
    pairs = rambling_pairs(64)
    train, held_out = write_jsonl(tmp_path / "t.jsonl", pairs[:48]), write_jsonl(tmp_path / "e.jsonl", pairs[48:])
    probes = {}
    for ratio in ("0", "1"):
        out = tmp_path / f"rm{ratio}"
        reward_model.main(base_flags(tiny_model_dir, train, out, "--eval_data_path", held_out, "--max_steps", "36",
                                     "--learning_rate", "3e-3", "--lora_r", "8", "--per_device_train_batch_size", "4",
                                     "--degenerate_negatives_ratio", ratio))
        probes[ratio] = json.loads((out / "rm_probe.json").read_text())["variants"]  # 16 held-out prompts
        assert (out / "rm_probe.png").is_file()
    said = capsys.readouterr().out
    assert "added 48 (chosen, degenerate) pairs to 48 training pairs (ratio 1): empty 10, filler 10" in said
    assert "Reward-model probe" in said and "WARNING: [empty]" in said  # printed at the end of the plain run
    for variant in ("empty", "truncated"):
        plain, augmented = probes["0"][variant], probes["1"][variant]
        assert augmented["n"] == plain["n"] == 16
        assert augmented["win_rate"] == 0.0  # the chosen answer always ranks above it ...
        assert augmented["mean_gap"] > 3.0  # ... by a wide margin (reward units)
        assert abs(plain["mean_gap"]) < 0.5  # plain training cannot tell them apart from the chosen answer
    assert probes["0"]["empty"]["win_rate"] >= 0.5  # and here even prefers the empty answer
