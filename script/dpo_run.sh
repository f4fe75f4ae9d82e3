#!/usr/bin/env bash
# Step 2: DPO on preference pairs. Edit common_args.py / rlhf_args/dpo_config.py or add --flags. From the repo root:
#   bash script/dpo_run.sh [--train_mode qlora] [--beta 0.2] ...
set -euo pipefail
cd "$(dirname "$0")/.."

# One CPU or one GPU:
python train_rlhf.py --rlhf_type DPO --train_mode lora --output_dir output/dpo "$@"

# Several GPUs with DeepSpeed ZeRO-3 (full or LoRA; QLoRA needs deepspeed_zero2.yaml):
# CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file ds_config/deepspeed_zero3.yaml --num_processes 4 \
#     train_rlhf.py --rlhf_type DPO --train_mode lora --output_dir output/dpo "$@"
