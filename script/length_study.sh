#!/usr/bin/env bash
# The length study of docs/length.md on hh-rlhf harmless (the 1000 pairs of ../shared/data), one step per argument:
#   bash script/length_study.sh split judge rms dpo ppo eval       # everything (many CPU hours), or any of the steps
# Pairs 1-600 train the judge (a plain reward model), pairs 601-800 train what the policies use (their reward models
# and DPO), pairs 801-1000 are the held-out prompts and pairs every result is measured on. Outputs go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/hh-rlhf-harmless-base-test.first1000.jsonl}
OUT=${OUT:-output/length_study}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--drop_bad_rows true --eval_split_size 0 --report_to none --save_strategy no --num_train_epochs 1)
mkdir -p "$OUT"

for step in "$@"; do
  case $step in
    split)  # the three disjoint sets of pairs
      sed -n 1,600p "$DATA" > "$OUT/pairs_1_600.jsonl"
      sed -n 601,800p "$DATA" > "$OUT/pairs_601_800.jsonl"
      sed -n 801,1000p "$DATA" > "$OUT/pairs_801_1000.jsonl" ;;
    judge)  # a plain reward model on 600 pairs, then its accuracy report on pairs it never saw
      python reward_model.py --train_data_path "$OUT/pairs_1_600.jsonl" "${COMMON[@]}" --max_length 384 \
        --degenerate_negatives_ratio 0 --probe_prompts 0 --output_dir "$OUT/judge"
      python evaluate.py --reward_model_path "$OUT/judge" --eval_data_path "$OUT/pairs_801_1000.jsonl" \
        --drop_bad_rows true --output_dir "$OUT/eval_judge" ;;
    rms)  # the policies' reward models: plain, ODIN, the default (degenerate negatives), and their reports
      for rm in plain odin default; do
        case $rm in
          plain) flags=(--degenerate_negatives_ratio 0) ;;
          odin) flags=(--degenerate_negatives_ratio 0 --length_debias odin) ;;
          default) flags=() ;;
        esac
        python reward_model.py --train_data_path "$OUT/pairs_601_800.jsonl" "${COMMON[@]}" --max_length 384 \
          --probe_prompts 0 "${flags[@]}" --output_dir "$OUT/rm_$rm"
        python evaluate.py --reward_model_path "$OUT/rm_$rm" --eval_data_path "$OUT/pairs_801_1000.jsonl" \
          --drop_bad_rows true --output_dir "$OUT/eval_rm_$rm"
        python -m rlhfkit.report.rm_probe "$OUT/rm_$rm" "$OUT/pairs_801_1000.jsonl" --max_prompts 64 \
          --output_dir "$OUT/probe_rm_$rm"
      done ;;
    dpo)  # DPO: sigmoid vs R-DPO vs LD-DPO, the same pairs and budget (4x the LoRA default learning rate, so that
          # 48 steps on 200 pairs move the policy)
      for variant in sigmoid rdpo ld; do
        case $variant in
          sigmoid) flags=() ;;
          rdpo) flags=(--rdpo_alpha 0.005) ;;
          ld) flags=(--ld_alpha 0.5) ;;
        esac
        python train_rlhf.py --rlhf_type DPO --train_data_path "$OUT/pairs_601_800.jsonl" "${COMMON[@]}" \
          --max_length 384 --learning_rate 2e-4 "${flags[@]}" --output_dir "$OUT/dpo_$variant"
      done ;;
    ppo)  # the README's PPO run cut to 8 rollouts (32 steps), with and without length control, with a plain and an ODIN
          # reward model; one run at a time (each grows to about 12 GB on CPU); checkpoint-16 is the half budget
      for rm in plain odin; do
        for control in none batch; do
          python train_rlhf.py --rlhf_type PPO --model_mode adapters --train_data_path "$OUT/pairs_601_800.jsonl" \
            "${COMMON[@]}" --reward_model_path "$OUT/rm_$rm" --length_control $control \
            --per_device_train_batch_size 8 --response_length 48 --learning_rate 2e-4 --lr_scheduler_type constant \
            --max_steps 32 --save_strategy steps --save_steps 16 --output_dir "$OUT/ppo_${rm}_$control"
        done
      done ;;
    eval)  # every policy against the base on the held-out prompts, judged by the judge
      models=(base=models/SmolLM2-135M-Instruct)
      for dir in "$OUT"/dpo_* "$OUT"/ppo_*; do [ -d "$dir" ] && models+=("$(basename "$dir")=$dir"); done
      python evaluate.py --models "${models[@]}" --reward_model_path "$OUT/judge" \
        --eval_data_path "$OUT/pairs_801_1000.jsonl" --drop_bad_rows true --max_new_tokens 64 --batch_size 16 \
        --output_dir "$OUT/eval_policies" ;;
    *) echo "unknown step $step (split judge rms dpo ppo eval)" >&2; exit 2 ;;
  esac
done
