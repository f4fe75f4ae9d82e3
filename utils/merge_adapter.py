"""Merge a LoRA adapter into its base model, so the next stage can start from it as a plain checkpoint.

    python -m utils.merge_adapter output/sft output/sft_merged          # a policy (causal LM) adapter
    python -m utils.merge_adapter output/reward_model output/rm_merged  # a reward-model adapter (score head kept)

The base model is the one recorded in the adapter's adapter_config.json. Weights are saved as safetensors.
"""

import argparse
import json
import os


def merge_adapter(adapter_dir: str, output_dir: str) -> str:
    """Load base + adapter, fold the LoRA weights in (`merge_and_unload`), save model and tokenizer to `output_dir`.

    Raises `FileNotFoundError` if `adapter_dir` has no adapter_config.json, `FileExistsError` if `output_dir` is
    a non-empty folder.
    """
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    config_path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"{output_dir} is not empty; nothing is overwritten")
    is_reward_model = json.load(open(config_path)).get("task_type") == "SEQ_CLS"
    if is_reward_model:
        model = AutoPeftModelForSequenceClassification.from_pretrained(adapter_dir, num_labels=1)
    else:
        model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    model = model.merge_and_unload()
    model.config._name_or_path = output_dir
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(output_dir)
    print(f"[merge] {adapter_dir} + its base model -> {output_dir}")
    return output_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter_dir")
    parser.add_argument("output_dir")
    cli = parser.parse_args()
    merge_adapter(cli.adapter_dir, cli.output_dir)
