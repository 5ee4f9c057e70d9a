#!/usr/bin/env bash
# Everything issue 5 still owes on a GPU, in one command (one device call): the Triton kernel
# tests compiled (TRITON_INTERPRET=0, against ATen's CUDA code), the CUDA-graph and broadcast
# tests, then the GPU benchmarks; JSON lands in benchmarks/results/ with the GPU's name, and a
# copy of it and the logs in $OUT when that is set (the device tool's result folder).
# Needs monai (the benchmarks' peers) importable; see docs/triton.md, "GPU benchmarks".
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
status=0
run() { echo "== $*"; "$@" 2>&1 | tee -a "$out/gpu_check.log"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu_check.log"
run python -m pytest -q -p no:cacheprovider tests/triton_kernels tests/test_cuda_graph.py tests/test_broadcast.py
run python scripts/bench_ops.py --device cuda --batch 1
run python scripts/bench_ops.py --device cuda --batch 4
run python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 1
run python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 4
run python scripts/bench_losses.py --device cuda --shapes 128x128x128 --batch 2 --channels 16 --losses lncc7
run python scripts/bench_syn_iteration.py --device cuda
if [ "$out" != benchmarks/results ]; then cp benchmarks/results/*cuda*.json "$out"/ 2>/dev/null; fi
exit $status
