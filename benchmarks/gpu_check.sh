#!/usr/bin/env bash
# Issue 17 item 3: the building-use mapping pipeline on one CUDA GPU (at most 7.5 min: 300 s eager + 150 s compiled).
# ResNet-34 U-Net (full width), 6 bands, window 1024 / margin 128, bf16 autocast + channels-last,
# 4096 x 4096 px raster (4.2 km² at 0.5 m, 36 windows). For each batch size: model-only and
# end-to-end (read -> write) windows/s and km²/h, GPU utilisation (nvidia-smi every 200 ms) and
# the pipeline/model ratio; then the same with torch.compile at the batch size that did best.
# Usage: bash benchmarks/gpu_check.sh [extra bench_inference.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc; uptime
COMMON=(--device cuda --encoder resnet34 --bands 6 --window 1024 --margin 128 --base-width 64
        --precision bf16 --size 4096 --workers 4 --repeat 2 --skip-noop --skip-memory "$@")
timeout 300 "$PY" benchmarks/bench_inference.py "${COMMON[@]}" --batch-sizes 4,8,16,32 | tee /tmp/gpu_check_eager.txt
# torch.compile only where it pays: one batch size, compared with the eager run above
timeout 150 "$PY" benchmarks/bench_inference.py "${COMMON[@]}" --batch-sizes 16 --compile \
    || echo "torch.compile run failed or timed out (eager figures above stand)"
