#!/usr/bin/env bash
# Step 1: train a reward model. Edit reward_args/*.py or add --flags below. Run from the repo root:
#   bash script/rm_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# One CPU or one GPU:
python reward_model.py --train_data_path data_example/data.jsonl --output_dir output/reward_model "$@"

# Several GPUs (set num_processes in the yaml or pass --num_processes N):
# CUDA_VISIBLE_DEVICES=0,1 accelerate launch --config_file ds_config/deepspeed_zero2.yaml --num_processes 2 \
#     reward_model.py --output_dir output/reward_model "$@"
