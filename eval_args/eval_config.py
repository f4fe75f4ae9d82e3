"""evaluate.py: which models answer, which judge scores them, on which prompts, and how answers are generated.

Change a default here or override it on the command line:
`python evaluate.py --models base=models/SmolLM2-135M-Instruct dpo=output/dpo_demo --max_prompts 50`.
"""

from dataclasses import dataclass, field
from typing import Literal

from common_args import check_reward_sources, check_sampling_ranges
from rlhfkit.errors import ConfigError


@dataclass
class EvalArgs:
    models: list[str] = field(
        default_factory=list, metadata={"help": "NAME=DIR ... (model or LoRA adapter folders); none: RM accuracy"})
    reward_model_path: str | None = field(
        default="output/reward_model", metadata={"help": 'judge: reward_model.py output; "none": functions only'})
    reward_function: str | None = field(
        default=None, metadata={"help": 'judge: "file.py:name" / "module:name" (TRL signature), added to the RM score'})
    reward_ensemble: Literal["mean", "min", "mean_minus_std"] = field(
        default="mean", metadata={"help": 'several --reward_model_path folders (rm_a,rm_b): their scores\' mean, '
                                          'min or mean minus std'})
    eval_data_path: str = field(
        default="data_example/data.jsonl", metadata={"help": "prompts: prompt-only, preference, chat or raw hh-rlhf "
                                                             "rows"})
    output_dir: str = field(default="output/eval", metadata={"help": "generations.jsonl, summary.json, arena.png, "
                                                                     "report.html (never overwritten)"})
    baseline: str | None = field(
        default=None, metadata={"help": "the model every other is compared with (default: the first of --models)"})
    max_prompts: int | None = field(
        default=None, metadata={"help": "use only the first N prompts (or pairs) of the file (None: all)"})
    max_new_tokens: int = field(
        default=256, metadata={"help": "longest answer, in tokens; answers cut there count as not ended"})
    temperature: float = field(
        default=0.0, metadata={"help": "0: greedy (default); > 0: sampled at this temperature (with --seed)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling when --temperature > 0 (1.0: off)"})
    batch_size: int = field(
        default=8, metadata={"help": "prompts per generate call and texts per reward-model forward pass"})
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "prompts are left-truncated to this many tokens before generating"})
    max_length: int | None = field(default=1024, metadata={"help": "tokens of prompt + answer the reward model "
                                                                   "reads; longer texts are cut (counted)"})
    drop_bad_rows: bool = field(
        default=False, metadata={"help": "False: stop on bad rows in eval_data_path; True: skip them and count them"})
    seed: int = field(default=42, metadata={"help": "sampling seed (with --temperature > 0) and bootstrap seed"})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow custom model code from the checkpoint folders"})

    def __post_init__(self):
        check_reward_sources(self, "evaluate.py needs a judge:")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0 (0: greedy), got {self.temperature}")
        check_sampling_ranges(self, ("max_new_tokens", "batch_size", "max_prompts", "max_prompt_length", "max_length"))
