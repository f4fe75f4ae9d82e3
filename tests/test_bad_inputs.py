"""The bad-input catalogue: every case ends with one `error:` line that names the file/line/field or the flag, exit
status 2, no traceback, no model weights loaded, and `output_dir` absent or unchanged.

Each case runs an entry point in-process behind the same boundary as the command line (`run_cli(main, argv)`), with
`PreTrainedModel.from_pretrained` patched to fail the test if any weights load. A few cases run as real processes
(`python train_rlhf.py ...`) to check the exit status and stderr the user sees, and one under `accelerate launch`
with two processes to check that the message is printed once.
"""

import gzip
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import transformers
from conftest import ROOT, easy_pairs, needs_lm_eval, write_jsonl

import evaluate
import rejection_sampling
import reward_model
import train_gkd
import train_rlhf
from rlhfkit import merge_adapter, rebase_adapter
from rlhfkit.errors import ConfigError, run_cli
from rlhfkit.report import rm_probe, run_health

GOOD = easy_pairs(8)
ROW = {"prompt": "q", "chosen": "good", "rejected": "bad"}
CHAT = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]}
HH = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
QUIET = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]


class Ctx:
    """Builds the paths one case needs inside its own tmp folder."""

    def __init__(self, tmp_path, model_dir):
        self.tmp, self.model = tmp_path, model_dir
        self.out = str(tmp_path / "out")
        self.good = write_jsonl(tmp_path / "good.jsonl", GOOD)

    def jsonl(self, rows, name="d.jsonl"):
        return write_jsonl(self.tmp / name, rows)

    def raw(self, data: bytes, name="d.jsonl"):
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def reward_fn_file(self, text="def score(prompts, completions, **kw):\n    return [0.0] * len(prompts)\n"):
        path = self.tmp / "my_reward.py"
        path.write_text(text)
        return str(path)

    def function(self, text: str, name: str = "score") -> str:
        """`--reward_function` of a file holding `text`."""
        return self.reward_fn_file(text) + ":" + name

    def gold_rows(self, **columns) -> str:
        """8 prompt rows, each with the gold `columns` given."""
        return self.jsonl([{"prompt": f"What is {i} plus 50?", **columns} for i in range(8)], "gold.jsonl")

    def judge(self, function: str, data: str | None = None) -> list[str]:
        """evaluate.py flags: the tiny model answers, `function` alone judges."""
        return ["--models", f"base={self.model}", "--reward_model_path", "none", "--reward_function", function,
                "--eval_data_path", data or self.good, "--output_dir", self.out]

    def dpo(self, *extra, data=None, method="DPO"):
        """train_rlhf.py flags for a run on the tiny model (PPO: a batch of 1, so that one rollout fits GOOD's rows
        and the setting under test is what fails).
        """
        fits = ["--per_device_train_batch_size", "1"] if method == "PPO" else []
        return ["--rlhf_type", method, "--model_name_or_path", self.model, "--train_data_path", data or self.good,
                "--output_dir", self.out, *QUIET, *fits, *extra]

    def online(self, method, *extra):
        """train_rlhf.py flags for PPO/RLOO/GRPO with a reward function (so only the tested setting is wrong)."""
        return self.dpo("--reward_model_path", "none", "--reward_function", self.reward_fn_file() + ":score", *extra,
                        method=method)

    def rm(self, *extra, data=None):
        return ["--model_name_or_path", self.model, "--train_data_path", data or self.good, "--output_dir", self.out,
                *QUIET, *extra]

    def gkd(self, *extra, data=None):
        chats = [{"messages": r["prompt"] + r["chosen"]} for r in GOOD]
        return ["--model_name_or_path", self.model, "--teacher_model_name_or_path", self.model,
                "--train_data_path", data or self.jsonl(chats, "chats.jsonl"), "--output_dir", self.out,
                *QUIET, *extra]

    def sampling(self, *extra):
        return ["--policy_name_or_path", self.model, "--reward_model_path", self.model, "--prompts_path", self.good,
                "--output_dir", self.out, *extra]


@dataclass
class Case:
    id: str
    script: Callable  # the entry point's main(argv)
    argv: Callable  # Ctx -> argv
    expect: list  # words the error message must hold
    env: dict = field(default_factory=dict)


def dpo_data(rows):
    return lambda c: c.dpo(data=c.jsonl(rows))


T, R, G, S, P = train_rlhf.main, reward_model.main, train_gkd.main, rejection_sampling.main, rm_probe.main
M, B, E, H = merge_adapter.main, rebase_adapter.main, evaluate.main, run_health.main
ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}

CASES = [
    # --- data files
    Case("malformed-json", T, dpo_data([ROW, '{"prompt": "q", "chosen": ']), ["d.jsonl:2: field '(row)'",
                                                                             "malformed JSON"]),
    Case("truncated-last-line", T, dpo_data([ROW, ROW, '{"prompt": "q", "cho']), ["d.jsonl:3", "malformed JSON"]),
    Case("non-utf8-line", T, lambda c: c.dpo(data=c.raw(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
                                                       b'{"prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}\n')),
         ["d.jsonl:2", "not UTF-8"]),
    Case("gzipped", T, lambda c: c.dpo(data=c.raw(gzip.compress(b'{"prompt": "q"}\n'), "d.jsonl.gz")),
         ["gzip-compressed", "gunzip"]),
    Case("json-array", T, dpo_data(['[{"prompt": "q", "chosen": "a", "rejected": "b"}]']),
         ["d.jsonl:1", "JSON array", "one object per line"]),
    Case("csv-malformed", T, lambda c: c.dpo(data=c.raw(b"prompt,chosen,rejected\nq,a,b\nq,a,b,extra\n", "d.csv")),
         ["d.csv:3: field '(row)'", "malformed CSV: 4 fields, the header has 3"]),
    Case("json-data-wrapper", T, lambda c: c.dpo(data=c.raw(b'{"data": [{"prompt": "q", "chosen": "a", '
                                                            b'"rejected": "b"}]}', "d.json")),
         ["d.json:1", "wrapped in an object under 'data'", "jq '.data'"]),
    Case("data-is-a-folder", T, lambda c: c.dpo(data=str(c.tmp)), ["is a folder", "the .jsonl file inside it"]),
    Case("data-missing", T, lambda c: c.dpo(data=str(c.tmp / "nope.jsonl")), ["data file not found", "nope.jsonl"]),
    Case("data-empty", T, lambda c: c.dpo(data=c.raw(b"")), ["d.jsonl:1", "the file is empty"]),
    Case("null-chosen", T, dpo_data([{"prompt": "q", "chosen": None, "rejected": "b"}]), ["field 'chosen'"]),
    Case("number-chosen", T, dpo_data([{"prompt": "q", "chosen": 3, "rejected": "b"}]), ["field 'chosen'"]),
    Case("unknown-role", T, dpo_data([{"prompt": [{"role": "human", "content": "q"}], "chosen": "a",
                                       "rejected": "b"}]), ["field 'prompt[0].role'", "unknown role 'human'"]),
    Case("empty-answer", T, dpo_data([{"prompt": "q", "chosen": "", "rejected": "b"}]),
         ["d.jsonl:1: field 'chosen': empty answer"]),
    Case("identical-answers", T, dpo_data([{"prompt": "q", "chosen": "a", "rejected": "a"}]), ["identical"]),
    Case("prompt-ends-with-assistant", T, dpo_data([{"prompt": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "a"}],
                                                   "chosen": "a", "rejected": "b"}]), ["must end with a user turn"]),
    Case("missing-prompt", T, dpo_data([{"chosen": "a", "rejected": "b"}]), ["field 'prompt'", "missing field"]),
    Case("row-not-object", T, dpo_data(["3"]), ["d.jsonl:1", "expected a JSON object, got int"]),
    Case("hh-no-shared-prompt", T, dpo_data([{"chosen": "\n\nHuman: a\n\nAssistant: b",
                                              "rejected": "\n\nHuman: c\n\nAssistant: d"}]), ["do not share a prompt"]),
    Case("eval-data-missing", T, lambda c: c.dpo("--eval_data_path", str(c.tmp / "eval.jsonl")),
         ["data file not found", "eval.jsonl"]),
    Case("no-chat-template-in-sft-rows", T, lambda c: c.dpo(data=c.jsonl([{"messages": [CHAT["messages"][0]]}]),
                                                           method="SFT"), ["field 'messages"]),
    Case("kto-label-not-bool", T, lambda c: c.dpo(data=c.jsonl([{"prompt": "q", "completion": "a", "label": "yes"}]),
                                                 method="KTO"), ["field 'label'", "expected true or false"]),
    # --- flags
    Case("flag-prefix", T, lambda c: c.dpo("--num_train_epoch", "3"), ["unknown flag(s): --num_train_epoch 3"]),
    Case("flag-misspelled", T, lambda c: c.dpo("--betta", "0.2"), ["unknown flag(s): --betta"]),
    Case("flag-bad-int", T, lambda c: c.dpo("--lora_r", "x"), ["--lora_r", "invalid int value: 'x'"]),
    Case("flag-bad-choice", T, lambda c: c.dpo("--train_mode", "half"), ["--train_mode", "invalid choice: 'half'"]),
    Case("unknown-method", T, lambda c: c.dpo(method="PPX"), ["unknown --rlhf_type 'PPX'", "DPO"]),
    Case("eval-split-not-fraction-or-count", T, lambda c: c.dpo("--eval_split_size", "2.5"),
         ["--eval_split_size", "fraction in [0, 1) or a whole number"]),
    Case("eval-split-negative", T, lambda c: c.dpo("--eval_split_size", "-0.1"), ["--eval_split_size"]),
    Case("eval-split-takes-everything", T, lambda c: c.dpo("--eval_split_size", "8"), ["leaves no training rows"]),
    Case("lora-r-zero", T, lambda c: c.dpo("--lora_r", "0"), ["--lora_r must be at least 1, got 0"]),
    Case("lora-alpha-zero", T, lambda c: c.dpo("--lora_alpha", "0"), ["--lora_alpha must be > 0"]),
    Case("lora-dropout-one", T, lambda c: c.dpo("--lora_dropout", "1.0"), ["--lora_dropout must be in [0, 1)"]),
    Case("lora-targets-unknown", T, lambda c: c.dpo("--lora_target_modules", "q_proj,qkv_proj"),
         ["--lora_target_modules: qkv_proj names no module", "q_proj", "down_proj", "all-linear"]),
    Case("rm-lora-targets-unknown", R, lambda c: c.rm("--lora_target_modules", "attn"), ["attn names no module"]),
    Case("gkd-lora-targets-unknown", G, lambda c: c.gkd("--lora_target_modules", "c_attn"),
         ["c_attn names no module"]),
    Case("lora-targets-empty", T, lambda c: c.dpo("--lora_target_modules", ","), ["--lora_target_modules is empty"]),
    Case("learning-rate-negative", T, lambda c: c.dpo("--learning_rate", "-1"), ["--learning_rate must be >= 0"]),
    Case("batch-size-zero", T, lambda c: c.dpo("--per_device_train_batch_size", "0"),
         ["--per_device_train_batch_size must be at least 1"]),
    Case("accumulation-zero", T, lambda c: c.dpo("--gradient_accumulation_steps", "0"),
         ["--gradient_accumulation_steps must be at least 1"]),
    Case("max-length-zero", T, lambda c: c.dpo("--max_length", "0"), ["--max_length must be at least 1"]),
    Case("epochs-zero", T, lambda c: c.dpo("--num_train_epochs", "0"), ["--num_train_epochs must be > 0"]),
    Case("warmup-negative", T, lambda c: c.dpo("--warmup_steps", "-1"), ["--warmup_steps must be >= 0"]),
    Case("dpo-unknown-loss", T, lambda c: c.dpo("--loss_type", "sigmoidd"),
         ["--loss_type sigmoidd is not a loss of this method", "sigmoid, hinge, ipo"]),
    Case("cpo-unknown-loss", T, lambda c: c.dpo("--loss_type", "kto_pair", method="CPO"), ["--loss_type kto_pair"]),
    Case("kto-unknown-loss", T, lambda c: c.dpo("--loss_type", "sigmoid", method="KTO"),
         ["--loss_type sigmoid", "kto, apo_zero_unpaired"]),
    Case("kto-negative-weight", T, lambda c: c.dpo("--desirable_weight", "-1", method="KTO"),
         ["--desirable_weight must be > 0"]),
    Case("kto-zero-weight", T, lambda c: c.dpo("--undesirable_weight", "0", method="KTO"),
         ["--undesirable_weight must be > 0"]),
    Case("kto-batch-one", T, lambda c: c.dpo("--per_device_train_batch_size", "1", method="KTO"),
         ["per_device_train_batch_size >= 2"]),
    Case("simpo-with-nll", T, lambda c: c.dpo("--cpo_alpha", "1", method="SimPO"), ["cpo_alpha=0", "CPOSimPO"]),
    Case("qlora-under-zero3", T, lambda c: c.dpo("--train_mode", "qlora"), ["deepspeed_zero2.yaml"], env=ZERO3),
    # --- paths
    Case("model-missing", T, lambda c: c.dpo("--model_name_or_path", str(c.tmp / "no_model")),
         ["model directory not found", "no_model"]),
    Case("model-is-adapter", T, lambda c: c.dpo("--model_name_or_path", make_adapter_dir(c)),
         ["is a LoRA adapter", "python -m rlhfkit.merge_adapter"]),
    Case("resume-missing-checkpoint", T, lambda c: c.dpo("--resume_from_checkpoint", str(c.tmp / "checkpoint-9")),
         ["--resume_from_checkpoint", "checkpoint-9"]),
    Case("resume-true-without-checkpoint", T, lambda c: c.dpo("--resume_from_checkpoint", "true"),
         ["--resume_from_checkpoint", "no checkpoint"]),
    # --- online methods
    Case("ppo-reward-model-missing", T, lambda c: c.dpo("--reward_model_path", str(c.tmp / "no_rm"), method="PPO"),
         ["reward model not found", "no_rm", "python reward_model.py"]),
    Case("rloo-reward-model-missing", T, lambda c: c.dpo("--reward_model_path", str(c.tmp / "no_rm"),
                                                        method="RLOO"), ["reward model not found"]),
    Case("grpo-reward-model-missing", T, lambda c: c.dpo("--reward_model_path", str(c.tmp / "no_rm"),
                                                        method="GRPO"), ["reward model not found"]),
    Case("ppo-no-reward", T, lambda c: c.dpo("--reward_model_path", "none", method="PPO"),
         ["PPO needs a reward", "--reward_function"]),
    Case("reward-function-file-missing", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                           str(c.tmp / "nope.py:score"), method="GRPO"),
         ["--reward_function: no such file", "nope.py"]),
    Case("reward-function-name-missing", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                           c.reward_fn_file() + ":nosuch", method="RLOO"),
         ["has no function 'nosuch'"]),
    Case("reward-function-no-colon", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                       "score", method="PPO"), ["expected FILE.py:NAME"]),
    Case("reward-function-module-missing", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                             "no_such_module_xyz:score", method="PPO"),
         ["no module 'no_such_module_xyz'"]),
    Case("reward-function-not-callable", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                           c.reward_fn_file("score = 3\n") + ":score", method="PPO"),
         ["is not callable"]),
    Case("verifier-without-gold-column", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                           "rlhfkit.verifiers:exact_number", method="PPO"),
         ["--reward_function rlhfkit.verifiers:exact_number scores against the column 'answer', which 8 of the 8 "
          "prompt rows lack"]),
    Case("ppo-value-model-missing", T, lambda c: c.online("PPO", "--value_model_path", str(c.tmp / "no_value")),
         ["--value_model_path", "no_value"]),
    Case("ppo-adapters-with-full", T, lambda c: c.online("PPO", "--model_mode", "adapters", "--train_mode", "full"),
         ["--model_mode adapters", "--train_mode lora"]),
    Case("ppo-unknown-layout", T, lambda c: c.online("PPO", "--model_mode", "single"), ["model_mode must be one of"]),
    Case("ppo-unknown-kl-estimator", T, lambda c: c.online("PPO", "--kl_estimator", "k9"), ["kl_estimator"]),
    Case("ppo-zero-temperature", T, lambda c: c.online("PPO", "--temperature", "0"), ["temperature must be > 0"]),
    Case("ppo-zero-response-length", T, lambda c: c.online("PPO", "--response_length", "0"), ["response_length"]),
    Case("ppo-too-few-prompts", T, lambda c: c.online("PPO", "--per_device_train_batch_size", "64"),
         ["one rollout takes 64 prompts"]),
    Case("rloo-negative-min-new-tokens", T, lambda c: c.online("RLOO", "--min_new_tokens", "-1"),
         ["min_new_tokens must be >= 0"]),
    Case("grpo-unknown-loss", T, lambda c: c.online("GRPO", "--loss_type", "ppo"), ["--loss_type ppo", "dapo"]),
    # --- reward_model.py
    Case("rm-bad-data", R, lambda c: c.rm(data=c.jsonl([ROW, "{oops"])), ["d.jsonl:2", "malformed JSON"]),
    Case("rm-lora-r-zero", R, lambda c: c.rm("--lora_r", "0"), ["--lora_r must be at least 1"]),
    Case("rm-variant-weights", R, lambda c: c.rm("--degenerate_variant_weights", "empty:x"),
         ["--degenerate_variant_weights: bad entry"]),
    Case("rm-negative-ratio", R, lambda c: c.rm("--degenerate_negatives_ratio", "-1"),
         ["--degenerate_negatives_ratio must be"]),
    Case("rm-flag-prefix", R, lambda c: c.rm("--learning_rat", "1e-4"), ["unknown flag(s): --learning_rat"]),
    Case("rm-model-missing", R, lambda c: c.rm("--model_name_or_path", str(c.tmp / "no_model")),
         ["model directory not found"]),
    # --- train_gkd.py
    Case("gkd-teacher-missing", G, lambda c: c.gkd("--teacher_model_name_or_path", str(c.tmp / "no_teacher")),
         ["model directory not found", "no_teacher"]),
    Case("gkd-quantized-teacher-zero3", G, lambda c: c.gkd("--teacher_quantization", "4bit"),
         ["--teacher_quantization", "deepspeed_zero2.yaml"], env=ZERO3),
    Case("gkd-bad-rows", G, lambda c: c.gkd(data=c.jsonl([{"messages": [CHAT["messages"][0]]}])),
         ["field 'messages'"]),
    Case("gkd-bad-quantization", G, lambda c: c.gkd("--teacher_quantization", "2bit"), ["invalid choice: '2bit'"]),
    # --- rejection_sampling.py
    Case("sampling-one-sample", S, lambda c: c.sampling("--num_samples", "1"), ["--num_samples must be >= 2"]),
    Case("sampling-greedy", S, lambda c: c.sampling("--temperature", "0"), ["--temperature must be > 0"]),
    Case("sampling-rm-missing", S, lambda c: c.sampling("--reward_model_path", str(c.tmp / "no_rm")),
         ["reward model not found"]),
    Case("sampling-prompts-missing", S, lambda c: c.sampling("--prompts_path", str(c.tmp / "p.jsonl")),
         ["data file not found"]),
    # --- output folders that are files, cut JSON, the length flags
    Case("output-dir-is-a-file", T, lambda c: c.dpo("--output_dir", c.raw(b"my notes", "notes.txt")),
         ["--output_dir", "notes.txt is a file, not a folder"]),
    Case("model-config-cut", T, lambda c: c.dpo("--model_name_or_path", damaged_model(c, "config")),
         ["config.json does not parse as JSON (cut short?)", "not written completely"]),
    Case("model-weights-cut", T, lambda c: c.dpo("--model_name_or_path", damaged_model(c, "weights")),
         ["model.safetensors is cut short"]),
    Case("odin-from-a-reward-model", R, lambda c: c.rm("--length_debias", "odin", "--model_name_or_path",
                                                       damaged_model(c, "odin")),
         ["--length_debias odin trains a new 2-output score head", "is a reward model"]),
    Case("judge-two-output-head", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path",
                                                damaged_model(c, "odin"), "--eval_data_path", c.good,
                                                "--output_dir", c.out], ["score head has 2 outputs"]),
    Case("output-dir-under-a-file", T, lambda c: c.dpo("--output_dir", c.raw(b"my notes", "notes.txt") + "/run"),
         ["--output_dir", "notes.txt is a file, so no folder can be made there"]),
    Case("probe-output-dir-under-a-file", P, lambda c: [c.model, c.good, "--output_dir",
                                                        c.raw(b"x", "notes.txt") + "/probe"],
         ["--output_dir", "is a file, so no folder can be made there"]),
    Case("eval-output-dir-under-a-file", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path", c.model,
                                                       "--eval_data_path", c.good, "--output_dir",
                                                       c.raw(b"x", "notes.txt") + "/eval"],
         ["is a file, so no folder can be made there"]),
    Case("merge-output-under-a-file", M, lambda c: [make_adapter_dir(c), c.raw(b"x", "notes.txt") + "/merged"],
         ["output folder", "is a file, so no folder can be made there"]),
    Case("rm-output-dir-is-a-file", R, lambda c: c.rm("--output_dir", c.raw(b"my notes", "notes.txt")),
         ["is a file, not a folder"]),
    Case("health-cut-trainer-state", H, lambda c: [cut_run(c)], ["trainer_state.json is not readable JSON"]),
    Case("rdpo-negative", T, lambda c: c.dpo("--rdpo_alpha", "-0.1"), ["--rdpo_alpha must be >= 0"]),
    Case("rdpo-with-ld-alpha", T, lambda c: c.dpo("--rdpo_alpha", "0.01", "--ld_alpha", "0.5"),
         ["--rdpo_alpha and --ld_alpha"]),
    Case("nan-value", T, lambda c: c.dpo("--rdpo_alpha", "nan"), ["--rdpo_alpha: nan is not a finite number"]),
    Case("inf-value", R, lambda c: c.rm("--learning_rate=inf"), ["--learning_rate: inf is not a finite number"]),
    Case("recipe-nan-value", T, lambda c: c.dpo("--config", c.raw(b"beta: .nan\n", "n.yaml")),
         ["--config", "n.yaml", "beta: nan is not a finite number"]),
    Case("rdpo-with-sigmoid-norm", T, lambda c: c.dpo("--rdpo_alpha", "0.01", "--loss_type", "sigmoid_norm"),
         ["--rdpo_alpha does nothing with --loss_type sigmoid_norm"]),
    Case("odin-with-centring", R, lambda c: c.rm("--length_debias", "odin", "--center_rewards_coefficient", "0.01"),
         ["--center_rewards_coefficient does nothing with --length_debias odin"]),
    Case("flag-of-another-method", T, lambda c: c.dpo("--rdpo_alpha", "0.1", method="SimPO"),
         ["unknown flag(s): --rdpo_alpha", "--rdpo_alpha is a flag of DPO only"]),
    Case("recipe-key-of-another-method", T, lambda c: c.dpo("--config", c.raw(b"length_control: batch\n", "d.yaml")),
         ["unknown key 'length_control'", "PPO, RLOO, GRPO only"]),
    Case("length-control-unknown", T, lambda c: c.online("PPO", "--length_control", "reference"),
         ["--length_control", "invalid choice: 'reference'"]),
    Case("length-debias-unknown", R, lambda c: c.rm("--length_debias", "odn"), ["invalid choice: 'odn'"]),
    Case("sampling-output-not-empty", S, lambda c: c.sampling("--output_dir", precious_dir(c)), ["is not empty"]),
    Case("sampling-adapter-base-moved", S, lambda c: c.sampling("--policy_name_or_path", make_adapter_dir(c)),
         ["python -m rlhfkit.rebase_adapter"]),
    # --- --config recipes
    Case("config-unknown-key", T, lambda c: c.dpo("--config", c.raw(b"betta: 0.2\n", "r.yaml")),
         ["--config", "r.yaml", "unknown key 'betta'"]),
    Case("config-missing", R, lambda c: c.rm("--config", str(c.tmp / "none.yaml")), ["--config: no such file"]),
    Case("config-bad-choice", G, lambda c: c.gkd("--config", c.raw(b"teacher_quantization: 3bit\n", "g.yaml")),
         ["teacher_quantization: '3bit' is not one of none, 4bit, 8bit"]),
    Case("config-unknown-method", T, lambda c: c.dpo("--config", c.raw(b"rlhf_type: PPX\n", "m.yaml"))[2:],
         ["unknown --rlhf_type 'PPX'", "m.yaml"]),
    Case("config-no-file", T, lambda c: c.dpo("--config"), ["--config needs a file: --config recipe.yaml"]),
    Case("method-no-value", T, lambda c: c.dpo()[2:] + ["--rlhf_type"],
         ["argument --rlhf_type: expected one argument  (see train_rlhf.py --help)"]),
    Case("config-empty", T, lambda c: c.dpo("--config", c.raw(b"# nothing yet\n", "e.yaml")),
         ["--config", "e.yaml", "the file is empty"]),
    Case("config-key-twice", T, lambda c: c.dpo("--config", c.raw(b"beta: 0.1\nlearning_rate: 1e-4\nbeta: 0.3\n",
                                                                   "t.yaml")),
         ["--config", "t.yaml", "key 'beta' is given twice (line 3)"]),
    Case("config-env-not-a-mapping", T, lambda c: c.dpo("--config", c.raw(b"env: [A=1]\n", "v.yaml")),
         ["--config", "v.yaml", "env: expected a mapping"]),
    # --- python -m rlhfkit.merge_adapter / rebase_adapter
    Case("merge-not-an-adapter", M, lambda c: [c.model, c.out], ["is not a LoRA adapter folder"]),
    Case("merge-base-moved", M, lambda c: [make_adapter_dir(c), c.out], ["python -m rlhfkit.rebase_adapter"]),
    Case("merge-output-not-empty", M, lambda c: [make_adapter_dir(c), precious_dir(c)], ["is not an empty folder"]),
    Case("merge-bad-dtype", M, lambda c: [make_adapter_dir(c), c.out, "--dtype", "int8"], ["--dtype",
                                                                                         "invalid choice"]),
    Case("rebase-not-a-model", B, lambda c: [make_adapter_dir(c), str(c.tmp)], ["is not a model folder"]),
    # --- evaluate.py
    Case("eval-model-missing", E, lambda c: ["--models", f"base={c.tmp / 'nope'}", "--reward_model_path", c.model,
                                             "--eval_data_path", c.good, "--output_dir", c.out],
         ["--models base: no such folder"]),
    Case("eval-model-spec", E, lambda c: ["--models", c.model, "--reward_model_path", c.model, "--eval_data_path",
                                          c.good, "--output_dir", c.out], ["expected NAME=DIR"]),
    Case("eval-no-judge", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path", "none",
                                        "--eval_data_path", c.good, "--output_dir", c.out], ["needs a judge"]),
    Case("eval-judge-missing", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path",
                                             str(c.tmp / "no_rm"), "--eval_data_path", c.good, "--output_dir", c.out],
         ["reward model not found"]),
    Case("eval-bad-baseline", E, lambda c: ["--models", f"base={c.model}", "--baseline", "dpo", "--reward_model_path",
                                            c.model, "--eval_data_path", c.good, "--output_dir", c.out],
         ["--baseline 'dpo' is not one of --models"]),
    Case("eval-same-model-twice", E, lambda c: ["--models", f"base={c.model}", f"again={c.model}/",
                                                "--reward_model_path", c.model, "--eval_data_path", c.good,
                                                "--output_dir", c.out], ["base and again are the same folder"]),
    Case("rs-no-score", S, lambda c: c.sampling("--reward_model_path", "none"),
         ["--reward_model_path", "and/or --reward_function"]),
    Case("rs-reward-function-missing", S, lambda c: c.sampling("--reward_function", str(c.tmp / "nope.py") + ":f"),
         ["--reward_function: no such file"]),
    Case("rs-verifier-without-gold-column", S, lambda c: c.sampling("--reward_model_path", "none", "--reward_function",
                                                                    "rlhfkit.verifiers:math_answer"),
         ["rlhfkit.verifiers:math_answer scores against the column 'answer'"]),
    Case("eval-verifier-without-gold-column", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path",
                                                            "none", "--reward_function",
                                                            "rlhfkit.verifiers:exact_number", "--eval_data_path",
                                                            c.good, "--output_dir", c.out],
         ["rlhfkit.verifiers:exact_number scores against the column 'answer'"]),
    Case("eval-bad-data", E, lambda c: ["--models", f"base={c.model}", "--reward_model_path", c.model,
                                        "--eval_data_path", c.jsonl([ROW, "{x"]), "--output_dir", c.out],
         ["d.jsonl:2", "malformed JSON"]),
    # --- reward functions and gold answers, before any weights load
    Case("reward-file-syntax-error", E, lambda c: c.judge(c.function("def score(prompts:\n    return []\n")),
         ["my_reward.py:1:", "(SyntaxError: the file does not import)"]),
    Case("reward-file-imports-a-missing-package", T,
         lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                         c.function("import math\nimport no_such_pkg_xyz\n"), method="GRPO"),
         ["my_reward.py:2 imports 'no_such_pkg_xyz', which is not installed"]),
    Case("reward-file-raises-on-import", S, lambda c: c.sampling("--reward_function", c.function("SCALE = 1 / 0\n")),
         ["my_reward.py:1: importing it raised ZeroDivisionError: division by zero"]),
    Case("reward-function-needs-a-column-the-rows-lack", T,
         lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                         c.function("def score(prompts, completions, solution, **kw):\n    return [1.0] * len(solution)"
                                    "\n"), method="RLOO"),
         ["scores against the column 'solution', which 8 of the 8 prompt rows lack"]),
    Case("exact-number-gold-is-a-list", T, lambda c: c.dpo("--reward_model_path", "none", "--reward_function",
                                                          "rlhfkit.verifiers:exact_number",
                                                          data=c.gold_rows(answer=[57]), method="PPO"),
         ["rlhfkit.verifiers:exact_number: 8 of 8 prompt rows have gold values it cannot use; the first, row 1 "
          "(prompt 'What is 0 plus 50?'): 'answer' is [57], not a number", "#### 57"]),
    Case("exact-number-gold-is-text", E, lambda c: c.judge("rlhfkit.verifiers:exact_number",
                                                           c.gold_rows(answer="fifty")),
         ["'answer' is 'fifty', not a number"]),
    Case("math-answer-gold-is-a-mapping", S, lambda c: c.sampling("--reward_model_path", "none", "--reward_function",
                                                                  "rlhfkit.verifiers:math_answer", "--prompts_path",
                                                                  c.gold_rows(answer={"x": 1})),
         ["'answer' is {'x': 1}; give it as text or LaTeX"]),
    Case("ifeval-misspelled-instruction-id", E,
         lambda c: c.judge("rlhfkit.verifiers:ifeval", c.gold_rows(instruction_id_list=["punctuation:no_coma"],
                                                                   kwargs=[{}])),
         ["'instruction_id_list' has 'punctuation:no_coma', which is not an IFEval instruction"]),
    Case("ifeval-fewer-kwargs-than-ids", S,
         lambda c: c.sampling("--reward_model_path", "none", "--reward_function", "rlhfkit.verifiers:ifeval",
                              "--prompts_path", c.gold_rows(instruction_id_list=["punctuation:no_comma",
                                                                                 "change_case:english_lowercase"],
                                                            kwargs=[{}])),
         ["'kwargs' must be a list of one mapping per instruction id (2), got [{}]"]),
    Case("ifeval-argument-the-checker-does-not-take", E,
         lambda c: c.judge("rlhfkit.verifiers:ifeval", c.gold_rows(instruction_id_list=["keywords:existence"],
                                                                   kwargs=[{"keyword": ["a"]}])),
         ["'kwargs' for 'keywords:existence' has 'keyword', which its checker does not take (it takes: keywords)"]),
    Case("sampling-zero-prompts", S, lambda c: c.sampling("--reward_model_path", "none", "--reward_function",
                                                          "rlhfkit.verifiers:exact_number", "--max_prompts", "0"),
         ["--max_prompts must be at least 1, got 0"]),
    Case("sampling-zero-new-tokens", S, lambda c: c.sampling("--max_new_tokens", "0"),
         ["--max_new_tokens must be at least 1, got 0"]),
    Case("sampling-top-p-zero", S, lambda c: c.sampling("--top_p", "0"), ["--top_p must be in (0, 1]"]),
    Case("eval-top-p-above-one", E, lambda c: c.judge("rlhfkit.verifiers:exact_number") + ["--top_p", "1.5"],
         ["--top_p must be in (0, 1]"]),
    Case("grpo-function-with-a-missing-reward-model", T,
         lambda c: c.online("GRPO", "--reward_model_path", str(c.tmp / "no_rm")),
         ["reward model not found", "no_rm", "or score with a --reward_function alone: --reward_model_path none"]),
    # --- python -m rlhfkit.report.rm_probe
    Case("probe-rm-missing", P, lambda c: [str(c.tmp / "missing_rm"), c.good], ["reward model not found",
                                                                                "missing_rm"]),
    Case("probe-data-missing", P, lambda c: [c.model, str(c.tmp / "pairs.jsonl")], ["data file not found"]),
    Case("probe-zero-prompts", P, lambda c: [c.model, c.good, "--max_prompts", "0"], ["--max_prompts must be >= 1"]),
]


def make_adapter_dir(c: Ctx) -> str:
    path = c.tmp / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text('{"base_model_name_or_path": "x", "peft_type": "LORA"}')
    return str(path)


def damaged_model(c: Ctx, damage: str) -> str:
    """A copy of the tiny model with config.json cut short, model.safetensors half-written, or (as a reward model)
    a score head with two outputs, like a checkpoint of an ODIN run.
    """
    folder = c.tmp / f"model_{damage}"
    shutil.copytree(c.model, folder)
    if damage == "config":
        text = (folder / "config.json").read_text()
        (folder / "config.json").write_text(text[:len(text) // 2])
    elif damage == "weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    else:
        from safetensors.torch import save_file

        (folder / "model.safetensors").unlink()
        save_file({"model.score.weight": torch.zeros(2, 64)}, str(folder / "model.safetensors"))
    return str(folder)


def cut_run(c: Ctx) -> str:
    """A run folder whose trainer_state.json was cut short (a killed save)."""
    folder = c.tmp / "cut_run"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": 0.6')
    return str(folder)


def precious_dir(c: Ctx) -> str:
    """An output folder that already holds the user's work (the 'non-empty output_dir' case)."""
    os.makedirs(c.out, exist_ok=True)
    with open(os.path.join(c.out, "precious.txt"), "w") as f:
        f.write("keep me")
    return c.out


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any model weights are loaded."""
    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"weights were loaded: {cls.__name__}.from_pretrained{args[:1]}")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_the_catalogue_is_large_and_has_unique_ids():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_error_line(case, tiny_model_dir, tmp_path, monkeypatch, capsys, no_weights):
    if case.id.startswith("ifeval-"):
        needs_lm_eval()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    ctx = Ctx(tmp_path, tiny_model_dir)
    argv = case.argv(ctx)
    before = snapshot(ctx.out)
    message = one_error_line(case.script, argv, capsys)
    for words in case.expect:
        assert words in message, f"{words!r} not in:\n{message}"
    assert snapshot(ctx.out) == before, "output_dir was changed"


def one_error_line(script, argv, capsys) -> str:
    """Run `script` behind `run_cli`; check exit status 2, no traceback, one `error:` line, and return it."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(script, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    message = err[err.index("error: "):] if "error: " in err else ""
    assert message, f"no 'error:' line in:\n{err}"
    assert message.count("error: ") == 1
    return message


def snapshot(folder: str) -> dict | None:
    """Every file under `folder` with its bytes, or None if the folder does not exist."""
    if not os.path.isdir(folder):
        return None
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, files in os.walk(folder) for f in files}


def test_a_byte_order_mark_is_accepted(tmp_path):
    from rlhfkit.data.offline import load_preference_file

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    rows = load_preference_file(str(path), log=lambda *_: None)
    assert rows[0]["prompt"] == [{"role": "user", "content": "q"}]


def test_rlhf_debug_shows_the_traceback(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_DEBUG", "1")
    with pytest.raises(SystemExit):
        run_cli(train_rlhf.main, Ctx(tmp_path, tiny_model_dir).dpo("--lora_r", "0"))
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: --lora_r must be at least 1" in err


def test_only_rank_zero_prints(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_rlhf.main, Ctx(tmp_path, tiny_model_dir).dpo("--lora_r", "0"))
    assert exit_info.value.code == 2 and capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback(monkeypatch):
    def buggy(argv):
        raise KeyError("a bug, not the user's fault")

    with pytest.raises(KeyError):
        run_cli(buggy, [])


def run_script(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("RLHF_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          **kw)


@pytest.mark.parametrize("script", ["train_rlhf.py", "reward_model.py", "train_gkd.py"])
def test_the_command_line_exits_2_with_one_line(script, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [ROW, "{oops"])
    teacher = ["--teacher_model_name_or_path", tiny_model_dir] if script == "train_gkd.py" else []
    done = run_script([script, "--model_name_or_path", tiny_model_dir, "--train_data_path", data,
                       "--output_dir", str(tmp_path / "out"), "--report_to", "none", *teacher])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: 1 problem(s) in the data:\n  " + data + ":2: field '(row)': malformed JSON" in done.stderr
    assert not (tmp_path / "out").exists()


def test_two_processes_print_the_error_once(tiny_model_dir, tmp_path):
    """Rank 0 prints the line; the launcher's own failure summary below it names the same message as root cause."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_script(["-m", "accelerate.commands.launch", "--config_file", os.path.join("ds_config", "multi_gpu.yaml"),
                       "--num_processes", "2", "--main_process_port", str(port), "train_rlhf.py",
                       *Ctx(tmp_path, tiny_model_dir).dpo("--lora_r", "0")])
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert lines.count("error: --lora_r must be at least 1, got 0") == 1, done.stderr
    assert "traceback : error: --lora_r must be at least 1, got 0" in done.stderr  # the launcher's root cause
    assert "Traceback" not in done.stderr.split("error: --lora_r")[0]  # no child traceback above the line


# ------------------------------------------------------------------------------------------------------------------
# What a reward function returns is checked at every call: one line naming it, nothing half-written

BROKEN = {  # a reward function's body -> the words of the message
    "none": ("return None", "reward function score returned None for 2 answers; it must return a list"),
    "strings": ('return ["good"] * len(prompts)', "reward function score returned 'good' for answer 1 of"),
    "too-many": ("return [0.0] * (2 * len(prompts))", "reward function score returned 2 values for 1 answers"),
    "nan": ('return [float("nan")] * len(prompts)', "reward function score returned nan for answer 1 of"),
}
SHORT = {"GRPO": ["--max_completion_length", "4", "--num_generations", "2", "--per_device_train_batch_size", "2"],
         "RLOO": ["--max_completion_length", "4", "--num_generations", "2", "--per_device_train_batch_size", "2"],
         "PPO": ["--response_length", "4"]}


@pytest.mark.parametrize("method, broken", [("GRPO", "none"), ("RLOO", "strings"), ("PPO", "too-many"),
                                            ("PPO", "nan")])
def test_a_bad_score_in_training_is_one_line_naming_the_function(method, broken, tiny_model_dir, tmp_path, capsys):
    body, words = BROKEN[broken]
    c = Ctx(tmp_path, tiny_model_dir)
    function = c.function(f"def score(prompts, completions, **kw):\n    {body}\n")
    message = one_error_line(train_rlhf.main, c.dpo("--reward_model_path", "none", "--reward_function", function,
                                                    "--max_steps", "1", *SHORT[method], method=method), capsys)
    assert words in message, message
    if broken in ("strings", "nan"):  # a bad value: the prompt it was given for
        assert "(prompt 'Tell me about" in message, message
    assert snapshot(c.out) in (None, {}), "output_dir was written"


def test_a_bad_score_in_evaluation_or_sampling_is_one_line(tiny_model_dir, tmp_path, capsys):
    c = Ctx(tmp_path, tiny_model_dir)
    strings = c.function("def score(prompts, completions, **kw):\n    return ['1.0'] * len(prompts)\n")
    message = one_error_line(evaluate.main, c.judge(strings) + ["--max_prompts", "2", "--max_new_tokens", "2"],
                             capsys)
    assert "reward function score returned '1.0' for answer 1 of 2 (prompt" in message
    nan = c.function("def score(prompts, completions, **kw):\n    return [float('inf')] * len(prompts)\n")
    message = one_error_line(rejection_sampling.main, c.sampling("--reward_model_path", "none", "--reward_function",
                                                                 nan, "--max_prompts", "2", "--max_new_tokens", "2"),
                             capsys)
    assert "reward function score returned inf for answer 1 of" in message
    assert not os.path.exists(c.out)


def test_scores_are_checked_and_none_means_no_opinion():
    from rlhfkit.reward import check_scores

    def f():
        pass

    prompts = [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]]
    assert check_scores([1, None], f, prompts) == [1.0, None]
    assert check_scores(torch.tensor([0.5, 2.0]), f, prompts) == [0.5, 2.0]
    for out, words in [(None, "returned None for 2 answers"), ([1.0], "returned 1 values for 2 answers"),
                       ([1.0, True], "returned True for answer 2 of 2 (prompt 'q2')"),
                       ([None, None], "returned None for all 2 answers"), ("10", "returned '10' for 2 answers")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            check_scores(out, f, prompts)


def test_a_function_gets_only_the_keywords_it_takes_and_keeps_its_name(tmp_path):
    from rlhfkit.reward import call_reward_function, load_reward_function

    path = tmp_path / "narrow.py"
    path.write_text("def narrow(completions, answer):\n    return [float(len(c) == a) for c, a in zip(completions, "
                    "answer)]\n")
    function = load_reward_function(f"{path}:narrow")
    assert function.__name__ == "narrow"
    assert call_reward_function(function, ["q", "r"], ["ab", "abc"], [[1], [2]], [{"prompt": "q", "answer": 2},
                                                                                  {"prompt": "r", "answer": 2}],
                                trainer_state=None) == [1.0, 0.0]


def test_a_gold_column_keeps_its_name_unless_the_row_has_that_shape(tmp_path):
    from rlhfkit.data.prompts import prompt_rows
    from rlhfkit.reward import check_gold_columns

    assert prompt_rows({"prompt": "Is it spam?", "label": "spam"})[1] == [
        {"prompt": [{"role": "user", "content": "Is it spam?"}], "label": "spam"}]
    assert "label" not in prompt_rows({"prompt": "q", "completion": "a", "label": True})[1][0]  # KTO's own label
    assert prompt_rows({"prompt": "q", "scores": [1, 2]})[1][0]["scores"] == [1, 2]

    def spam(prompts, completions, label, **kwargs):
        return [float(c == label_) for c, label_ in zip(completions, label)]

    check_gold_columns(spam, [prompt_rows({"prompt": "Is it spam?", "label": "spam"})[1][0]], "f.py:spam")


def test_a_reward_function_with_the_default_reward_model_path_uses_none_and_says_so(tiny_model_dir, tmp_path,
                                                                                    monkeypatch, capsys, no_weights):
    monkeypatch.chdir(tmp_path)  # no output/reward_model here
    c = Ctx(tmp_path, tiny_model_dir)
    args = ["--rlhf_type", "GRPO", "--model_name_or_path", tiny_model_dir, "--train_data_path", c.good,
            "--output_dir", c.out, "--reward_function", c.reward_fn_file() + ":score", "--check"]
    train_rlhf.main(args)
    out = capsys.readouterr().out
    assert "no reward model at the default --reward_model_path output/reward_model: the reward is " \
           "--reward_function" in out
    from eval_args.eval_config import EvalArgs

    assert EvalArgs(reward_function="f.py:score").reward_model_path is None
    os.makedirs("output/reward_model")  # a folder there: it is used (and checked) as before
    assert EvalArgs(reward_function="f.py:score").reward_model_path == "output/reward_model"


# ------------------------------------------------------------------------------------------------------------------
# script/benchmark_verifiable.py: the same boundary


@pytest.fixture
def benchmark(monkeypatch, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "script"))
    import benchmark_verifiable

    monkeypatch.setattr(benchmark_verifiable, "OUT", str(tmp_path / "verifiable"))
    monkeypatch.setattr(benchmark_verifiable, "DATA", str(tmp_path / "verifiable" / "data"))
    return benchmark_verifiable


def test_benchmark_mistakes_are_one_line(benchmark, tmp_path, monkeypatch, capsys):
    assert "trl-grpo takes OUTPUT_DIR [STEPS], got nothing" in one_error_line(benchmark.main, ["trl-grpo"], capsys)
    assert "no row has finished under" in one_error_line(benchmark.main, ["report"], capsys)
    monkeypatch.setattr(benchmark, "MODEL", str(tmp_path / "no_model"))
    message = one_error_line(benchmark.main, ["run", "base"], capsys)
    assert "the demo model" in message and "python -m rlhfkit.demo_model" in message
    assert "unknown row(s) ppo;" in one_error_line(benchmark.main, ["run", "ppo"], capsys)


def test_benchmark_names_a_failed_rows_error_line(benchmark):
    import subprocess

    os.makedirs(os.path.join(benchmark.OUT, "grpo"))
    with open(os.path.join(benchmark.OUT, "grpo", "log.txt"), "w") as f:
        f.write("[data] 2000 prompts\nerror: reward model not found: x\n")
    error = subprocess.CalledProcessError(2, [sys.executable, "train_rlhf.py", "--rlhf_type", "GRPO"])
    assert benchmark.row_failure("grpo", error) == (
        f"row grpo: `python train_rlhf.py ...` stopped with exit status 2: reward model not found: x (its "
        f"whole output: {benchmark.OUT}/grpo/log.txt)")


def test_benchmark_docstring_names_only_real_rows(benchmark):
    named = re.findall(r"benchmark_verifiable\.py run ([\w ]+?)\s+#", benchmark.__doc__)
    assert named and all(row in benchmark.ROWS for line in named for row in line.split())
