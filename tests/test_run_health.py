"""rlhfkit/report/run_health.py: each rule fires on a synthetic log history built to trigger it and stays silent on a
healthy one; the CLI and report.html; samples.jsonl from PPO, RLOO and GRPO runs on the toy task of test_ppo.py.
"""

import json
import math

import pytest

from rlhfkit.errors import PathNotFoundError
from rlhfkit.report import health_base, health_offline, health_online, health_rm, run_health
from rlhfkit.report.health_base import HealthThresholds, RunInfo
from rlhfkit.report.run_health import health_for
from rlhfkit.report.samples import is_sampled_rollout, read_samples, write_samples


def check_history(history, run, thresholds=None):
    """The findings of the rules `run_health` picks for `run.method` on one log history."""
    return health_base.check_history(history, run, health_for(run.method), thresholds)


def log(n, **curves):
    """A log history of n train entries; each curve is a function of the step index i (0..n-1) or a constant."""
    return [{"step": i + 1, **{k.replace("__", "/"): (f(i) if callable(f) else f) for k, f in curves.items()}}
            for i in range(n)]


HEALTHY = {
    "DPO": log(12, loss=lambda i: 0.69 - 0.02 * i, rewards__chosen=lambda i: 0.01 * i,
               rewards__rejected=lambda i: -0.05 * i, rewards__margins=lambda i: 0.06 * i),
    "PPO": log(12, loss=0.1, objective__kl=lambda i: 0.5 * i, objective__scores=lambda i: 0.1 * i,
               completions__mean_length=lambda i: 40 - i, completions__eos_rate=0.8, policy__entropy_avg=2.0)
    + [{"step": 1, "eval_objective/scores": 0.1}, {"step": 12, "eval_objective/scores": 0.5}],
    "GRPO": log(12, loss=0.0, kl=0.05, reward=lambda i: 0.1 * i, entropy=lambda i: 2 - 0.05 * i,
                completions__mean_length=30, completions__clipped_ratio=0.2),
    "SFT": log(12, loss=lambda i: 2.0 - 0.05 * i),
    "reward model": log(12, loss=0.6, accuracy=0.7) + [{"step": 12, "eval_accuracy": 0.72}],
}

# (rule name, method, log history built to trigger it)
BROKEN = [
    ("loss NaN/inf", "DPO", HEALTHY["DPO"][:5] + [{"step": 6, "loss": math.nan}]),
    ("reward-model accuracy near chance", "reward model", log(12, loss=0.69, accuracy=0.51)
     + [{"step": 12, "eval_accuracy": 0.52}]),
    ("DPO likelihood displacement", "DPO", log(12, rewards__chosen=lambda i: -0.1 * i,
                                                rewards__rejected=lambda i: -0.15 * i,
                                                rewards__margins=lambda i: 0.05 * i)),
    ("DPO margins flat", "DPO", log(12, rewards__chosen=0.0, rewards__rejected=0.0, rewards__margins=0.001)),
    ("KL running away", "PPO", log(12, objective__kl=lambda i: 5.0 * i)),
    ("KL running away", "GRPO", log(12, kl=lambda i: 0.2 * i)),
    ("answer length collapsing", "PPO", log(12, completions__mean_length=lambda i: max(40 - 5 * i, 1))),
    ("answers getting shorter", "PPO", log(12, completions__mean_length=lambda i: 40 - 1.5 * i)),  # 0.47x its start
    ("answers getting longer", "RLOO", log(12, completions__mean_length=lambda i: 20 + 2 * i)),  # 1.9x its start
    ("reward tracks length", "PPO", log(12, completions__score_length_corr=lambda i: -0.2 - 0.05 * i)),
    ("length pinned at the cap", "GRPO", log(12, completions__mean_length=256, completions__clipped_ratio=0.97)),
    ("EOS rate falling", "PPO", log(12, completions__eos_rate=lambda i: 0.9 - 0.07 * i)),
    ("training score up, eval score down", "PPO", log(12, objective__scores=lambda i: 0.1 * i)
     + [{"step": 1, "eval_objective/scores": 0.5}, {"step": 12, "eval_objective/scores": 0.2}]),
    ("entropy collapsing", "RLOO", log(12, entropy=lambda i: 2.0 * 0.7 ** i)),
    ("SFT loss rising", "SFT", log(12, loss=lambda i: 1.0 + 0.1 * i)),
]


@pytest.mark.parametrize("method", list(HEALTHY))
def test_healthy_runs_have_no_findings(method):
    assert check_history(HEALTHY[method], RunInfo(method=method, beta=0.1)) == []


@pytest.mark.parametrize("rule, method, history", BROKEN, ids=[f"{r} ({m})" for r, m, _ in BROKEN])
def test_each_rule_fires_on_its_trigger(rule, method, history):
    findings = check_history(history, RunInfo(method=method, beta=0.1))
    assert rule in [f.rule for f in findings], findings
    message = next(str(f) for f in findings if f.rule == rule)
    assert any(ch.isdigit() for ch in message)  # the numbers behind it


def test_a_run_gets_the_rules_of_its_method():
    assert health_for("DPO").rules == health_for("GKD").rules == health_offline.RULES
    assert health_for("reward model").rules == health_rm.RULES
    assert health_for("GRPO").rules == health_online.RULES
    everything = (*health_offline.RULES, *health_rm.RULES, *health_online.RULES)
    assert health_for(None).rules == everything  # no run_config.json
    assert len(set(everything)) == len(everything)


def test_thresholds_are_config_fields():
    history = log(12, objective__kl=15.0)  # under the default 20 nats per answer
    assert check_history(history, RunInfo(method="PPO")) == []
    loose = HealthThresholds(kl_max_per_answer=10.0)
    assert [f.rule for f in check_history(history, RunInfo(method="PPO"), loose)] == ["KL running away"]
    assert check_history(log(2, loss=lambda i: 1 + i), RunInfo(method="SFT")) == []  # too few points for a trend


def test_length_rules_have_their_own_bands():
    ratios = {"collapse": lambda i: max(40 - 5 * i, 1), "0.47x": lambda i: 40 - 1.5 * i, "0.77x": lambda i: 40 - i}
    fired = {name: [f.rule for f in check_history(log(12, completions__mean_length=curve), RunInfo(method="PPO"))]
             for name, curve in ratios.items()}
    assert fired == {"collapse": ["answer length collapsing"], "0.47x": ["answers getting shorter"], "0.77x": []}
    wide = HealthThresholds(length_ratio_min=0.4)
    assert check_history(log(12, completions__mean_length=ratios["0.47x"]), RunInfo(method="PPO"), wide) == []


def test_a_cut_json_file_is_one_error_naming_it(tmp_path):
    from rlhfkit.errors import ConfigError

    (tmp_path / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": 0.')
    with pytest.raises(ConfigError, match="trainer_state.json is not readable JSON"):
        run_health.main([str(tmp_path)])


def test_probe_rule_reads_rm_probe_json():
    probe = {"n_prompts": 20, "variants": {"empty": {"win_rate": 0.8, "mean_gap": -1.0, "n": 20},
                                           "filler": {"win_rate": 0.0, "mean_gap": 2.0, "n": 20}}}
    findings = check_history(HEALTHY["reward model"], RunInfo(method="reward model", probe=probe))
    assert [f.rule for f in findings] == ["reward model prefers degenerate answers"]
    assert "80%" in findings[0].message and "filler" not in findings[0].message


def write_run(folder, history, method="DPO", beta=0.1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    settings = {"method": method, "args": {"rlhf_type": method}, "training": {"beta": beta}}
    (folder / "run_config.json").write_text(json.dumps(settings))
    return str(folder)


def test_cli_prints_findings_and_writes_a_self_contained_report(tmp_path, capsys):
    out = write_run(tmp_path / "run", log(12, rewards__chosen=lambda i: -0.1 * i, rewards__rejected=lambda i: -0.2 * i,
                                          rewards__margins=lambda i: 0.1 * i, loss=0.5))
    findings = run_health.main([out])
    printed = capsys.readouterr().out
    assert [f.rule for f in findings] == ["DPO likelihood displacement"]
    assert "[run health] WARNING: [DPO likelihood displacement]" in printed and "-10.0 nats" in printed
    page = (tmp_path / "run" / "report.html").read_text()
    assert "DPO likelihood displacement" in page and "<h2>Latest samples" not in page
    assert "http" not in page and "<script" not in page
    online = write_run(tmp_path / "ppo", HEALTHY["PPO"], method="PPO")  # online runs write samples.jsonl
    write_samples(online, 12, 1, [[{"role": "user", "content": "Hi <there>"}]], ["Hello & welcome"], [1.5], [0.25])
    assert run_health.main([online]) == []
    page = (tmp_path / "ppo" / "report.html").read_text()
    assert "Hello &amp; welcome" in page and "Hi &lt;there&gt;" in page and "http" not in page
    healthy = write_run(tmp_path / "ok", HEALTHY["DPO"])
    assert run_health.main([healthy, "--min_points", "4"]) == []
    assert "no problems found" in capsys.readouterr().out
    with pytest.raises(PathNotFoundError, match="no trainer_state.json"):
        run_health.main([str(tmp_path / "nothing")])


def test_sampled_rollouts():
    assert [r for r in range(1, 12) if is_sampled_rollout(r, 5)] == [1, 6, 11]
    assert not any(is_sampled_rollout(r, 0) for r in range(1, 5))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """test_ppo.py's toy: a 64-word model and the reward "number of t7 tokens", with 16 prompts."""
    from conftest import write_jsonl
    from test_ppo import REWARD_FILE, make_toy_model

    folder = tmp_path_factory.mktemp("toy_samples")
    make_toy_model(str(folder / "model"))
    write_jsonl(folder / "prompts.jsonl", [{"prompt": f"t{8 + i} t{20 + i}"} for i in range(16)])
    (folder / "reward.py").write_text(REWARD_FILE)
    return {"model": str(folder / "model"), "prompts": str(folder / "prompts.jsonl"),
            "reward": f"{folder / 'reward.py'}:count_target", "folder": folder}


@pytest.mark.parametrize("method, flags", [
    ("PPO", ["--response_length", "6", "--per_device_train_batch_size", "4", "--num_mini_batches", "1",
             "--num_ppo_epochs", "1", "--max_steps", "3"]),
    ("RLOO", ["--max_completion_length", "6", "--per_device_train_batch_size", "4", "--max_steps", "3"]),
    ("GRPO", ["--max_completion_length", "6", "--per_device_train_batch_size", "4", "--num_generations", "2",
              "--max_steps", "3"]),
])
def test_online_runs_write_samples_and_a_health_report(toy, tmp_path, method, flags):
    from test_ppo import toy_flags

    import train_rlhf

    out = tmp_path / "run"
    train_rlhf.main(toy_flags(toy, out, "--rlhf_type", method, "--sample_every", "2", "--num_samples_logged", "2",
                              "--learning_rate", "1e-3", *flags))
    samples = read_samples(str(out))
    assert sorted({s["rollout"] for s in samples}) == [1, 3]  # rollouts 1 and 1 + 2 of 3
    per_rollout = 2 if method == "PPO" else 4  # RLOO / GRPO: 2 prompts x their 2 answers
    assert len(samples) == 2 * per_rollout
    assert all(isinstance(s["answer"], str) and isinstance(s["score"], float) for s in samples)
    assert all(s["kl"] is not None for s in samples) == (method != "GRPO")  # GRPO's beta is 0: no reference
    assert (out / "report.html").is_file() and "Latest samples" in (out / "report.html").read_text()
