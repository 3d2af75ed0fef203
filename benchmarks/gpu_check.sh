#!/usr/bin/env bash
# Issue 17 item 3: the building-use mapping pipeline on one CUDA GPU (about 5 min; at most 8).
# First the engine's CUDA tests (tests/unit/test_sliding_window_host.py). Then ResNet-34 U-Net (full width),
# 6 bands, window 1024 / margin 128, bf16 autocast + channels-last, 8192 x 8192 px raster (16.8 km² at
# 0.5 m, 121 windows). For each batch size of BATCH_SIZES (default 4,8,16,32): model-only and end-to-end
# (read -> write) windows/s and km²/h, GPU utilisation (nvidia-smi every 200 ms) and the pipeline/model
# ratio, with BEFORE (a git revision, or a folder holding `git archive REV` unpacked) measured in the same
# run; then at batch 16: 8 reader threads instead of 4, and torch.compile.
# Where the python has no rasterio/pyproj/shapely (a bare GPU machine), wheels in .whl/ are installed
# into /tmp/site first; `edifice` is this checkout (a link named edifice on PYTHONPATH). The wheels (Python 3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 pyproj==3.7.2 shapely==2.1.2
# The H100 figures (session 10) are in benchmarks/bench_inference.py's docstring.
# Usage: bash benchmarks/gpu_check.sh [extra bench_inference.py arguments]   (figures also in $OUT/gpu_check.txt)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.txt
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import rasterio, pyproj, shapely" 2>/dev/null && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import edifice" 2>/dev/null; then
    mkdir -p /tmp/edifice-path && ln -sfn "$PWD" /tmp/edifice-path/edifice
    export PYTHONPATH=/tmp/edifice-path${PYTHONPATH:+:$PYTHONPATH}
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
    echo "cores: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"; uptime
    "$PY" -c "import torch, numpy, rasterio; print('torch', torch.__version__, 'numpy', numpy.__version__, 'rasterio', rasterio.__version__, 'GDAL', rasterio.__gdal_version__)"
    "$PY" -c "import numba; print('numba', numba.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$LOG"
DATA=/tmp/gpu_check_data
COMMON=(--device cuda --encoder resnet34 --bands 6 --window 1024 --margin 128 --base-width 64
        --precision bf16 --size 8192 --workers 4 --repeat 2 --skip-noop --skip-memory --data-dir "$DATA" "$@")
run() {  # run TIMEOUT LABEL [env settings] COMMAND...
    local t=$1 label=$2; shift 2
    echo "=== $label" | tee -a "$LOG"
    timeout "$t" env "$@" 2>&1 | tee -a "$LOG" || echo "($label: failed or timed out; the figures above stand)" | tee -a "$LOG"
}
run 90 "CUDA tests of the engine" "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_sliding_window_host.py
run 240 "eager, batch sizes ${BATCH_SIZES:-4,8,16,32}" "$PY" benchmarks/bench_inference.py "${COMMON[@]}" \
    --batch-sizes "${BATCH_SIZES:-4,8,16,32}" ${BEFORE:+--before "$BEFORE"}
run 70 "8 reader threads, batch 16" "$PY" benchmarks/bench_inference.py "${COMMON[@]}" --batch-sizes 16 --workers 8
run 140 "torch.compile, batch 16" "$PY" benchmarks/bench_inference.py "${COMMON[@]}" --batch-sizes 16 --compile
