#!/usr/bin/env bash
# On a GPU machine: build fastdiff (with fastdiff._C), then run the stages named as arguments, in
# the order given; with none, all of them in this order:
#   tests     every test, the GPU ones included
#   sanitize  compute-sanitizer: memcheck and racecheck over the C++ example program, memcheck
#             over the op tests of the cuda backend
#   ops       the op benchmarks, then record_auto.py (the measured backend orders, for auto)
#   models    bench_models.py, whose auto rows use the orders that ops recorded
#   sampling  bench_sampling.py
# Where commands are time-limited, name one stage per call: each is meant to fit in ten minutes.
# A failing step fails the run; the later steps still run. Results land in results/ (and in $OUT
# when it is set), the measured backend orders in fastdiff/measured.json.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
ALL="tests sanitize ops models sampling"
STAGES="${*:-$ALL}"
for stage in $STAGES; do
    [[ " $ALL " == *" $stage "* ]] || { echo "unknown stage $stage; expected some of: $ALL"; exit 2; }
done
status=0
python -m pip install -q --no-build-isolation --no-deps -e . || exit 1
python -I -c "import fastdiff._C, fastdiff._triton" || exit 1

cuda_tool() { command -v "$1" || echo "${CUDA_HOME:-/usr/local/cuda}/bin/$1"; }

sanitize() {
    local sanitizer nvcc
    sanitizer=$(cuda_tool compute-sanitizer) nvcc=$(cuda_tool nvcc)
    # The example program as README.md builds it, for this GPU only, with line numbers for the reports;
    # without cmake, against the static library that the package build installed.
    if command -v cmake >/dev/null; then
        cmake -S csrc -B build/csrc -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=native \
            -DCMAKE_CUDA_FLAGS=-lineinfo >/dev/null && cmake --build build/csrc -j "$(nproc)" --target run_ops
    else
        mkdir -p build/csrc && "$nvcc" -std=c++17 -Ifastdiff/include csrc/examples/run_ops.cpp \
            fastdiff/lib/libfastdiff.a -o build/csrc/run_ops
    fi || { status=1; return; }
    for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool build/csrc/run_ops"
        "$sanitizer" --tool "$tool" --error-exitcode 1 build/csrc/run_ops || status=1
    done
    # Without PyTorch's caching allocator every tensor is its own allocation, so memcheck sees an
    # overrun that would otherwise land in a neighbour's block. The model-shape GroupNorm tests
    # (hundreds of MB each) are left out, and a time limit keeps the stage within ten minutes.
    echo "== compute-sanitizer --tool memcheck pytest tests/ops -k cuda"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 30 360 "$sanitizer" --tool memcheck --error-exitcode 1 \
        python -m pytest -q -x -k "cuda and not model_shapes" tests/ops \
        || { echo "== exit $? (124: stopped at the time limit)"; status=1; }
}

for stage in $STAGES; do
    echo "=== $stage"
    case $stage in
        tests) python -m pytest -q tests -x -m "not slow" 2>&1 | tee results-tests.log || status=1 ;;
        sanitize) sanitize ;;
        ops)
            for script in benchmarks/bench_attention.py benchmarks/bench_group_norm.py benchmarks/bench_sampler_step.py; do
                echo "== $script"
                python "$script" || status=1
            done
            python benchmarks/record_auto.py || status=1 ;;
        models) python benchmarks/bench_models.py || status=1 ;;
        sampling) python benchmarks/bench_sampling.py || status=1 ;;
    esac
done
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/results"
    cp results/*.json "$OUT/results/" 2>/dev/null
    cp fastdiff/measured.json "$OUT/" 2>/dev/null
    cp results-tests.log "$OUT/" 2>/dev/null
fi
exit $status
