#!/usr/bin/env bash
# Reproduces docs/results.md (CPU-scale "real results"). Run from the repository root:
#   bash benchmarks/results_runs.sh [train_ir|train_mri|train_abl|eval_ir|eval_ir_diff|eval_sweep|eval_abl|eval_mri|all]
# Runs + eval outputs: runs/results/ (ignored); small copies: docs/results/
set -euo pipefail
BUDGET=${BUDGET:-120}                      # seconds of training per run (train.time_limit)
R=runs/results
IR_TRAIN=../shared/data/infrared/roadscene/train
IR_TEST=../shared/data/infrared/roadscene/test
MRI_TRAIN=../shared/data/medical/kirby21/113-02-MPRAGE_processed_reg.nii.gz
MRI_TEST=../shared/data/medical/kirby21/113-02-T2w_processed_reg.nii.gz
# same budget, patch, batch, warm-up, threads
COMMON=(--set train.time_limit=$BUDGET --set data.patch_size=64 --set data.batch_size=16
        --set train.warmup_steps=50 --set train.threads=2 --no-progress)

tr() {  # tr NAME PRESET [--set ...]
  local name=$1 preset=$2; shift 2
  /usr/bin/time -f "$name wall %e s" diffsr train "$preset" --out "$R/$name" "${COMMON[@]}" "$@" \
    > "$R/$name.log" 2>&1
}

train_ir() {
  tr ir-edsr     edsr                --set data.train=$IR_TRAIN
  tr ir-swinir   swinir              --set data.train=$IR_TRAIN
  tr ir-demo     demo                --set data.train=$IR_TRAIN
  tr ir-flowpx   flow-pixel-ssim-px  --set data.train=$IR_TRAIN --set net.size=tiny
  tr ir-dwt-all  difiisr-dwt-all     --set data.train=$IR_TRAIN --set net.size=tiny --set 'losses.terms=[]'
  tr ir-dwt-ll   difiisr-dwt-ll      --set data.train=$IR_TRAIN --set net.size=tiny --set 'losses.terms=[]'
}
train_abl() {   # demo recipe without L1 fidelity term
  tr ir-demo-nol1 demo               --set data.train=$IR_TRAIN --set 'losses.terms=[]' --set name=demo-nol1
}
train_mri() {
  tr mri-demo    demo                --set data.train=$MRI_TRAIN --set name=demo-mri
  tr mri-edsr    edsr                --set data.train=$MRI_TRAIN --set name=edsr-mri
}

eval_ir() {     # feed-forward baselines + the demo recipe (default sampling steps)
  diffsr eval --data $IR_TEST --scale 4 --limit 8 --out $R/eval-ir \
    --method bicubic --method $R/ir-edsr --method $R/ir-swinir --method $R/ir-demo
}
eval_ir_diff() { # the other diffusion/flow recipes at 4 sampling steps (CPU time: 4 images)
  diffsr eval --data $IR_TEST --scale 4 --limit 4 --steps 4 --out $R/eval-ir-diff \
    --method bicubic --method $R/ir-flowpx --method $R/ir-dwt-all --method $R/ir-dwt-ll
}
eval_sweep() {  # sampling steps 1/2/4, demo
  diffsr eval --data $IR_TEST --scale 4 --limit 4 --out $R/eval-ir-steps \
    --method bicubic --method $R/ir-demo --steps 1 --steps 2 --steps 4
}
eval_abl() {    # with vs without the L1 fidelity term
  diffsr eval --data $IR_TEST --scale 4 --limit 4 --out $R/eval-ir-l1 \
    --method bicubic --method $R/ir-demo --method $R/ir-demo-nol1
}
eval_mri() {
  diffsr eval --data $MRI_TEST --scale 4 --limit 8 --out $R/eval-mri \
    --method bicubic --method $R/mri-edsr --method $R/mri-demo
}

mkdir -p $R
case "${1:-all}" in
  all) train_ir; train_abl; train_mri; eval_ir; eval_ir_diff; eval_sweep; eval_abl; eval_mri ;;
  *) "$1" ;;
esac
