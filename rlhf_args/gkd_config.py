"""Knowledge distillation (train_gkd.py): GKD, supervised KD and SeqKD, on top of TRL's experimental `GKDConfig`.

Source: Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes"
(ICLR 2024, arXiv:2306.13649). A frozen teacher scores every answer token; the student is trained to match the
teacher's next-token distribution on answers that come from
  * the dataset                      lmbda=0, seq_kd=False   supervised KD (token-level KD, Hinton et al. 2015)
  * the teacher's own samples        lmbda=0, seq_kd=True    SeqKD (Kim & Rush 2016)
  * the student's own samples        lmbda=1                 on-policy GKD (the teacher corrects the student's mistakes)
Each step is on-policy with probability lmbda, so 0 < lmbda < 1 mixes them. Per answer token the loss is the
generalized Jensen-Shannon divergence JSD(beta) of the paper's eq. 1, as TRL computes it: beta=0 is the forward KL
KL(teacher || student), beta=1 the reverse KL KL(student || teacher), values between mix the two through
M = beta * teacher + (1 - beta) * student. (The original README's "0: KL, 1: JSD" describes the same knob.)
Teacher and student must share one tokenizer (train_gkd.py checks it before loading any weights).
"""

from dataclasses import dataclass, field
from typing import Literal

from trl.experimental.gkd import GKDConfig as TRLGKDConfig

from common_args import DEMO_MODEL, ModelArgs
from rlhf_args.base_config import BaseConfig


@dataclass
class GKDModelArgs(ModelArgs):
    """The student (`model_name_or_path`, trained full / LoRA / QLoRA) and the data; see common_args.py."""

    train_data_path: list[str] | str = field(
        default_factory=lambda: ["data_example/gkd_data.jsonl"], metadata={"help": "chats or prompts"})


@dataclass
class GKDConfig(BaseConfig, TRLGKDConfig):
    output_dir: str = field(
        default="output/gkd", metadata={"help": "where the student (model or adapter), curves and checkpoints go"})
    teacher_model_name_or_path: str = field(
        default=DEMO_MODEL, metadata={"help": "frozen teacher: a checkpoint dir, same tokenizer"})
    teacher_quantization: Literal["none", "4bit", "8bit"] = field(
        default="none", metadata={"help": "teacher weights in 4/8-bit (bitsandbytes)"})
    lmbda: float = field(default=1.0, metadata={"help": "share of on-policy steps: 0 = supervised KD, 1 = GKD "
                                                        "(paper: on-policy best; TRL 0.5)"})
    beta: float = field(default=0.5, metadata={"help": "0 forward KL, 1 reverse KL, between: JSD(beta) (TRL default; "
                                                       "paper: task dependent)"})
    seq_kd: bool = field(
        default=False, metadata={"help": "True: off-policy steps use teacher samples, not the data (SeqKD)"})
    temperature: float = field(
        default=0.9, metadata={"help": "sampling temperature (TRL default); the loss uses temperature 1"})
    max_new_tokens: int = field(
        default=128, metadata={"help": "tokens sampled per answer in on-policy and SeqKD steps (TRL default)"})
    max_length: int | None = field(
        default=1024, metadata={"help": "prompt + answer tokens per row (TRL's collator limit); see long_rows"})
    long_rows: Literal["drop", "cut"] = field(
        default="drop", metadata={"help": "longer rows: drop, or cut (keep the last max_length tokens)"})
    learning_rate: float = field(
        default=1e-4, metadata={"help": "LoRA: 1e-4 to 2e-4; full: 1e-5 to 5e-5 (common practice; TRL 2e-5)"})
