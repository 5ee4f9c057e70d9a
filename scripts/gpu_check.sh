#!/usr/bin/env bash
# Everything still owed on a GPU, in one command (one device call, under 9.5 minutes):
#   tests   the Triton kernel tests compiled (TRITON_INTERPRET=0, against ATen's CUDA code), the
#           CUDA-graph and broadcast tests (pytest-xdist spreads the compiles when installed);
#   brain   issue 13's brain benchmark, regnet's side on the GPU (whole `regnet register`
#           processes, the same pairs and scoring as the CPU run; ANTs stays on the CPU), on the
#           label-map T1 contrast with subject_a -> MNI152 (scoring takes ~9 s a pair);
#   brain-t1real  the same on the real-T1 contrast (not in the default: time);
#   benches the GPU benchmarks of one SyN iteration, the ops and the losses.
# Usage: scripts/gpu_check.sh [tests] [brain] [brain-t1real] [benches]   (default: tests brain benches)
# Every step has its own time limit, so a slow one cannot eat the others. JSON lands in
# benchmarks/results/ with the GPU's name; when $OUT is set (the device tool's result folder)
# the log and one tarball of every CUDA JSON land there too, refreshed after each step.
# Needs monai and nibabel importable (carry them as wheels; docs/triton.md, "GPU benchmarks"),
# and the shared data under $REGNET_DATA (default ../shared/data).
set -uo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
out=${OUT:-$results}
mkdir -p "$out"
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
log="$out/gpu_check.log"
status=0
parts=${*:-tests brain benches}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//' | tr 'A-Z' 'a-z')
pack() {
    [ "$out" = "$results" ] && return
    tar -czf "$out/gpu_results.tar.gz" $(ls $results/*cuda*.json 2>/dev/null) 2>/dev/null
}
step() {  # step LIMIT_S COMMAND...
    local limit=$1 rc
    shift
    echo "== $* (limit ${limit} s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { status=1; echo "== exit status $rc" | tee -a "$log"; }
    pack
}
wants() { [[ " $parts " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$log"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$log"
if wants brain || wants brain-t1real; then  # the benchmark's inputs, made on the CPU while the kernels compile
    PYTHONPATH="scripts${PYTHONPATH:+:$PYTHONPATH}" python -c "
from concurrent.futures import ProcessPoolExecutor
import brain_pairs as b
n = len(b.SUBJECTS)
with ProcessPoolExecutor(6) as pool:
    list(pool.map(b.subject_files, b.SUBJECTS, [1] * n, [('t1', 't1real')] * n))
    b.mni_pair_files(1)
" >>"$log" 2>&1 &
fi
if wants tests; then
    parallel=()
    python -c "import xdist" 2>/dev/null && parallel=(-n 8)
    step 150 python -m pytest -q -p no:cacheprovider "${parallel[@]}" tests/triton_kernels tests/test_cuda_graph.py \
        tests/test_broadcast.py
fi
wait
if wants brain; then
    step 180 python scripts/bench_brain_pairs.py --methods regnet --fixed-contrast t1 \
        --regnet-arg=--device --regnet-arg=cuda --out "$results/bench_brain_pairs_cuda_$gpu.json"
fi
if wants brain-t1real; then
    step 160 python scripts/bench_brain_pairs.py --methods regnet --fixed-contrast t1real \
        --moving-contrast t1real --no-mni --regnet-arg=--device --regnet-arg=cuda \
        --out "$results/bench_brain_pairs_t1real_cuda_$gpu.json"
fi
if wants benches; then
    # torch.compile's column is left out (--compile off): its compiles alone would need the whole budget
    step 50 python scripts/bench_syn_iteration.py --device cuda
    step 50 python scripts/bench_ops.py --device cuda --batch 1 --compile off
    step 50 python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 1 --compile off
    step 50 python scripts/bench_ops.py --device cuda --batch 4 --compile off
    step 30 python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 4 --compile off
    step 20 python scripts/bench_losses.py --device cuda --shapes 128x128x128 --batch 2 --channels 16 --losses lncc7 \
        --compile off
fi
exit $status
