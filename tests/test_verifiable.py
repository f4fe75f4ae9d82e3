"""Verifiable rewards: gold columns reach every reward function (PPO, RLOO, GRPO, evaluate.py, rejection_sampling.py),
the verifiers of rlhfkit/verifiers.py, and the accuracy maths (Wilson interval, exact McNemar).
"""

import json
import math
import os
import shutil
import sys

import pytest
from conftest import needs_lm_eval, write_jsonl
from test_ppo import toy, toy_flags  # noqa: F401  (the toy model and its flags)

import evaluate
import rejection_sampling
import train_rlhf
from rlhfkit.errors import ConfigError
from rlhfkit.report.arena import accuracy_interval, paired_accuracy_test
from rlhfkit.verifiers import exact_number, last_number, math_answer

GOLD_FILE = """
def gold(prompts, completions, completion_ids, answer, **kwargs):
    return [float(a) for a in answer]

def gold_plus_length(prompts, completions, completion_ids, answer, **kwargs):
    return [float(a) + len(ids) / 1000 for a, ids in zip(answer, completion_ids)]

def even(prompts, completions, completion_ids, answer, **kwargs):
    return [float(a % 2 == 0) for a in answer]
"""


def said(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture(scope="module")
def gold(toy, tmp_path_factory):  # noqa: F811
    """The toy prompts with a gold `answer` column (the prompt's word count x 10 + its index mod 7), and reward
    functions that need it (a missing column is a TypeError).
    """
    folder = tmp_path_factory.mktemp("gold")
    rows = [json.loads(line) for line in open(toy["prompts"])]
    for i, row in enumerate(rows):
        row["answer"] = len(row["prompt"].split()) * 10 + i % 7
    (folder / "gold.py").write_text(GOLD_FILE)
    return {"prompts": write_jsonl(folder / "prompts.jsonl", rows), "answers": {r["prompt"]: r["answer"] for r in rows},
            "reward": str(folder / "gold.py")}


def gold_flags(toy, gold, out, function, *extra):  # noqa: F811
    flags = toy_flags(toy, out, "--reward_function", f"{gold['reward']}:{function}", "--max_steps", "1", *extra)
    flags[flags.index("--train_data_path") + 1] = gold["prompts"]
    return flags


# ------------------------------------------------------------------------------------------------------------------
# Gold columns reach the reward function on every path


def test_ppo_reward_function_gets_each_rows_gold_answer(toy, gold, tmp_path):  # noqa: F811
    run = train_rlhf.build_trainer(gold_flags(toy, gold, tmp_path / "ppo", "gold", "--rlhf_type", "PPO",
                                              "--response_length", "4", "--per_device_train_batch_size", "8"))
    trainer = run.trainer
    rows = [trainer.train_dataset[i] for i in range(8)]
    scores = trainer._generate(trainer.model, rows)["scores"]["gold"]
    assert scores.tolist() == [gold["answers"][r["prompt"][-1]["content"]] for r in rows]
    trainer.train()  # the dataloader keeps the column too
    logged = [e["objective/scores/gold"] for e in trainer.state.log_history if "objective/scores/gold" in e]
    assert logged and min(gold["answers"].values()) <= logged[0] <= max(gold["answers"].values())


@pytest.mark.parametrize("method", ["RLOO", "GRPO"])
def test_rloo_and_grpo_reward_function_gets_each_rows_gold_answer(method, toy, gold, tmp_path):  # noqa: F811
    trainer = train_rlhf.main(gold_flags(toy, gold, tmp_path / method, "gold", "--rlhf_type", method,
                                         "--train_mode", "lora", "--max_completion_length", "4",
                                         "--per_device_train_batch_size", "8", "--num_generations", "4"))
    logs = trainer._logs
    prompts = [p[-1]["content"] if isinstance(p, list) else p for p in logs["prompt"]]
    rewards = list(logs["rewards"]["gold"])
    assert len(rewards) == 8 and rewards == [gold["answers"][p] for p in prompts]


def test_evaluate_reports_verifier_accuracy_with_interval_and_paired_test(toy, gold, tmp_path):  # noqa: F811
    copy = shutil.copytree(toy["model"], tmp_path / "same_model")
    out = tmp_path / "eval"
    summary = evaluate.main(["--models", f"base={toy['model']}", f"copy={copy}", "--reward_model_path", "none",
                             "--reward_function", f"{gold['reward']}:even", "--eval_data_path", gold["prompts"],
                             "--max_new_tokens", "4", "--output_dir", str(out)])
    evens = [a % 2 == 0 for a in gold["answers"].values()]
    k, n = sum(evens), len(evens)
    base, other = summary["accuracy"]["base"], summary["accuracy"]["copy"]
    assert (base["correct"], base["n"]) == (k, n) and base["accuracy"] == pytest.approx(k / n)
    assert base["accuracy_ci"] == pytest.approx(accuracy_interval(evens)["accuracy_ci"]) and base["vs_baseline"] is None
    assert other["vs_baseline"] == {"n": n, "difference": 0.0, "model_only": 0, "baseline_only": 0, "p_value": 1.0}
    assert json.load(open(out / "summary.json"))["accuracy"]["base"]["correct"] == k
    assert "Accuracy under the verifier even" in (out / "report.html").read_text()


def test_evaluate_without_a_column_the_signature_requires_stops_before_answering(toy, gold, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="even scores against the column 'answer', which 2 of the 2 prompt rows"):
        evaluate.main(["--models", f"base={toy['model']}", "--reward_model_path", "none", "--reward_function",
                       f"{gold['reward']}:even", "--eval_data_path", toy["prompts"], "--max_prompts", "2",
                       "--max_new_tokens", "2", "--output_dir", str(tmp_path / "eval")])


def test_rejection_sampling_scores_with_the_gold_column(toy, gold, tmp_path):  # noqa: F811
    out = tmp_path / "rs"
    summary = rejection_sampling.main(["--policy_name_or_path", toy["model"], "--reward_model_path", "none",
                                       "--reward_function", f"{gold['reward']}:gold_plus_length", "--prompts_path",
                                       gold["prompts"], "--max_prompts", "6", "--num_samples", "3",
                                       "--max_new_tokens", "4", "--output_dir", str(out)])
    samples = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert summary["counts"]["prompts"] == 6
    for sample in samples:
        answer = gold["answers"][sample["prompt"][-1]["content"]]
        assert sample["answers"] and all(int(a["score"]) == answer for a in sample["answers"])


def test_rejection_sampling_needs_a_score():
    with pytest.raises(ConfigError, match="--reward_model_path .* and/or --reward_function"):
        rejection_sampling.RejectionSamplingArgs(reward_model_path="none")


def test_prompt_loaders_keep_other_columns_and_fill_missing_ones(tmp_path, tiny_model_dir):
    from common_args import CommonArgs
    from rlhfkit.data.prompts import load_prompt_file, prompt_data
    from rlhfkit.model import load_tokenizer

    rows = [{"prompt": "1+1?", "answer": 2, "source": "a"}, {"messages": [{"role": "user", "content": "2+2?"}],
                                                             "answer": 4},
            {"prompt": "Q?", "chosen": "A", "rejected": "B"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    args = CommonArgs(train_data_path=path, eval_split_size=0)
    config = type("C", (), {"seed": 0, "max_prompt_length": None})()
    train, _ = prompt_data(args, config, load_tokenizer(tiny_model_dir), "", log=lambda *_: None)
    assert [(r["answer"], r["source"]) for r in train] == [(2, "a"), (4, None), (None, None)]
    assert set(train[2]) == {"prompt", "answer", "source"}  # chosen / rejected are part of the shape, not columns
    assert [r["answer"] for r in load_prompt_file(path, log=lambda *_: None)] == [2, 4, None]


# ------------------------------------------------------------------------------------------------------------------
# Verifiers


def test_exact_number_reads_the_last_number_of_the_answer():
    completions = [said("27 + 30 = 57"), said("57."), said("It is 1,024"), said("-3"), said("no idea"),
                   said("57 or 58")]
    assert exact_number(None, completions, answer=[57, 57, 1024, "-3", 57, 57]) == [1, 1, 1, 1, 0, 0]
    assert last_number("between 3.5 and 4") == 4.0 and last_number("") is None
    gsm8k = "Natalia sold 48 clips in April and half as many in May: 48 + 24 = 72.\n#### 72"
    assert exact_number(None, [said("72")], answer=[gsm8k]) == [1.0]  # GSM8K's own answer field is read
    with pytest.raises(ValueError, match="gold column 'answer'"):
        exact_number(None, completions)


def test_math_answer_accepts_equivalent_forms():
    scores = math_answer(None, [said("The answer is $0.5$"), said("So x = 1/3."), said("0.4")],
                         answer=["\\frac{1}{2}", "$\\frac{1}{3}$", "\\frac{1}{2}"])
    assert scores == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="gold column 'answer'"):
        math_answer(None, [said("1")], answer=[None])


def test_ifeval_scores_the_share_of_instructions_followed():
    needs_lm_eval()
    from rlhfkit.verifiers import ifeval

    ids = ["punctuation:no_comma", "change_case:english_lowercase"]
    kwargs = [{}, {"num_words": None}]  # None-valued keys, as a datasets column of mixed dicts has them
    prompts = [[{"role": "user", "content": "Greet me, in lowercase and without commas."}]] * 3
    answers = ["thank you very much for the kind words my good friend", "thank you very much, my good friend, for the "
               "kind words", "Thank You Very Much, My Good Friend, For The Kind Words"]
    scores = ifeval(prompts, [said(a) for a in answers],
                    instruction_id_list=[ids] * 3, kwargs=[kwargs] * 3)
    assert scores == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="gold column 'instruction_id_list'"):
        ifeval(prompts[:1], [said("hi")], kwargs=[kwargs])


def test_ifeval_without_nltk_tokenizer_data_names_the_download(monkeypatch):
    """A checker that needs nltk's punkt data (missing offline) is one line naming the instruction and the download."""
    needs_lm_eval()
    import nltk

    from rlhfkit.errors import ConfigError
    from rlhfkit.verifiers import ifeval

    def missing(*args, **kwargs):
        raise LookupError("Resource 'punkt_tab' not found.")

    monkeypatch.setattr(nltk, "word_tokenize", missing)
    with pytest.raises(ConfigError, match=r"change_case:capital_word_frequency: a checker needs nltk's tokenizer "
                                          r"data, which is not installed: python -m nltk.downloader punkt punkt_tab"):
        ifeval([[{"role": "user", "content": "Shout."}]], [said("HELLO THERE")],
               instruction_id_list=[["change_case:capital_word_frequency"]],
               kwargs=[[{"capital_frequency": 1, "capital_relation": "at least"}]])


def test_ifeval_columns_of_the_official_prompts_survive_loading_and_datasets(tiny_model_dir, tmp_path):
    """evaluate.py on 6 official IFEval prompts (kwargs: lists of dicts with different keys) scores what the
    verifier gives the same answers; a datasets column of those dicts (None-filled keys) scores the same too.
    """
    needs_lm_eval()
    from datasets import Dataset

    from rlhfkit.data.prompts import load_prompt_file
    from rlhfkit.verifiers import ifeval

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_example", "ifeval",
                        "input_data.jsonl")
    out = tmp_path / "eval"
    summary = evaluate.main(["--models", f"tiny={tiny_model_dir}", "--reward_model_path", "none", "--reward_function",
                             "rlhfkit.verifiers:ifeval", "--eval_data_path", path, "--max_prompts", "6",
                             "--max_new_tokens", "8", "--output_dir", str(out)])
    rows = load_prompt_file(path, log=lambda *_: None)[:6]
    answers = [json.loads(line)["answer"] for line in open(out / "generations.jsonl")]
    kwargs = dict(instruction_id_list=[r["instruction_id_list"] for r in rows], kwargs=[r["kwargs"] for r in rows])
    direct = ifeval([r["prompt"] for r in rows], [said(a) for a in answers], **kwargs)
    assert [json.loads(line)["score"] for line in open(out / "generations.jsonl")] == direct
    assert summary["accuracy"]["tiny"]["n"] == 6
    table = Dataset.from_list(rows).to_list()
    assert any(None in d.values() for r in table for d in r["kwargs"])  # Arrow filled the other rows' keys
    assert ifeval([r["prompt"] for r in table], [said(a) for a in answers],
                  instruction_id_list=[r["instruction_id_list"] for r in table],
                  kwargs=[r["kwargs"] for r in table]) == direct


def test_ifeval_without_lm_eval_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval.tasks.ifeval.utils", None)  # import fails as if not installed
    from rlhfkit.reward import load_reward_function

    with pytest.raises(ConfigError, match=r"pip install 'lm-eval\[ifeval\]==0\.4\.13'"):
        load_reward_function("rlhfkit.verifiers:ifeval")


# ------------------------------------------------------------------------------------------------------------------
# Accuracy maths


def test_wilson_interval_matches_the_hand_computed_one():
    result = accuracy_interval([True] * 9 + [False] * 39)  # 9 / 48
    assert result["accuracy"] == 0.1875 and result["accuracy_ci"] == pytest.approx([0.10191, 0.31940], abs=1e-5)
    with pytest.raises(ValueError):
        accuracy_interval([])


def test_exact_mcnemar_is_a_binomial_test_on_the_discordant_prompts():
    # 10 prompts only the model gets right, 1 only the baseline, 5 both, 30 neither: p = 2 P(X <= 1 | 11, 1/2)
    model = [True] * 10 + [False] + [True] * 5 + [False] * 30
    baseline = [False] * 10 + [True] + [True] * 5 + [False] * 30
    result = paired_accuracy_test(model, baseline)
    assert result["model_only"] == 10 and result["baseline_only"] == 1
    assert result["p_value"] == pytest.approx(2 * (1 + 11) / 2 ** 11) and result["difference"] == pytest.approx(9 / 46)
    assert paired_accuracy_test(model, model)["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_accuracy_test([True], [True, False])


def test_benchmark_arithmetic_split_holds_out_whole_unordered_pairs(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script"))
    import benchmark_verifiable

    monkeypatch.setattr(benchmark_verifiable, "DATA", str(tmp_path))
    benchmark_verifiable.make_data()
    read = lambda name: [json.loads(line) for line in open(tmp_path / f"{name}.jsonl")]  # noqa: E731
    train, test = read("train"), read("test")

    def pair(row):
        a, b = (int(x) for x in row["prompt"][0]["content"].split("?")[0].split()[-3::2])
        assert a + b == row["answer"] and 10 <= a <= 99 and 10 <= b <= 99
        return frozenset((a, b))

    assert len(test) == 500 and len({pair(r) for r in test}) == 500 and len(train) == 2000
    assert not {pair(r) for r in test} & {pair(r) for r in train}
    assert exact_number(None, [said(str(r["answer"])) for r in test], answer=[r["answer"] for r in test]) == [1.0] * 500


def test_benchmark_instruction_level_test_by_hand():
    """10 prompts with 2 instructions each: the base follows 1 of each pair, the model both in 8 prompts and none in
    1 (+ one tie): instruction level 0.5 -> 0.85; Wilcoxon signed-rank over the 9 non-zero differences (8 x +1,
    1 x -1, average rank 5): statistic 5; scipy's exact null for n <= 50 (ranks 1..9): 10 of the 512 sign patterns
    give a sum <= 5 ({}, {1}..{5}, {1,2}, {1,3}, {1,4}, {2,3}), two-sided p = 2 * 10/512.
    """
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script"))
    import benchmark_verifiable

    base = {"followed_list": [1.0] * 10, "instruction_level": 0.5}
    model = {"followed_list": [2.0] * 8 + [0.0, 1.0], "instruction_level": 0.85}
    result = benchmark_verifiable.instruction_level_test(model, base)
    assert result["base"] == 0.5 and result["model"] == pytest.approx(0.85)
    assert result["difference"] == pytest.approx(0.35) and result["prompts"] == 10
    assert result["p_value"] == pytest.approx(2 * 10 / 512)
    assert benchmark_verifiable.instruction_level_test({"instruction_level": 0.85}, base) is None


def test_benchmark_best_of_n_by_hand():
    """2 prompts x 4 answers. Best-of-1 is each answer once; best-of-2 picks within (0,1) and (2,3); best-of-4 the top
    of all four (the first of equal scores); KL of best-of-n = log n - (n - 1) / n.
    """
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script"))
    import benchmark_verifiable

    gold = [[False, True, False, False], [True, False, False, True]]
    scores = [[0.1, 0.9, 0.5, 0.2], [0.3, 0.7, 0.7, 0.0]]
    curve = {p["n"]: p for p in benchmark_verifiable.best_of_n_curve(scores, gold, ns=(1, 2, 4))}
    assert curve[1]["accuracy"] == pytest.approx(3 / 8) and curve[1]["kl"] == 0.0
    assert curve[1]["proxy_reward"] == pytest.approx(sum(scores[0] + scores[1]) / 8)
    # n=2: prompt 0 picks answer 1 (right) and 2 (wrong); prompt 1 picks answer 1 (wrong) and 2 (wrong, tie -> first)
    assert curve[2]["accuracy"] == pytest.approx(1 / 4) and curve[2]["proxy_reward"] == pytest.approx(2.8 / 4)
    assert curve[2]["kl"] == pytest.approx(math.log(2) - 0.5)
    # n=4: prompt 0 answer 1 (right), prompt 1 answer 1 (0.7 ties with answer 2: the first; wrong)
    assert curve[4]["accuracy"] == pytest.approx(0.5) and curve[4]["kl"] == pytest.approx(math.log(4) - 0.75)


def test_benchmark_seed_rows_change_only_the_seed_and_drop_checkpoints():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script"))
    import benchmark_verifiable as bench

    original, seeded = bench.ROWS["ppo_rm_ensemble"][0][0], bench.ROWS["ppo_rm_ensemble_seed2"][0][0]
    seed_at = original.index("--seed") + 1
    assert original[seed_at] == "0" and seeded[seed_at] == "2" and "--save_steps" not in seeded
    n = len(bench.CHECKPOINTS)
    at = next(i for i in range(len(original)) if original[i:i + n] == bench.CHECKPOINTS)
    assert seeded[:seed_at] + ["0"] + seeded[seed_at + 1:] == original[:at] + original[at + n:]
    assert seeded[-2:] == ["--reward_ensemble", "mean"]
    assert bench.ROWS["kto_seed1"][1] == "model" and bench.ROWS["kto_seed1"][0][0][-2:] == ["--max_length", "64"]


def test_benchmark_seeds_table_gives_mean_spread_and_welch_test(capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "script"))
    import benchmark_verifiable as bench

    rows = {"grpo": {"accuracy": 0.5}, "grpo_seed1": {"accuracy": 0.6}, "grpo_seed2": {"accuracy": 0.7},
            "kto": {"accuracy": 0.2}, "kto_seed1": {"accuracy": 0.3}, "kto_seed2": {"accuracy": 0.4},
            "dpo": {"accuracy": 0.9}}  # one seed only: no mean, not compared
    (pair,) = bench.seeds_table(rows)
    # t = 0.3 / sqrt(0.01 / 3 + 0.01 / 3) = 3.674 on 4 degrees of freedom: two-sided p = 0.0213
    assert pair["rows"] == ("grpo", "kto") and pair["difference"] == pytest.approx(0.3)
    assert pair["p_value"] == pytest.approx(0.0213, abs=5e-4)
    out = capsys.readouterr().out
    assert "| grpo | 0.500, 0.600, 0.700 | 0.600 | 0.100 | 0.500-0.700 |" in out
    assert "| grpo - kto | +0.300 | 0.021 |" in out
    assert "| dpo |" not in out
