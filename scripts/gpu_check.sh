#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one short script (NOT RUN YET: no GPU was lent to the
# session that wrote it). Two steps:
#
#   bash scripts/gpu_check.sh prepare   # here, with PyPI: wheels the GPU machine lacks -> .whl/
#   bash scripts/gpu_check.sh run       # there, from the repository root; logs under $OUT
#
# `run` does, in order, and stops at the first failure:
#   1. nvidia-smi, python, onnxruntime's providers: what the machine is;
#   2. the CUDA tests (tests/integration/test_cuda.py): a session on CUDAExecutionProvider, and
#      `blindai serve --simulation --device cuda` end to end, outputs against the CPU;
#   3. `scripts/bench.py --quick` on the CPU, then with `--device cuda`: the real-model section
#      of `make bench` (dense 16->4 and a 1024-1024-768-10 MLP) against onnxruntime in-process.
# GPU attestation (NVML confidential-computing reports) needs a GPU in CC mode inside a
# confidential VM: an ordinary GPU machine cannot show it; step 1 prints the CC state.
#
# onnxruntime-gpu does not fit the 64 MiB a device call may carry: the machine's onnxruntime
# must have CUDAExecutionProvider already, or step 2 stops with that reason (exit 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-python3}"  # the GPU image's python3 holds PyTorch and onnxruntime
mkdir -p "$OUT"

prepare() {
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
    rm -rf .whl && mkdir .whl
    # what blindai[server,cli,rim] needs beyond the GPU image's own packages (py3.12, x86-64)
    for pkg in cbor2 starlette uvicorn pydantic-settings python-dotenv dcap-qvl signxml tqdm; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$pkg"
    done
    du -sh .whl
}

run() {
    set -o pipefail
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "(no nvidia-smi: no NVIDIA driver here)"
        nvidia-smi conf-compute -f 2>&1 || echo "(no confidential-computing state from nvidia-smi)"
        "$PY" -c 'import sys, onnxruntime as o; print(sys.version); print("onnxruntime", o.__version__, o.get_available_providers())'
    } 2>&1 | tee "$OUT/machine.txt"
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if ! "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
        echo "onnxruntime here has no CUDAExecutionProvider: install onnxruntime-gpu on this machine" | tee "$OUT/result.txt"
        exit 3
    fi
    PYTHONUNBUFFERED=1 "$PY" -m pytest -q -p no:cacheprovider -rs tests/integration/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
    PYTHONUNBUFFERED=1 "$PY" scripts/bench.py --quick --device cpu 2>&1 | tee "$OUT/bench_cpu.txt"
    PYTHONUNBUFFERED=1 "$PY" scripts/bench.py --quick --device cuda 2>&1 | tee "$OUT/bench_cuda.txt"
    echo "all GPU checks passed" | tee "$OUT/result.txt"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
