#!/usr/bin/env bash
# GPU readiness check for a lent GPU machine: needs only python with torch and timm (no Hydra, no W&B).
# Under 4 minutes on one modern GPU (each stage has its own time limit), leaving room for a rerun:
#   1. the speed table of `python -m rope_ext.bench` for ViT-B/16 at 224 in bf16 (all variants,
#      N = 2..6, matrix vs fast vs folded);
#   2. a few hundred training steps of two variants on random CIFAR-size data with bf16 autocast and
#      torch.compile (experiments/gpu_smoke.py), failing if a loss is not finite or did not fall.
# Usage: bash experiments/gpu_check.sh            (writes a log under $OUT, or experiments/results/)
# Record the printed tables, with date and card, in README.md ("Measured on a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
BENCH_LIMIT_S="${BENCH_LIMIT_S:-140}"
SMOKE_LIMIT_S="${SMOKE_LIMIT_S:-90}"
LOG_DIR="${OUT:-experiments/results}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check_$(date -u +%Y%m%dT%H%M%SZ).log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled

status=0
set +e  # the group below exits with its own status; keep the log either way
{
  set -e
  echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) =="
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not available"
  "$PYTHON" -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__); assert torch.cuda.is_available(), 'no CUDA device visible to torch'"

  echo "== 1. bench: ViT-B/16 @224, bf16 (limit ${BENCH_LIMIT_S}s) =="
  timeout --signal=INT --kill-after=10 "$BENCH_LIMIT_S" "$PYTHON" -m rope_ext.bench \
    --model vit_base_patch16_224 --img-size 224 --patch-size 16 --depth 12 \
    --device cuda --dtype bf16 --train-batch 64 --infer-batch 256 --blocks 2,3,4,5,6 --lie --steps 20 \
    || { rc=$?; echo "bench: FAILED (exit $rc; 124 = over ${BENCH_LIMIT_S}s)"; status=1; }

  echo "== 2. smoke: 300 steps x 2 variants, bf16 autocast + torch.compile (limit ${SMOKE_LIMIT_S}s) =="
  timeout --signal=INT --kill-after=10 "$SMOKE_LIMIT_S" "$PYTHON" experiments/gpu_smoke.py \
    --device cuda --dtype bf16 --variants none,axial_block:4 --steps 300 --batch 256 --require-decrease \
    || { rc=$?; echo "smoke: FAILED (exit $rc; 124 = over ${SMOKE_LIMIT_S}s)"; status=1; }
  echo "== gpu_check: $([ "$status" -eq 0 ] && echo PASSED || echo FAILED) =="
  exit "$status"
} 2>&1 | tee "$LOG"
rc="${PIPESTATUS[0]}"
echo "log: $LOG"
exit "$rc"
