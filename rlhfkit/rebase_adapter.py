"""Point a LoRA adapter at its base model's new folder (after the base was moved, or the adapter copied elsewhere).

    python -m rlhfkit.rebase_adapter output/dpo_demo /new/place/SmolLM2-135M-Instruct

Rewrites `base_model_name_or_path` in ADAPTER_DIR/adapter_config.json to the absolute path of NEW_BASE, after
checking that NEW_BASE is a model folder (config.json). Adapters in the folders right below ADAPTER_DIR that
recorded the same base (`checkpoint-N/`, PPO's `value/`) are rewritten too. The first rebase keeps the adapter's
original config as `adapter_config.json.bak` (later rebases leave that copy alone), so the path recorded at
training time is never lost. Nothing else in the folders changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from rlhfkit.errors import PathNotFoundError, ToolParser, read_json, run_cli
from rlhfkit.log import info_rank0, quiet_libraries
from rlhfkit.model_folders import ADAPTER_CONFIG, is_adapter_dir

BACKUP_SUFFIX = ".bak"


def _rewrite(config_path: str, new_base: str) -> None:
    config = read_json(config_path)
    backup = config_path + BACKUP_SUFFIX
    if not os.path.exists(backup):
        shutil.copy2(config_path, backup)
    config["base_model_name_or_path"] = new_base
    staging = config_path + ".tmp"
    with open(staging, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(staging, config_path)  # never a half-written config


def rebase_adapter(adapter_dir: str, new_base: str) -> list[str]:
    """Record `new_base` (made absolute) as the base model of the adapter in `adapter_dir`.

    Also rewrites the adapters in `adapter_dir`'s direct subfolders whose recorded base equals the top adapter's
    old one. Returns the adapter_config.json paths rewritten. Raises `PathNotFoundError` if `adapter_dir` holds no
    adapter_config.json or `new_base` has no config.json.
    """
    if not is_adapter_dir(adapter_dir):
        raise PathNotFoundError(f"{adapter_dir} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    if not os.path.isfile(os.path.join(new_base, "config.json")):
        raise PathNotFoundError(f"{new_base} is not a model folder (no config.json); give the folder of the base model "
                                f"the adapter was trained on")
    new_base = os.path.abspath(new_base)
    top = os.path.join(adapter_dir, ADAPTER_CONFIG)
    old_base = read_json(top).get("base_model_name_or_path")
    rewritten = [top]
    for name in sorted(os.listdir(adapter_dir)):
        sub = os.path.join(adapter_dir, name, ADAPTER_CONFIG)
        if os.path.isfile(sub):
            if read_json(sub).get("base_model_name_or_path") == old_base:
                rewritten.append(sub)
    for path in rewritten:
        _rewrite(path, new_base)
    return rewritten


def main(argv: list[str] | None = None) -> list[str]:
    """`python -m rlhfkit.rebase_adapter ADAPTER_DIR NEW_BASE`."""
    quiet_libraries()
    parser = ToolParser(prog="python -m rlhfkit.rebase_adapter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter_dir", help="the LoRA adapter folder (e.g. a training run's output_dir)")
    parser.add_argument("new_base", help="the base model's folder now (holds config.json)")
    args = parser.parse_args(argv)
    rewritten = rebase_adapter(args.adapter_dir, args.new_base)
    for path in rewritten:
        info_rank0(f"[rebase] {path}: base_model_name_or_path -> {os.path.abspath(args.new_base)} (original kept in "
              f"{ADAPTER_CONFIG}{BACKUP_SUFFIX})")
    return rewritten


if __name__ == "__main__":
    run_cli(main)
