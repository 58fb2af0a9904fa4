#!/usr/bin/env bash
# Reproduces docs/results.md (the CPU-scale "real results"). Run from the repository root:
#   bash benchmarks/results_runs.sh [all | train_a | train_b | evals | <one function below>]
# Run folders and eval outputs: runs/results/ (ignored); the copies shown in the docs: docs/results/.
#
# Every model gets the SAME step budget (STEPS optimiser steps), the same data, patch, batch,
# learning rate, warm-up and EMA; only the recipe differs. `all` runs two training queues side by
# side (one thread each: 2 cores), then the evaluations.
set -euo pipefail
STEPS=${STEPS:-1000}
R=${R:-runs/results}
IR_TRAIN=../shared/data/infrared/roadscene/train
IR_TEST=../shared/data/infrared/roadscene/test
MRI_T1=../shared/data/medical/kirby21/113-02-MPRAGE_processed_reg.nii.gz
MRI_T2=../shared/data/medical/kirby21/113-02-T2w_processed_reg.nii.gz
THREADS=${THREADS:-1}
COMMON=(--set train.steps=$STEPS --set train.time_limit=null --set data.patch_size=64 --set data.batch_size=16
        --set train.lr=0.0005 --set train.warmup_steps=50 --set train.ema_decay=0.995
        --set train.ckpt_every=$STEPS --set train.threads=$THREADS --no-progress)
DIFF=(--set net.size=tiny --set 'losses.terms=[]')   # difiisr presets: tiny UNet, LPIPS term off (no weights)
L1=(--set 'losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}, gate: {kind: hard, t_max: 1}}]')
mkdir -p "$R"

tr() {  # tr NAME PRESET [--set ...]: skip runs that already finished
  local name=$1 preset=$2; shift 2
  if ls "$R/$name/checkpoints/step_$(printf %07d "$STEPS")" >/dev/null 2>&1; then return; fi
  rm -rf "${R:?}/$name"
  /usr/bin/time -f "$name wall %e s" diffsr train "$preset" --out "$R/$name" "${COMMON[@]}" "$@" \
    > "$R/$name.log" 2>&1
}

ir_methods_slow() {   # pixel-space flow: ~10x the cost per step of the wavelet recipes
  tr ir-flowpx   flow-pixel-ssim-px --set data.train=$IR_TRAIN --set net.size=tiny
}
ir_methods() {
  tr ir-edsr     edsr               --set data.train=$IR_TRAIN
  tr ir-swinir   swinir             --set data.train=$IR_TRAIN
  tr ir-demo     demo               --set data.train=$IR_TRAIN --set train.time_limit=null
  tr ir-dwt-ll   difiisr-dwt-ll     --set data.train=$IR_TRAIN "${DIFF[@]}"
  tr ir-dwt-full difiisr-dwt-full   --set data.train=$IR_TRAIN "${DIFF[@]}"
  tr ir-dwt-all  difiisr-dwt-all    --set data.train=$IR_TRAIN "${DIFF[@]}"
  tr ir-dwt-alll difiisr-dwt-all-learnable --set data.train=$IR_TRAIN "${DIFF[@]}"
  tr ir-dwt-ll-l1 difiisr-dwt-ll    --set data.train=$IR_TRAIN --set net.size=tiny "${L1[@]}"
}
ir_ablations() {      # on the demo recipe (ResShift T 4, Haar 'all', L1 on x0 with a hard gate t <= 1)
  tr abl-nofid   demo --set data.train=$IR_TRAIN --set 'losses.terms=[]'
  tr abl-l1ssim  demo --set data.train=$IR_TRAIN \
    --set 'losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}, gate: {kind: hard, t_max: 1}}, {name: ssim, weight: {kind: constant, value: 0.5}, gate: {kind: hard, t_max: 1}}]'
  tr abl-gnone   demo --set data.train=$IR_TRAIN \
    --set 'losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}, gate: {kind: none}}]'
  tr abl-glinear demo --set data.train=$IR_TRAIN \
    --set 'losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}, gate: {kind: linear, t_max: 3}}]'
  tr abl-gbins   demo --set data.train=$IR_TRAIN \
    --set 'losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}, gate: {kind: bins, edges: [1, 2], values: [1.0, 0.1, 0.001]}}]'
  tr abl-minsnr  demo --set data.train=$IR_TRAIN --set process.min_snr_gamma=5
}
ir_infrared() {       # infrared degradation (stripe noise, blur, non-uniformity, noise)
  tr irdeg-edsr  edsr --set data.train=$IR_TRAIN --set data.degradation.name=infrared
  tr irdeg-demo  demo --set data.train=$IR_TRAIN --set data.degradation.name=infrared
}
mri_methods() {       # train on T1 MPRAGE slices; evaluated on the T2w volume
  tr mri-edsr    edsr           --set data.train=$MRI_T1
  tr mri-swinir  swinir         --set data.train=$MRI_T1
  tr mri-demo    demo           --set data.train=$MRI_T1
  tr mri-dwt-ll  difiisr-dwt-ll --set data.train=$MRI_T1 "${DIFF[@]}"
  tr mri-dwt-all difiisr-dwt-all --set data.train=$MRI_T1 "${DIFF[@]}"
  tr mri-dwt-full difiisr-dwt-full --set data.train=$MRI_T1 "${DIFF[@]}"
  tr mri-dwt-alll difiisr-dwt-all-learnable --set data.train=$MRI_T1 "${DIFF[@]}"
}
mri_methods_slow() {
  tr mri-flowpx  flow-pixel-ssim-px --set data.train=$MRI_T1 --set net.size=tiny
}
mri_kspace_edsr() { tr mrik-edsr edsr --set data.train=$MRI_T1 --set data.scale=2 --set data.degradation.name=kspace; }
mri_kspace_diffsr() { tr mrik-diffsr mri-kspace-x2 --set data.train=$MRI_T1; }
mri_kspace() {        # x2 k-space truncation
  mri_kspace_edsr
  mri_kspace_diffsr
}
train_a() { ir_methods; ir_ablations; ir_infrared; }
train_b() { ir_methods_slow; mri_methods_slow; mri_methods; mri_kspace; }

# ---- evaluation: centre 256x256 crops of all 20 RoadScene test frames; 24 T2w slices ----
EV=(--crop 256)
# the tables are measured at the run's own sampling (detail 0); the perception-distortion sweep is
# docs/results.md's own section (eval_pd)
ev() { local out=$1; shift; diffsr eval --out "$R/$out" --detail-sweep none "$@" > "$R/$out.log" 2>&1; }
eval_ir() {
  ev eval-ir --data $IR_TEST --scale 4 "${EV[@]}" --method bicubic --method $R/ir-edsr \
    --method $R/ir-swinir --method $R/ir-flowpx --method $R/ir-dwt-ll --method $R/ir-dwt-ll-l1 \
    --method $R/ir-dwt-full --method $R/ir-dwt-all --method $R/ir-dwt-alll --method $R/ir-demo
}
eval_steps() {
  ev eval-steps --data $IR_TEST --scale 4 "${EV[@]}" --method bicubic --method $R/ir-dwt-ll-l1 \
    --steps 1 --steps 4 --steps 15
}
eval_abl() {
  ev eval-abl --data $IR_TEST --scale 4 "${EV[@]}" --method bicubic --method $R/ir-demo \
    --method $R/abl-nofid --method $R/abl-l1ssim --method $R/abl-gnone --method $R/abl-glinear \
    --method $R/abl-gbins --method $R/abl-minsnr
}
eval_irdeg() {
  ev eval-irdeg --data $IR_TEST --scale 4 "${EV[@]}" --degradation infrared --method bicubic \
    --method $R/irdeg-edsr --method $R/irdeg-demo
}
eval_mri() {
  ev eval-mri --data $MRI_T2 --scale 4 --limit 24 --method bicubic --method $R/mri-edsr \
    --method $R/mri-swinir --method $R/mri-flowpx --method $R/mri-dwt-ll --method $R/mri-dwt-full \
    --method $R/mri-dwt-all --method $R/mri-dwt-alll --method $R/mri-demo
}
eval_mrik() {
  ev eval-mrik --data $MRI_T2 --scale 2 --limit 24 --degradation kspace --method bicubic \
    --method $R/mrik-edsr --method $R/mrik-diffsr
}
eval_set5() {   # natural images (optional in the issue): the infrared-trained models on Set5, Y channel
  ev eval-set5 --data ../shared/data/natural/set5 --scale 4 --method bicubic --method $R/ir-edsr \
    --method $R/ir-swinir --method $R/ir-dwt-ll-l1 --method $R/ir-demo
}
eval_steps_all() {   # the same sweep for the 'all' layout, whose samples do depend on the step count
  ev eval-steps-all --data $IR_TEST --scale 4 "${EV[@]}" --method bicubic --method $R/ir-dwt-all \
    --steps 1 --steps 4 --steps 15
}
eval_mrik_cons() {   # with vs without k-space consistency at 1 / 4 / 15 steps (same checkpoint)
  ev eval-mrik-cons --data $MRI_T2 --scale 2 --limit 24 --degradation kspace --method bicubic \
    --method "$R/mrik-diffsr@consistency=none" --method $R/mrik-diffsr --steps 1 --steps 4 --steps 15
}
evals() { eval_ir; eval_steps; eval_abl; eval_irdeg; eval_mri; eval_mrik; eval_set5; eval_steps_all; eval_mrik_cons; }

all() {
  train_a & a=$!
  train_b & b=$!
  wait $a; wait $b
  evals
}
for f in "${@:-all}"; do "$f"; done
