#!/usr/bin/env bash
# Step 2, online: PPO with the reward model from step 1 (bash script/rm_run.sh). Edit rlhf_args/ppo_config.py or add
# --flags. From the repo root:
#   bash script/ppo_run.sh [--model_mode adapters] [--kl_coef 0.1] [--reward_model_path output/reward_model] ...
# RLOO / GRPO: the same lines with --rlhf_type RLOO or GRPO (their length flag is --max_completion_length).
set -euo pipefail
cd "$(dirname "$0")/.."

# One CPU or one GPU (the short demo settings of the README; drop --max_steps for a full epoch of prompts):
python train_rlhf.py --rlhf_type PPO --train_mode lora --output_dir output/ppo --per_device_train_batch_size 8 \
    --response_length 48 --learning_rate 2e-4 --lr_scheduler_type constant --max_steps 64 "$@"

# Several GPUs with DeepSpeed ZeRO-2 (full, LoRA or QLoRA; ZeRO-3 gathers the weights for each generation, slower):
# CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file ds_config/deepspeed_zero2.yaml --num_processes 4 \
#     train_rlhf.py --rlhf_type PPO --train_mode lora --output_dir output/ppo "$@"
