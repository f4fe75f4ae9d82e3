"""script/benchmark.py: which rows it runs, how it reads the step times, and one real run of PPO's three layouts."""

import json
import os
import subprocess
import sys

from script.benchmark import rows, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rows_leave_out_the_layouts_that_need_an_adapter_under_full_fine_tuning():
    assert rows(["PPO"], ["full", "lora"]) == [("PPO", "full", "separate"), ("PPO", "lora", "separate"),
                                                ("PPO", "lora", "adapters"), ("PPO", "lora", "shared")]
    assert rows(["DPO", "GKD"], ["qlora"]) == [("DPO", "qlora", None), ("GKD", "qlora", None)]


def test_the_table_gives_the_median_of_the_steps_after_the_first():
    result = {"method": "DPO", "train_mode": "lora", "layout": None, "batch_size": 4,
              "step_seconds": [10.0, 2.0, 4.0, 3.0], "peak_bytes": 3 * 2**30, "trainable_parameters": 4_880_000}
    assert table([result]).splitlines()[-1] == "| DPO | lora |  | 4 | 3.00 (2.00-4.00) | 3.00 GiB | 4.88 M |"


def test_ppo_layouts_on_a_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "script/benchmark.py", "--model_name_or_path", tiny_model_dir,
                           "--methods", "PPO", "--train_modes", "lora", "--steps", "2", "--json", str(out),
                           "--", "--response_length", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["layout"]: r for r in json.loads(out.read_text())}
    assert list(results) == ["separate", "adapters", "shared"]
    for r in results.values():
        assert len(r["step_seconds"]) == 2 and all(t > 0 for t in r["step_seconds"])
        assert r["peak_bytes"] > 2**20 and r["batch_size"] == 4
    # shared: one adapter + a value head; adapters: a policy adapter and a value adapter of the same shape
    shared, adapters = results["shared"]["trainable_parameters"], results["adapters"]["trainable_parameters"]
    assert shared < adapters < 2 * shared
    assert "| PPO | lora | shared | 4 |" in done.stdout


def test_reading_path_without_a_command_or_with_a_misspelled_script_is_one_line():
    for argv, expected in ((["--"], "give the command to run after --"),
                           (["--", "train_rlfh.py"], "no such script train_rlfh.py; the entry scripts are")):
        done = subprocess.run([sys.executable, "script/reading_path.py", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.strip().startswith("error: " + expected), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "script/reading_path.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "python script/reading_path.py --all" in done.stdout, done.stderr


def test_reading_path_copies_what_a_method_uses_and_the_copy_runs_on_its_own(tiny_model_dir, tmp_path):
    """`--copy DEST` for DPO: the copy holds DPO's files, not PPO's, runs `--check` by itself, and names a missing
    method's config file in one line; an existing folder is refused.
    """
    dest, data = tmp_path / "my_dpo", os.path.join(ROOT, "data_example", "data.jsonl")
    flags = ["train_rlhf.py", "--rlhf_type", "DPO", "--model_name_or_path", tiny_model_dir, "--train_data_path", data,
             "--train_mode", "lora", "--lora_target_modules", "all-linear", "--check"]
    done = subprocess.run([sys.executable, "script/reading_path.py", "--copy", str(dest), "--", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    copied = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert {"train_rlhf.py", "common_args.py", "requirements.txt", "rlhf_args/dpo_config.py",
            "rlhfkit/methods/offline.py", "rlhfkit/data/tables.py", "rlhfkit/recipes.py"} <= copied  # CSV, --config
    assert not any(p.startswith(("rlhfkit/ppo/", "tests/", "script/")) or p.endswith("ppo_config.py") for p in copied)
    env = {**os.environ, "PYTHONPATH": ""}
    (tmp_path / "recipe.yaml").write_text("beta: 0.2\n")  # the copy reads recipes too
    alone = subprocess.run([sys.executable, *flags, "--config", str(tmp_path / "recipe.yaml")], cwd=dest,
                           capture_output=True, text=True, timeout=300, env=env)
    assert alone.returncode == 0 and "[check] done: 0 warning(s)" in alone.stdout, alone.stderr[-2000:]
    ppo = subprocess.run([sys.executable, "train_rlhf.py", "--rlhf_type", "PPO", "--check"], cwd=dest,
                         capture_output=True, text=True, timeout=300, env=env)
    assert ppo.returncode == 2 and ppo.stderr.strip() == (
        "error: --rlhf_type PPO: rlhf_args/ppo_config.py is not in this folder (a copy made for other methods?); "
        "copy it and what it imports from the toolkit")
    again = subprocess.run([sys.executable, "script/reading_path.py", "--copy", str(dest), "--", *flags], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists and is not an empty folder; nothing is overwritten" in again.stderr


def test_benchmarks_name_a_missing_path_in_one_line_before_any_run():
    for script, argv, expected in (("benchmark.py", ["--model_name_or_path", "nope"], "--model_name_or_path nope"),
                                   ("benchmark_ppo.py", ["--model_name_or_path", "data_example", "--reward_model_path",
                                                         "no_rm", "--trl_baseline", "nope.py", "--hh_data", "x.jsonl"],
                                    "--reward_model_path no_rm")):
        done = subprocess.run([sys.executable, f"script/{script}", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and f"error: {expected}" in done.stderr and "Traceback" not in done.stderr
