"""SFT: supervised fine-tuning on chat data, on top of TRL's `SFTConfig` (step 0 of SFT -> reward model -> RL).

Needs: `messages` conversations, or prompt/completion rows, or preference pairs (prompt + chosen is trained).
No reference model, no reward model.
Loss: mean token cross-entropy over the assistant answer tokens only; prompt tokens (system, user, earlier turns,
chat-template markup) carry label -100. Every row becomes a conversational prompt/completion pair, so TRL's
completion-only loss applies with any chat template (no `{% generation %}` markers needed).
"""

from dataclasses import dataclass, field
from typing import Literal

from trl import SFTConfig as TRLSFTConfig

from rlhf_args.base_config import BaseConfig


@dataclass
class SFTConfig(BaseConfig, TRLSFTConfig):
    output_dir: str = field(
        default="output/sft", metadata={"help": "where the model/adapter, curves and checkpoints go"})
    assistant_turns: Literal["all", "last"] = field(
        default="all", metadata={"help": "`messages` data: train every assistant turn, or only the last"})
    completion_only_loss: bool | None = field(
        default=True, metadata={"help": "loss on the answer tokens only; False also trains on the prompt"})
    learning_rate: float = field(default=2e-4, metadata={"help": "LoRA (QLoRA paper, Dettmers et al. 2023: 2e-4 up "
                                                                 "to 13B); full: 2e-5 (TRL default)"})
    max_length: int | None = field(
        default=512, metadata={"help": "prompt + answer tokens; longer rows are cut at the end (keep_start)"})
    packing: bool = field(default=False, metadata={"help": "True packs several short rows into one max_length "
                                                           "sequence (faster, same loss mask)"})
