#!/usr/bin/env bash
# The GPU check, one prepared script: needs only python with torch, timm and triton (no Hydra, no W&B).
# Stages, each with its own time limit (about 8 minutes in all on one H100/H200, leaving room for a rerun):
#   1. the fused rotation (Triton kernel) against the float64 reference on the GPU, values and
#      gradients, fp32 and bf16, each table layout (experiments/gpu_smoke.py --kernel-check);
#   2. speed, eager: ViT-B/16 and ViT-S/16 at 224, bf16, train batch 64, inference batch 256: none,
#      timm's Eva RoPE (and Eva without it), axial2_matrix, axial2_complex, N = 2..6 and 16 fast,
#      folded, matrix, lie_block; interleaved rounds, median and interquartile range of × none;
#   3. speed, compiled (torch.compile): ViT-B/16, the variants in COMPILED_VARIANTS (compilation is
#      most of this stage's time: every variant compiles a training and an inference graph);
#   4. a few hundred training steps of two variants with bf16 autocast and torch.compile on random
#      CIFAR-size data, failing if a loss is not finite or did not fall.
# Usage: bash experiments/gpu_check.sh                (writes a log under $OUT, or experiments/results/)
#        bash experiments/gpu_check.sh --device cpu   (every stage on tiny shapes: a check of the script)
# Record the printed tables, with date and card, in README.md ("Measured on a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "$#" -gt 0 ]; then
  if [ "$#" -eq 2 ] && [ "$1" = "--device" ] && { [ "$2" = cuda ] || [ "$2" = cpu ]; }; then
    DEVICE="$2"
  else
    echo "usage: bash experiments/gpu_check.sh [--device cuda|cpu]; got: $*" >&2
    exit 2
  fi
fi
PYTHON="${PYTHON:-python}"
KERNEL_LIMIT_S="${KERNEL_LIMIT_S:-60}"
EAGER_LIMIT_S="${EAGER_LIMIT_S:-150}"
COMPILED_LIMIT_S="${COMPILED_LIMIT_S:-200}"
SMOKE_LIMIT_S="${SMOKE_LIMIT_S:-90}"
COMPILED_VARIANTS="${COMPILED_VARIANTS:-none,eva,axial2_complex,axial_block:3:fast,axial_block:3:folded,axial_block:16:fast}"
SMOKE="experiments/gpu_smoke.py"
if [ "$DEVICE" = cpu ]; then
  # Tiny shapes: the script's own check (CI), not a measurement.
  SHAPE=(--img-size 32 --patch-size 16 --depth 1 --embed-dim 64 --num-heads 2 --train-batch 2 --infer-batch 2
         --repeats 2 --warmup 1)
  KERNEL_SHAPE=2,2,3,16
  EAGER_VARIANTS=none,eva,axial2_matrix,axial_block:3:fast,axial_block:16:folded,lie_block:3
  COMPILED_VARIANTS=none,axial_block:3:fast
  SMOKE_ARGS=(--no-compile --dtype fp32 --steps 2 --batch 4 --samples 16)
else
  SHAPE=(--img-size 224 --train-batch 64 --infer-batch 256 --repeats 10 --warmup 3)
  KERNEL_SHAPE=8,12,14,64
  EAGER_VARIANTS=""  # empty: every variant of gpu_smoke.SPEED_VARIANTS
  SMOKE_ARGS=(--dtype bf16 --steps 300 --batch 256 --require-decrease)
fi
LOG_DIR="${OUT:-experiments/results}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check_$(date -u +%Y%m%dT%H%M%SZ).log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled

status=0
set +e  # the group below exits with its own status; keep the log either way
{
  set -e
  echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) device=$DEVICE =="
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not available"
  fi
  "$PYTHON" -c "import sys, torch, timm, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'triton', triton.__version__); assert sys.argv[1] != 'cuda' or torch.cuda.is_available(), 'no CUDA device visible to torch'" "$DEVICE"

  echo "== 1. fused rotation vs reference (limit ${KERNEL_LIMIT_S}s) [at ${SECONDS}s] =="
  timeout --signal=INT --kill-after=10 "$KERNEL_LIMIT_S" "$PYTHON" "$SMOKE" --kernel-check \
    --device "$DEVICE" --kernel-shape "$KERNEL_SHAPE" \
    || { rc=$?; echo "kernel check: FAILED (exit $rc; 124 = over ${KERNEL_LIMIT_S}s)"; status=1; }

  echo "== 2. speed, eager: ViT-B/16 and ViT-S/16, bf16 (limit ${EAGER_LIMIT_S}s) [at ${SECONDS}s] =="
  timeout --signal=INT --kill-after=10 "$EAGER_LIMIT_S" "$PYTHON" "$SMOKE" --speed --modes eager \
    --device "$DEVICE" --dtype bf16 --models vit_base_patch16_224,vit_small_patch16_224 "${SHAPE[@]}" \
    ${EAGER_VARIANTS:+--speed-variants "$EAGER_VARIANTS"} \
    || { rc=$?; echo "speed eager: FAILED (exit $rc; 124 = over ${EAGER_LIMIT_S}s)"; status=1; }

  echo "== 3. speed, compiled: ViT-B/16, bf16 (limit ${COMPILED_LIMIT_S}s) [at ${SECONDS}s] =="
  timeout --signal=INT --kill-after=10 "$COMPILED_LIMIT_S" "$PYTHON" "$SMOKE" --speed --modes compiled \
    --device "$DEVICE" --dtype bf16 --models vit_base_patch16_224 "${SHAPE[@]}" --speed-variants "$COMPILED_VARIANTS" \
    || { rc=$?; echo "speed compiled: FAILED (exit $rc; 124 = over ${COMPILED_LIMIT_S}s)"; status=1; }

  echo "== 4. smoke: training steps x 2 variants (limit ${SMOKE_LIMIT_S}s) [at ${SECONDS}s] =="
  timeout --signal=INT --kill-after=10 "$SMOKE_LIMIT_S" "$PYTHON" "$SMOKE" \
    --device "$DEVICE" --variants none,axial_block:4 "${SMOKE_ARGS[@]}" \
    || { rc=$?; echo "smoke: FAILED (exit $rc; 124 = over ${SMOKE_LIMIT_S}s)"; status=1; }
  echo "== gpu_check: $([ "$status" -eq 0 ] && echo PASSED || echo FAILED) =="
  exit "$status"
} 2>&1 | tee "$LOG"
rc="${PIPESTATUS[0]}"
echo "log: $LOG"
exit "$rc"
