"""Crash safety: torn checkpoints are told apart from complete ones (rlhfkit/checkpoint.py), `--resume_from_checkpoint
true` skips them for every method family, a run killed with SIGKILL resumes with the same losses, and a NaN loss
stops the run before a checkpoint of the diverged weights is written.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, base_flags, write_jsonl
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOTrainer

import reward_model
import train_gkd
import train_rlhf
from rlhfkit.checkpoint import checkpoint_problem, list_checkpoints, scan_checkpoints
from rlhfkit.errors import ConfigError, OutputExistsError, PathNotFoundError, TrainingDivergedError
from rlhfkit.methods.trl_online import GRPOTrainer, RLOOTrainer
from rlhfkit.outputs import NonFiniteLossGuard, non_finite_values, prepare_output_dir
from rlhfkit.ppo.trainer import STATE_FILE, TRAINABLE_FILE, PPOTrainer

REWARD_FILE = ("def length(prompts, completions, completion_ids, **kwargs):\n"
               "    return [float(len(c)) for c in completion_ids]\n")
DPO_FLAGS = ("--eval_split_size", "0", "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "10")


def cut(path, keep=0.5):
    """Truncate a file to `keep` of its length, as a kill in the middle of writing it would."""
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def loss_steps(trainer):
    return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}


def count_training_steps(monkeypatch, trainer_class):
    """Record every `training_step` call of `trainer_class` (one per micro-batch)."""
    calls, original = [], trainer_class.training_step
    monkeypatch.setattr(trainer_class, "training_step",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, easy_data, tmp_path_factory):
    """An uninterrupted 4-step DPO LoRA run with a checkpoint after every step."""
    out = tmp_path_factory.mktemp("dpo_run") / "out"
    trainer = train_rlhf.main(base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--max_steps", "4"))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    return SimpleNamespace(out=out, losses=loss_steps(trainer), adapter=adapter)


def copy_checkpoints(run_out, out, steps):
    out.mkdir(parents=True, exist_ok=True)
    for step in steps:
        shutil.copytree(run_out / f"checkpoint-{step}", out / f"checkpoint-{step}")
    return out


def resume_config(out, resume="true"):
    return SimpleNamespace(output_dir=str(out), resume_from_checkpoint=resume)


# ------------------------------------------------------------------------------------------------------------------
# The integrity check on hand-made torn copies of one real checkpoint


def remove(name):
    return lambda folder: os.remove(folder / name)


TEARS = {
    "empty folder": (lambda folder: [os.remove(folder / n) for n in os.listdir(folder)], "empty folder"),
    "no trainer_state.json": (remove("trainer_state.json"),
                              "no trainer_state.json (the save stopped before its last file)"),
    "cut trainer_state.json": (lambda folder: cut(folder / "trainer_state.json"),
                               "trainer_state.json does not parse as JSON (cut short?)"),
    "cut optimizer.pt": (lambda folder: cut(folder / "optimizer.pt", 0.99),
                         "optimizer.pt is cut short (not a complete zip archive)"),
    "cut scheduler.pt": (lambda folder: cut(folder / "scheduler.pt"),
                         "scheduler.pt is cut short (not a complete zip archive)"),
    "cut rng_state.pth": (lambda folder: cut(folder / "rng_state.pth"),
                          "rng_state.pth is cut short (not a complete zip archive)"),
    "cut safetensors data": (lambda folder: cut(folder / "adapter_model.safetensors", 0.9),
                             "adapter_model.safetensors is cut short ({size} of {full} bytes)"),
    "cut safetensors header": (lambda folder: cut(folder / "adapter_model.safetensors", 0.0005),
                               "adapter_model.safetensors is cut short (its safetensors header is incomplete)"),
    "no weights": (remove("adapter_model.safetensors"),
                   "no model weights (no model.safetensors or adapter_model.safetensors)"),
}


@pytest.mark.parametrize("tear", list(TEARS))
def test_a_torn_checkpoint_is_named_with_its_reason(dpo_run, tmp_path, tear):
    good = dpo_run.out / "checkpoint-2"
    assert checkpoint_problem(str(good)) is None
    folder = copy_checkpoints(dpo_run.out, tmp_path, [2]) / "checkpoint-2"
    full = os.path.getsize(folder / "adapter_model.safetensors")
    damage, reason = TEARS[tear]
    damage(folder)
    weights = folder / "adapter_model.safetensors"
    size = os.path.getsize(weights) if weights.exists() else 0
    assert checkpoint_problem(str(folder)) == reason.format(size=size, full=full)


def test_ppo_state_files_and_deepspeed_shards_are_checked_too(dpo_run, tmp_path):
    folder = copy_checkpoints(dpo_run.out, tmp_path, [2]) / "checkpoint-2"
    (folder / STATE_FILE).write_text('{"kl_coef": 0.05, "score_')
    assert checkpoint_problem(str(folder)) == f"{STATE_FILE} does not parse as JSON (cut short?)"
    (folder / STATE_FILE).write_text('{"kl_coef": 0.05}')
    shutil.copy(folder / "adapter_model.safetensors", folder / TRAINABLE_FILE)
    assert checkpoint_problem(str(folder)) is None
    cut(folder / TRAINABLE_FILE)
    assert checkpoint_problem(str(folder)).startswith(f"{TRAINABLE_FILE} is cut short (")
    os.remove(folder / TRAINABLE_FILE)
    (folder / "global_step2").mkdir()
    shutil.copy(folder / "optimizer.pt", folder / "global_step2" / "mp_rank_00_model_states.pt")
    assert checkpoint_problem(str(folder)) == "no DeepSpeed 'latest' file (the DeepSpeed save did not finish)"
    (folder / "latest").write_text("global_step2")
    assert checkpoint_problem(str(folder)) is None
    cut(folder / "global_step2" / "mp_rank_00_model_states.pt")
    assert checkpoint_problem(str(folder)) == ("global_step2/mp_rank_00_model_states.pt is cut short "
                                               "(not a complete zip archive)")


def test_scan_returns_the_newest_complete_checkpoint_and_every_torn_one(dpo_run, tmp_path):
    out = copy_checkpoints(dpo_run.out, tmp_path / "out", [1, 2, 3, 4])
    os.remove(out / "checkpoint-1" / "trainer_state.json")
    cut(out / "checkpoint-4" / "optimizer.pt")
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    scan = scan_checkpoints(str(out))
    assert scan.newest == str(out / "checkpoint-3")
    assert scan.torn == [(str(out / "checkpoint-10"), "empty folder"),
                         (str(out / "checkpoint-4"), "optimizer.pt is cut short (not a complete zip archive)"),
                         (str(out / "checkpoint-1"), "no trainer_state.json (the save stopped before its last file)")]
    assert scan_checkpoints(str(tmp_path / "nowhere")) == (None, [])


# ------------------------------------------------------------------------------------------------------------------
# prepare_output_dir: what --resume_from_checkpoint picks, and the errors


def test_resume_true_skips_the_torn_newest_checkpoint_and_keeps_it(dpo_run, tmp_path, capsys):
    out = copy_checkpoints(dpo_run.out, tmp_path / "out", [1, 2, 3])
    cut(out / "checkpoint-3" / "optimizer.pt")
    for resume in ("true", "last"):
        assert prepare_output_dir(resume_config(out, resume)) == str(out / "checkpoint-2")
        assert capsys.readouterr().out == (f"[resume] skipping {out / 'checkpoint-3'}: optimizer.pt is cut short "
                                           f"(not a complete zip archive)\n")
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]  # nothing deleted


def test_an_explicit_torn_checkpoint_is_refused_with_its_reason(dpo_run, tmp_path):
    out = copy_checkpoints(dpo_run.out, tmp_path / "out", [1, 2])
    os.remove(out / "checkpoint-2" / "trainer_state.json")
    with pytest.raises(ConfigError, match=r"checkpoint-2 is incomplete \(no trainer_state.json .*\), so it cannot be "
                                          r"resumed from; the newest complete one next to it is .*checkpoint-1$"):
        prepare_output_dir(resume_config(out, str(out / "checkpoint-2")))
    assert prepare_output_dir(resume_config(out, str(out / "checkpoint-1"))) == str(out / "checkpoint-1")


def test_no_complete_checkpoint_and_no_checkpoint_are_errors(tmp_path, capsys):
    (tmp_path / "torn" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(PathNotFoundError, match="no complete checkpoint in .*torn: all 1 checkpoint-N/ folders are "
                                                "torn"):
        prepare_output_dir(resume_config(tmp_path / "torn"))
    assert "checkpoint-5: empty folder" in capsys.readouterr().out
    with pytest.raises(PathNotFoundError, match="no checkpoint-N/ folder in"):
        prepare_output_dir(resume_config(tmp_path / "nowhere"))
    with pytest.raises(PathNotFoundError, match="no such checkpoint: .*nowhere/checkpoint-1"):
        prepare_output_dir(resume_config(tmp_path, str(tmp_path / "nowhere" / "checkpoint-1")))
    with pytest.raises(OutputExistsError, match="is not empty; nothing is overwritten"):
        prepare_output_dir(resume_config(tmp_path / "torn", None))


# ------------------------------------------------------------------------------------------------------------------
# Resume after a torn save: the same losses as an uninterrupted run (DPO), the step count for every method family


@pytest.mark.slow  # the SIGKILL test below checks the same on a real kill
def test_dpo_resumed_past_a_torn_checkpoint_logs_the_losses_of_an_uninterrupted_run(
        dpo_run, tiny_model_dir, easy_data, tmp_path, monkeypatch, capsys):
    out = copy_checkpoints(dpo_run.out, tmp_path / "out", [1, 2, 3])
    cut(out / "checkpoint-3" / "adapter_model.safetensors")  # killed while writing checkpoint-3
    os.remove(out / "checkpoint-3" / "trainer_state.json")
    steps_run = count_training_steps(monkeypatch, DPOTrainer)
    trainer = train_rlhf.main(base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--max_steps", "4",
                                         "--resume_from_checkpoint", "true"))
    said = capsys.readouterr().out
    assert f"[resume] skipping {out / 'checkpoint-3'}: adapter_model.safetensors is cut short (" in said
    assert trainer.state.global_step == 4 and len(steps_run) == 2  # steps 3 and 4 only
    resumed = loss_steps(trainer)
    assert sorted(resumed) == [1, 2, 3, 4]
    assert dpo_run.losses[4] != dpo_run.losses[2]  # the loss moves, so equal values below are not trivial
    for step in (3, 4):
        assert resumed[step] == pytest.approx(dpo_run.losses[step], abs=1e-6)
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert all(torch.allclose(adapter[k], dpo_run.adapter[k], atol=1e-6) for k in dpo_run.adapter)
    assert checkpoint_problem(str(out / "checkpoint-3")) is None  # the resumed run wrote checkpoint-3 again


@pytest.fixture(scope="module")
def reward_function(tmp_path_factory):
    path = tmp_path_factory.mktemp("reward") / "reward.py"
    path.write_text(REWARD_FILE)
    return f"{path}:length"


@pytest.fixture(scope="module")
def gkd_rows(tmp_path_factory):
    from conftest import easy_pairs

    rows = [{"messages": r["prompt"] + r["chosen"]} for r in easy_pairs(12)]
    return write_jsonl(tmp_path_factory.mktemp("gkd") / "train.jsonl", rows)


ONLINE = ("--reward_model_path", "none", "--warmup_steps", "0", "--per_device_train_batch_size", "2")
FAMILIES = {  # script, trainer class, extra flags, the file cut in checkpoint-2 (None: trainer_state.json removed)
    "reward model": (reward_model, reward_model.RewardTrainer, ("--probe_prompts", "0"), "adapter_model.safetensors"),
    "PPO separate": (train_rlhf, PPOTrainer, ("--rlhf_type", "PPO", *ONLINE, "--response_length", "4",
                                              "--num_ppo_epochs", "1"), TRAINABLE_FILE),
    "PPO adapters": (train_rlhf, PPOTrainer, ("--rlhf_type", "PPO", "--model_mode", "adapters", *ONLINE,
                                              "--response_length", "4", "--num_ppo_epochs", "1"), "optimizer.pt"),
    "GRPO": (train_rlhf, GRPOTrainer, ("--rlhf_type", "GRPO", *ONLINE, "--max_completion_length", "4",
                                                  "--num_generations", "2"), None),
    "RLOO": (train_rlhf, RLOOTrainer, ("--rlhf_type", "RLOO", *ONLINE, "--max_completion_length", "4",
                                                  "--num_generations", "2"), "rng_state.pth"),
    "GKD": (train_gkd, train_gkd.GKDTrainer, ("--lmbda", "0", "--per_device_train_batch_size", "2"), "scheduler.pt"),
}
FAST = ("reward model", "PPO separate", "GKD")  # the others take 13-15 s each


@pytest.mark.parametrize("family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_each_method_family_resumes_from_the_last_complete_checkpoint(
        family, tiny_model_dir, easy_data, gkd_rows, reward_function, tmp_path, monkeypatch, capsys):
    script, trainer_class, extra, torn_file = FAMILIES[family]
    out = tmp_path / "out"
    extra = (*extra, "--reward_function", reward_function) if "--rlhf_type" in extra else extra
    if script is train_gkd:
        extra = (*extra, "--teacher_model_name_or_path", tiny_model_dir)
    flags = base_flags(tiny_model_dir, gkd_rows if script is train_gkd else easy_data[0], out, *DPO_FLAGS, *extra)
    script.main(flags + ["--max_steps", "2"])
    if torn_file:
        cut(out / "checkpoint-2" / torn_file)
    else:
        os.remove(out / "checkpoint-2" / "trainer_state.json")
    capsys.readouterr()
    steps_run = count_training_steps(monkeypatch, trainer_class)
    trainer = script.main(flags + ["--max_steps", "3", "--resume_from_checkpoint", "true"])
    said = capsys.readouterr().out
    assert f"[resume] skipping {out / 'checkpoint-2'}: {torn_file or 'no trainer_state.json'}" in said
    assert trainer.state.global_step == 3 and len(steps_run) == 2  # steps 2 and 3, from checkpoint-1
    assert sorted(loss_steps(trainer)) == [1, 2, 3]
    assert scan_checkpoints(str(out)) == (str(out / "checkpoint-3"), [])
    assert any(isinstance(c, NonFiniteLossGuard) for c in trainer.callback_handler.callbacks)  # the NaN guard is on


# ------------------------------------------------------------------------------------------------------------------
# Real SIGKILLs, in a subprocess


KILL_DURING_SAVE = """
import os, signal, sys
sys.path.insert(0, {root!r})
from transformers import Trainer
import train_rlhf
from rlhfkit.errors import run_cli

save = Trainer._save_optimizer_and_scheduler

def save_then_die(self, output_dir):  # the kill lands while optimizer.pt is half written
    save(self, output_dir)
    if output_dir.endswith("checkpoint-{step}"):
        path = os.path.join(output_dir, "optimizer.pt")
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

Trainer._save_optimizer_and_scheduler = save_then_die
run_cli(train_rlhf.main, sys.argv[1:])
"""


def child_env():
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")


def check_final_adapter_loads(tiny_model_dir, out):
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    ids = AutoTokenizer.from_pretrained(str(out))("Tell me about tea.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_sigkill_while_a_checkpoint_is_written_resumes_from_the_one_before_with_the_same_losses(
        dpo_run, tiny_model_dir, easy_data, tmp_path, monkeypatch, capsys):
    """Offline DPO killed while writing checkpoint-3, resumed: losses and weights as in the uninterrupted run."""
    out = tmp_path / "out"
    script = tmp_path / "kill_during_save.py"
    script.write_text(KILL_DURING_SAVE.format(root=ROOT, step=3))
    flags = base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--max_steps", "4")
    done = subprocess.run([sys.executable, str(script), *flags], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert scan_checkpoints(str(out)) == (str(out / "checkpoint-2"), [
        (str(out / "checkpoint-3"), "optimizer.pt is cut short (not a complete zip archive)")])

    steps_run = count_training_steps(monkeypatch, DPOTrainer)
    trainer = train_rlhf.main(flags + ["--resume_from_checkpoint", "true"])
    assert f"[resume] skipping {out / 'checkpoint-3'}: optimizer.pt is cut short" in capsys.readouterr().out
    assert trainer.state.global_step == 4 and len(steps_run) == 2  # steps 3 and 4, from checkpoint-2
    resumed = loss_steps(trainer)
    assert sorted(resumed) == [1, 2, 3, 4]
    assert dpo_run.losses[4] != dpo_run.losses[2]  # the loss moves, so equal values below are not trivial
    assert [resumed[s] for s in (3, 4)] == pytest.approx([dpo_run.losses[s] for s in (3, 4)], abs=1e-6)
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert all(torch.allclose(adapter[k], dpo_run.adapter[k], atol=1e-6) for k in dpo_run.adapter)
    check_final_adapter_loads(tiny_model_dir, out)


@pytest.mark.slow
def test_sigkill_from_outside_once_the_second_checkpoint_appears(tiny_model_dir, easy_data, tmp_path, monkeypatch):
    """Killed at an unknown point of writing checkpoint-2 (or just after): resume from whichever is complete."""
    out = tmp_path / "out"
    flags = base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--max_steps", "6")
    child = subprocess.Popen([sys.executable, "train_rlhf.py", *flags], cwd=ROOT, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-2").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL, child.stderr.read()[-3000:]
    scan = scan_checkpoints(str(out))
    assert scan.newest in (str(out / "checkpoint-1"), str(out / "checkpoint-2"))
    start = int(scan.newest.rsplit("-", 1)[1])

    steps_run = count_training_steps(monkeypatch, DPOTrainer)
    trainer = train_rlhf.main(flags + ["--resume_from_checkpoint", "true"])
    assert trainer.state.global_step == 6 and len(steps_run) == 6 - start
    assert sorted(loss_steps(trainer)) == [1, 2, 3, 4, 5, 6]
    check_final_adapter_loads(tiny_model_dir, out)


# ------------------------------------------------------------------------------------------------------------------
# NaN / inf guard


def test_non_finite_values_watch_every_loss_key_and_the_gradient_norm():
    logs = {"loss": 0.5, "eval_loss": float("nan"), "loss/policy_avg": float("inf"), "nll_loss": float("-inf"),
            "grad_norm": float("nan"), "logps/chosen": float("-inf"), "learning_rate": 1e-5}
    assert list(non_finite_values(logs)) == ["eval_loss", "loss/policy_avg", "nll_loss", "grad_norm"]
    assert list(non_finite_values(logs, include_grad_norm=False)) == ["eval_loss", "loss/policy_avg", "nll_loss"]
    assert non_finite_values({"loss": 0.7, "grad_norm": 3.0}) == {}


def poison_loss_from_step(monkeypatch, trainer_class, step):
    """Make `compute_loss` return NaN for optimizer step `step` and later (1-based)."""
    original = trainer_class.compute_loss

    def poisoned(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        if self.state.global_step + 1 >= step:
            loss = (loss[0] * float("nan"), *loss[1:]) if isinstance(loss, tuple) else loss * float("nan")
        return loss

    monkeypatch.setattr(trainer_class, "compute_loss", poisoned)


def test_nan_loss_stops_dpo_before_it_is_saved_and_names_the_last_good_checkpoint(
        tiny_model_dir, easy_data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    poison_loss_from_step(monkeypatch, DPOTrainer, 3)
    # logging_steps 10 > save_steps 1: the guard logs each saved step itself, so step 3 is caught before its save
    flags = base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--max_steps", "5", "--logging_steps", "10")
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step 3: loss = nan, grad_norm = nan; "
                                                    r"nothing was saved after it, and the last good checkpoint is "
                                                    rf"{out / 'checkpoint-2'}: resume from it"):
        train_rlhf.main(flags)
    assert list_checkpoints(str(out)) == [str(out / "checkpoint-2"), str(out / "checkpoint-1")]  # no checkpoint-3
    assert not (out / "adapter_model.safetensors").exists()  # and no final model
    assert scan_checkpoints(str(out)) == (str(out / "checkpoint-2"), [])
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoint-2" / "adapter_model.safetensors"))
               .values())


def test_nan_loss_stops_ppo_before_it_is_saved(tiny_model_dir, easy_data, reward_function, tmp_path, monkeypatch):
    out = tmp_path / "out"
    poison_loss_from_step(monkeypatch, PPOTrainer, 2)
    flags = base_flags(tiny_model_dir, easy_data[0], out, *DPO_FLAGS, "--rlhf_type", "PPO", *ONLINE,
                       "--reward_function", reward_function, "--response_length", "4", "--num_ppo_epochs", "1",
                       "--max_steps", "4")
    with pytest.raises(TrainingDivergedError, match=rf"at step 2: loss = nan, grad_norm = nan; .*last good "
                                                    rf"checkpoint is {out / 'checkpoint-1'}:"):
        train_rlhf.main(flags)
    assert list_checkpoints(str(out)) == [str(out / "checkpoint-1")]
    assert not (out / "adapter_model.safetensors").exists()

