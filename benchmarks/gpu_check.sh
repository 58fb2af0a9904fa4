#!/usr/bin/env bash
# The one GPU check: everything diffsr has not yet measured on a GPU, in one go (<= 8 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--data ROADSCENE] [--wheels DIR] [--out DIR] [--train-seconds N]
#
#   --data ROADSCENE   folder with train/ and test/ (../shared/data/infrared/roadscene): the 240-s bf16
#                      trainings of demo and edsr and their `diffsr eval`; without it those are skipped
#   --wheels DIR       a folder of wheels (ptwt, pytorch_msssim, and diffsr's own dependencies if the
#                      machine lacks them), installed with pip --no-index: nothing uses the network
#   --out DIR          results folder (default: $OUT when set, else benchmarks/results/gpu)
#   --train-seconds N  the trainings' time limit (default 240, the published 240-s EDSR anchor's budget)
#   --dry-run          CPU, tiny sizes, 5-s trainings on two images: < 2 minutes; CI runs it
#                      (tests/integration/test_gpu_check.py) so the script cannot rot
#
# Steps, each under a timeout so the whole run stays inside a short GPU slot, each recorded even
# when it fails (the next ones still run):
#   1. env.json            GPU, driver, torch, CUDA
#   2. pytest_gpu.json     pytest -m gpu
#   3. checks.json         CUDA variants of the key tests (benchmarks/gpu_check.py checks)
#   4. speed.json          throughput, Haar vs ptwt and a copy, SSIM vs pytorch_msssim, latency
#   5. runs.json           the two trainings (run concurrently on the one GPU) and their eval
#   6. summary.json / summary.md
# Exit status: 0 when every step ran and every check passed, 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DRY=0
DATA=""
WHEELS=""
RESULTS="${OUT:-$ROOT/benchmarks/results/gpu}"
TRAIN_SECONDS=240
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --data) DATA="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) RESULTS="$2"; shift ;;
    --train-seconds) TRAIN_SECONDS="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
PY="${PYTHON:-python}"
START=$(date +%s)
FAILED=0

log() { echo "[gpu_check.sh +$(( $(date +%s) - START ))s] $*"; }

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; DRYFLAG=--dry-run; TRAIN_SECONDS=5
  PYTEST_TARGET="tests/eval/test_bench.py"  # collecting the whole suite alone would take the dry run's budget
  T_PYTEST=120; T_CHECKS=150; T_SPEED=150; T_EVAL=150; T_TRAIN_START=240  # slack for a loaded CI machine
  TRAIN_SET=(--set data.patch_size=32 --set data.batch_size=2 --set train.threads=1 --set train.audit=false)
  EVAL_SET=(--limit 2 --crop 64)
else
  DEVICE=cuda; DRYFLAG=""
  PYTEST_TARGET="tests"
  T_PYTEST=60; T_CHECKS=75; T_SPEED=100; T_EVAL=45; T_TRAIN_START=45  # start-up + final checkpoint
  TRAIN_SET=(--set train.mixed_precision=bf16 --set data.num_workers=4)
  EVAL_SET=()
fi

# 0. wheels (offline)
if [ -n "$WHEELS" ]; then
  log "installing peers from $WHEELS (no index)"
  if ! "$PY" -c "import diffsr.cli" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e "$ROOT" || FAILED=1
  fi
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" ptwt pytorch_msssim || log "peers not installed (recorded as skipped)"
fi

# 1. environment
"$PY" - "$RESULTS/env.json" "$DEVICE" <<'EOF' || FAILED=1
import json, subprocess, sys, torch
info = {"device": sys.argv[2], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "python": sys.version.split()[0]}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name()
    info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = "not available"
json.dump(info, open(sys.argv[1], "w"), indent=2)
EOF
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "no CUDA device: run with --dry-run on a CPU"; exit 1
fi

# 2. pytest -m gpu
log "pytest -m gpu $PYTEST_TARGET"
cd "$ROOT"
timeout "$T_PYTEST" "$PY" -m pytest -q -p no:cacheprovider -m gpu "$PYTEST_TARGET" > "$RESULTS/pytest_gpu.log" 2>&1
RC=$?
"$PY" - "$RESULTS/pytest_gpu.json" "$RC" "$RESULTS/pytest_gpu.log" <<'EOF'
import json, sys
rc, tail = int(sys.argv[2]), open(sys.argv[3]).read().strip().splitlines()[-1:]
# 5: no test selected (no CUDA: every gpu test skips/deselects) is not a failure
row = {"name": "pytest -m gpu", "status": "ok" if rc in (0, 5) else "error", "rc": rc, "last_line": tail,
       "pass": rc in (0, 5)}
json.dump({"rows": [row]}, open(sys.argv[1], "w"), indent=2)
EOF
[ "$RC" = 0 ] || [ "$RC" = 5 ] || FAILED=1

# 3-4. checks and speed
cd "$ROOT/benchmarks"
for PART in checks speed; do
  LIMIT=$T_CHECKS; [ "$PART" = speed ] && LIMIT=$T_SPEED
  log "gpu_check.py $PART (timeout ${LIMIT}s)"
  DATA_ARG=()
  [ "$PART" = checks ] && [ -n "$DATA" ] && DATA_ARG=(--data "$DATA/train")
  timeout "$LIMIT" "$PY" gpu_check.py "$PART" --device "$DEVICE" $DRYFLAG --out "$RESULTS" "${DATA_ARG[@]}" \
    > "$RESULTS/$PART.log" 2>&1 || { log "$PART: exit $? (see $PART.log)"; FAILED=1; }
done

# 5. the time-budgeted trainings (concurrently: each tiny model leaves the GPU mostly idle) and their eval
cd "$ROOT"
if [ -n "$DATA" ]; then
  log "training demo and edsr for ${TRAIN_SECONDS}s each (concurrently)"
  PIDS=()
  for PRESET in demo edsr; do
    timeout $(( TRAIN_SECONDS + T_TRAIN_START )) "$PY" -m diffsr train "$PRESET" --out "$RESULTS/runs/$PRESET" --no-progress \
      $([ "$DRY" = 1 ] && echo --cpu) --set "data.train=$DATA/train" --set "train.time_limit=$TRAIN_SECONDS" \
      --set train.steps=100000000 --set train.ckpt_every=100000000 --set train.val_every=null \
      "${TRAIN_SET[@]}" > "$RESULTS/train_$PRESET.log" 2>&1 &
    PIDS+=($!)
  done
  for PID in "${PIDS[@]}"; do wait "$PID" || { log "a training failed (train_*.log)"; FAILED=1; }; done
  log "diffsr eval on $DATA/test"
  timeout "$T_EVAL" "$PY" -m diffsr eval --data "$DATA/test" --method bicubic --method "$RESULTS/runs/demo" \
    --method "$RESULTS/runs/edsr" --out "$RESULTS/eval" --detail-sweep none "${EVAL_SET[@]}" \
    > "$RESULTS/eval.log" 2>&1 || { log "eval failed (eval.log)"; FAILED=1; }
  (cd "$ROOT/benchmarks" && "$PY" gpu_check.py runs --out "$RESULTS" --train-seconds "$TRAIN_SECONDS") || FAILED=1
else
  log "no --data: the 240-s trainings are skipped"
fi

# 6. summary
cd "$ROOT/benchmarks"
"$PY" gpu_check.py summary --out "$RESULTS" || FAILED=1
log "done in $(( $(date +%s) - START ))s: $RESULTS/summary.md"
exit "$FAILED"
