"""Merge a LoRA adapter into its base model, so the next stage can start from it as a plain checkpoint.

    python -m rlhfkit.merge_adapter output/sft output/sft_merged              # a policy (causal LM) adapter
    python -m rlhfkit.merge_adapter output/reward_model output/rm_merged      # a reward-model adapter (score head kept)
    python -m rlhfkit.merge_adapter output/ppo/value output/value_merged      # PPO's value adapter (+ value head)
    python -m rlhfkit.merge_adapter output/sft output/sft_bf16 --dtype bf16   # weights saved in bf16

The base model is the one recorded in the adapter's adapter_config.json (`--base_model_path` to use another folder).
Before anything is written, the merged model is run on a few tokenized examples and compared with the adapter
model (logits of a causal LM, scores of a reward / value model); a merge whose outputs differ by more than the
tolerance of `--dtype` is refused. The model is written to a temporary folder next to OUT and moved into place
once complete: safetensors weights, config, tokenizer and chat template.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import torch
from transformers import AutoTokenizer

from rlhfkit.errors import ConfigError, OutputExistsError, PathNotFoundError, ToolParser, run_cli
from rlhfkit.log import info_rank0, quiet_libraries
from rlhfkit.model import load_checkpoint
from rlhfkit.model_folders import is_adapter_dir, resolve_checkpoint
from rlhfkit.outputs import check_can_write

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Largest accepted |merged - adapter| output difference, relative to the largest |output| (at least 1). fp32 only sees
# the rounding of W + BA; bf16 / fp16 add the rounding of every weight (8 / 11 significant bits) through all layers
# (SmolLM2-135M with a random LoRA: 2e-6, 6e-3 and 4e-2 of the largest |logit| for fp32, fp16 and bf16).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}
EXAMPLES = [("What is the capital of France?", "The capital of France is Paris."),
            ("Write a haiku about rain.", "Soft rain on the roof, a quiet drum for the night, the garden drinks deep."),
            ("How do I reverse a list in Python?", "Use my_list[::-1] for a copy, or my_list.reverse() in place."),
            ("Say hello.", "Hello!")]


def example_inputs(tokenizer) -> list[torch.Tensor]:
    """Token ids (1, L) of the four `EXAMPLES` (user question + assistant answer), rendered with the chat template
    when the tokenizer has one.
    """
    inputs = []
    for question, answer in EXAMPLES:
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            ids = tokenizer(f"{question}\n{answer}", return_tensors="pt").input_ids
        inputs.append(ids)
    return inputs


@torch.no_grad()
def model_outputs(model, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The model's `logits` for each input, as fp32 on the CPU: (1, L, V) for a causal LM, (1, 1) for a scorer."""
    device = next(model.parameters()).device
    return [model(input_ids=ids.to(device)).logits.float().cpu() for ids in inputs]


def check_outputs(model, inputs: list[torch.Tensor], expected: list[torch.Tensor], dtype: str, what: str,
                  advice: str) -> float:
    """Compare `model`'s outputs with `expected` (the adapter model's, fp32) and print the `[merge] check:` line.

    The largest |difference| must not exceed `TOLERANCE[dtype]` x max(1, largest |expected|). Returns the
    difference; raises `ConfigError` (ending with `advice`) when it is larger.
    """
    difference = max((g - e).abs().max().item() for g, e in zip(model_outputs(model, inputs), expected))
    tolerance = TOLERANCE[dtype] * max(1.0, max(e.abs().max().item() for e in expected))
    verdict = "ok" if difference <= tolerance else "FAILED"
    info_rank0(f"[merge] check: max |{what} difference| {difference:.1e} on {len(inputs)} examples "
          f"(tolerance {tolerance:.0e}, {dtype}): {verdict}")
    if verdict != "ok":
        raise ConfigError(f"the merged model's {what}s differ from the adapter model's by {difference:.3g} (more "
                          f"than {tolerance:.0e} in {dtype}); {advice}")
    return difference


def merge_weights(model):
    """Fold the LoRA weights into the base weights (PEFT's `merge_and_unload`); returns the plain model."""
    return model.merge_and_unload()


def merge_adapter(adapter_dir: str, output_dir: str, dtype: str = "fp32", base_model_path: str | None = None) -> str:
    """Merge a LoRA adapter into its base, check the merge, and save it to `output_dir`; returns `output_dir`.

    Policy adapters become `AutoModelForCausalLM` checkpoints; reward-model adapters and PPO value adapters become
    `AutoModelForSequenceClassification(num_labels=1)` ones with their trained head. The merge is done in fp32 and
    the merged model's outputs on `EXAMPLES` are compared with the adapter model's (`check_outputs`, tolerance
    `TOLERANCE["fp32"]`); for `dtype` "bf16" / "fp16" the cast weights are checked again, with that dtype's
    tolerance. Each check prints a `[merge] check: ...` line. Memory: one fp32 copy of the model.

    Raises `PathNotFoundError` (not an adapter folder, or its base is missing: see
    `rlhfkit.model_folders.resolve_checkpoint`), `OutputExistsError` (`output_dir` is a non-empty folder),
    `ConfigError` (unknown dtype, or the check failed: nothing is written then).
    """
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not is_adapter_dir(adapter_dir):
        raise PathNotFoundError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise OutputExistsError(f"{output_dir} already exists and is not an empty folder; nothing is overwritten")
    check_can_write(output_dir, "output folder")
    checkpoint = resolve_checkpoint(adapter_dir, base_model_path)
    has_tokenizer = os.path.isfile(os.path.join(adapter_dir, "tokenizer_config.json"))
    tokenizer_dir = adapter_dir if has_tokenizer else checkpoint.base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    inputs = example_inputs(tokenizer)

    model = load_checkpoint(checkpoint, torch.float32)
    expected = model_outputs(model, inputs)
    what = "score" if checkpoint.task_type == "SEQ_CLS" else "logit"
    merged = merge_weights(model).eval()
    check_outputs(merged, inputs, expected, "fp32", what, f"nothing was written to {output_dir}; check that the "
                  f"adapter {adapter_dir} was trained on {checkpoint.base}")
    if dtype != "fp32":
        merged = merged.to(DTYPES[dtype])
        check_outputs(merged, inputs, expected, dtype, what, f"nothing was written to {output_dir}; the weights do "
                      f"not survive {dtype}: save them with --dtype fp32")

    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.merging-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the output folder gets the usual permissions
        merged.config._name_or_path = output_dir
        merged.save_pretrained(staging)  # safetensors
        tokenizer.save_pretrained(staging)  # with the chat template
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty, checked above
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info_rank0(f"[merge] {adapter_dir} + {checkpoint.base} -> {output_dir} ({dtype})")
    return output_dir


def main(argv: list[str] | None = None) -> str:
    """`python -m rlhfkit.merge_adapter ADAPTER OUT [--dtype fp32|bf16|fp16] [--base_model_path DIR]`."""
    quiet_libraries()
    parser = ToolParser(prog="python -m rlhfkit.merge_adapter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter_dir", help="a LoRA adapter folder (policy, reward model, or PPO's value/)")
    parser.add_argument("output_dir", help="where the merged model goes (must not exist, or be empty)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="dtype of the saved weights")
    parser.add_argument("--base_model_path", default=None,
                        help="the base model folder, instead of the one recorded in adapter_config.json")
    args = parser.parse_args(argv)
    return merge_adapter(args.adapter_dir, args.output_dir, args.dtype, args.base_model_path)


if __name__ == "__main__":
    run_cli(main)
