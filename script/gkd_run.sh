#!/usr/bin/env bash
# Knowledge distillation (train_gkd.py): on-policy GKD, supervised KD or SeqKD. Edit rlhf_args/gkd_config.py or add
# --flags. From the repo root:
#   bash script/gkd_run.sh                        # GKD (lmbda 1) demo
#   bash script/gkd_run.sh --lmbda 0              # supervised KD on the dataset's answers
#   bash script/gkd_run.sh --lmbda 0 --seq_kd true   # SeqKD: on answers sampled from the teacher
#   bash script/gkd_run.sh --beta 0               # forward KL instead of JSD(0.5); --beta 1: reverse KL
# The demo (about 5 minutes on a 2-core CPU) distils the full-precision demo model (teacher) into a 4-bit QLoRA copy
# of itself (student): quantization error puts the student a divergence (JSD, beta 0.5) of about 0.077 per answer
# token away from the teacher, and the LoRA adapter learns to close part of that gap (--learning_rate 5e-4 only
# makes 4 steps show it). For real use, pass a larger teacher and a smaller student that share one tokenizer and
# chat template (checked before any weights load) and train longer:
#   bash script/gkd_run.sh --teacher_model_name_or_path /path/to/big-instruct --model_name_or_path /path/to/small-instruct \
#       --train_mode lora --learning_rate 1e-4 --max_steps -1 --max_new_tokens 128
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct  # made by `python -m rlhfkit.demo_model`

# One CPU or one GPU:
python train_gkd.py --model_name_or_path "$MODEL" --teacher_model_name_or_path "$MODEL" \
    --train_data_path data_example/gkd_data.jsonl --train_mode qlora --learning_rate 5e-4 --lmbda 1 --beta 0.5 \
    --max_steps 4 --max_new_tokens 32 --logging_steps 1 --output_dir output/gkd "$@"

# One GPU through accelerate (same run; a 4-bit teacher saves memory: --teacher_quantization 4bit):
# accelerate launch --num_processes 1 train_gkd.py --model_name_or_path STUDENT --teacher_model_name_or_path TEACHER \
#     --train_mode lora --output_dir output/gkd "$@"

# Several GPUs with DeepSpeed ZeRO-2 (full, LoRA or QLoRA student; 4-bit / 8-bit teacher allowed):
# CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file ds_config/deepspeed_zero2.yaml --num_processes 4 \
#     train_gkd.py --model_name_or_path STUDENT --teacher_model_name_or_path TEACHER --train_mode lora \
#     --output_dir output/gkd "$@"

# ZeRO-3 shards student and teacher weights (full or LoRA student; the teacher must not be quantized):
# CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file ds_config/deepspeed_zero3.yaml --num_processes 4 \
#     train_gkd.py --model_name_or_path STUDENT --teacher_model_name_or_path TEACHER --train_mode full \
#     --output_dir output/gkd "$@"
