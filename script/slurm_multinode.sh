#!/usr/bin/env bash
# Several nodes under SLURM: one `accelerate launch` per node, started by srun; each node reads its rank and the main
# node's address from SLURM's variables. Submit from the repo root:
#   sbatch --nodes 2 --gpus-per-node 8 script/slurm_multinode.sh train_rlhf.py --config recipes/gpu/dpo_7b_lora_zero3.yaml
# Settings (environment variables, optional):
#   DS_CONFIG        accelerate config (default ds_config/deepspeed_zero3_multinode.yaml; ZeRO-2 for QLoRA)
#   GPUS_PER_NODE    processes per node (default: SLURM_GPUS_ON_NODE, else 8)
#   MAIN_PORT        rendezvous port on the first node (default 29500)
#SBATCH --job-name=rlhf
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

DS_CONFIG=${DS_CONFIG:-ds_config/deepspeed_zero3_multinode.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
NODES=${SLURM_NNODES:?run this with sbatch or srun}
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}

# srun starts one task per node; SLURM_NODEID (0..NODES-1) is evaluated on each node, hence the single quotes.
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file "$0" --num_machines "$1" \
    --num_processes $(( $1 * $2 )) --machine_rank "$SLURM_NODEID" --main_process_ip "$3" --main_process_port "$4" \
    "${@:5}"' "$DS_CONFIG" "$NODES" "$GPUS_PER_NODE" "$MAIN_ADDR" "$MAIN_PORT" "$@"
