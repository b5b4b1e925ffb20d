#!/usr/bin/env bash
# On a GPU machine: build fastdiff (with fastdiff._C), then run the stages named as arguments, in
# the order given; with none, all of them in this order:
#   tests-ops     tests/ops, tests/csrc and tests/test_backends.py, the GPU ones included, and the
#                 opcheck matrix (marked slow) on the GPU's tensors
#   tests-models  the other tests (tests/models, tests/sampling, tests/training)
#   sanitize      compute-sanitizer: memcheck and racecheck over the C++ example program, memcheck
#                 over the op tests of the cuda backend
#   ops           the op benchmarks, then record_auto.py (the measured backend orders, for auto)
#   models        bench_models.py, whose auto rows use the orders that ops recorded
#   sampling      bench_sampling.py
#   pipeline      bench_pipeline.py: diffusers eager, torch.compile and fastdiff.accelerate
# `tests` names both test stages. Where commands are time-limited, name one stage per call: each
# is meant to fit in ten minutes. Tests run without -x: every failure is reported.
#
# It runs `python3` (the Python that holds torch) and `python3 -m pip`. The build needs pybind11 and
# ninja; tests-models, models and sampling want diffusers. Any of them missing is installed from
# .device-wheels/ when the project holds that folder (a machine without a package registry: see
# ../shared/wheels/README.md); without them the build stops, and the stages say what they skip.
#
# A failing step fails the run; the later steps still run. Results land in results/ (the benchmarks'
# JSON, rewritten after every row, and one <stage>.log per stage) and, when $OUT is set, in
# $OUT/results/ (logs written there as they grow, JSON copied after each stage); the measured
# backend orders in fastdiff/measured.json (and $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
ALL="tests-ops tests-models sanitize ops models sampling pipeline"
STAGES=""
for stage in ${*:-$ALL}; do
    case $stage in
        tests) STAGES="$STAGES tests-ops tests-models" ;;
        *) [[ " $ALL " == *" $stage "* ]] || { echo "unknown stage $stage; expected some of: $ALL (or tests)"; exit 2; }
           STAGES="$STAGES $stage" ;;
    esac
done
WHEELS=.device-wheels
WHEELS_HELP="../shared/wheels/README.md says how to bring the wheels (copied into $WHEELS/ and carried)"
mkdir -p results
[ -n "${OUT:-}" ] && mkdir -p "$OUT/results"
status=0

publish() {  # copy what the run has produced so far to $OUT
    [ -n "${OUT:-}" ] || return 0
    cp results/*.json "$OUT/results/" 2>/dev/null
    cp fastdiff/measured.json "$OUT/" 2>/dev/null
    return 0
}
trap 'publish; exit 143' TERM INT

need() {  # need MODULE...: 0 when each imports, installing the missing ones from $WHEELS/ if it exists
    local missing=() m
    for m in "$@"; do python3 -c "import $m" 2>/dev/null || missing+=("$m"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ -d "$WHEELS" ] || return 1
    echo "== python3 -m pip install ${missing[*]} from $WHEELS/"
    python3 -m pip install -q --no-index --find-links "$WHEELS" "${missing[@]}" || return 1
    for m in "${missing[@]}"; do python3 -c "import $m" || return 1; done
}

diffusers_or_skip() {  # diffusers_or_skip STAGE WHAT: 0 when diffusers imports, else say what STAGE skips
    need diffusers && return 0
    echo "== $1: diffusers is not importable and no $WHEELS/ provides it: ${*:2}. $WHEELS_HELP."
    return 1
}

if ! need pybind11 ninja; then
    echo "run_gpu.sh: building fastdiff._C needs pybind11 and ninja; $(command -v python3) cannot import them and" \
         "no $WHEELS/ folder provides them. $WHEELS_HELP."
    exit 1
fi
python3 -m pip install -q --no-build-isolation --no-deps -e . || exit 1
python3 -I -c "import fastdiff._C, fastdiff._triton" || exit 1

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
        python3 -m pytest -q -k "cuda and not model_shapes" tests/ops \
        || { echo "== exit $? (124: stopped at the time limit)"; status=1; }
}

tests() {  # tests PATH...: pytest without -x, so that one failure does not hide the rest
    python3 -m pytest -q -m "not slow" --durations=5 "$@" || status=1
}

diffusers_bench() {  # diffusers_bench STAGE SCRIPT: a benchmark every row of which needs diffusers
    if diffusers_or_skip "$1" "every row of $2 needs it, so none runs"; then
        python3 "benchmarks/$2" || status=1
    else
        status=1
    fi
}

run_stage() {  # in a subshell (piped to tee): returns the stage's own status
    status=0
    case $1 in
        tests-ops)
            tests tests/ops tests/csrc tests/test_backends.py
            python3 -m pytest -q --durations=5 tests/ops/test_opcheck.py || status=1 ;;
        tests-models)
            diffusers_or_skip tests-models "tests/models/test_dit.py, test_unet.py and test_vae.py," \
                "tests/sampling/test_vs_diffusers.py and the diffusers comparisons in test_schedules.py are skipped"
            tests tests/models tests/sampling tests/training ;;
        sanitize) sanitize ;;
        ops)
            for script in benchmarks/bench_attention.py benchmarks/bench_group_norm.py benchmarks/bench_sampler_step.py \
                          benchmarks/bench_adaln.py benchmarks/bench_qk_norm_rope.py; do
                echo "== $script"
                python3 "$script" || status=1
            done
            python3 benchmarks/record_auto.py || status=1 ;;
        models)
            diffusers_or_skip models "no 'diffusers eager' or 'diffusers + torch.compile' rows, and fastdiff runs" \
                "its presets' random weights, compared with fastdiff on its torch backend"
            python3 benchmarks/bench_models.py || status=1 ;;
        sampling) diffusers_bench sampling bench_sampling.py ;;
        pipeline) diffusers_bench pipeline bench_pipeline.py ;;
    esac
    return $status
}

for stage in $STAGES; do
    echo "=== $stage"
    # The stage's log, in results/ and (written as it grows, so a run stopped early keeps it) in $OUT.
    run_stage "$stage" 2>&1 | tee "results/$stage.log" ${OUT:+"$OUT/results/$stage.log"}
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    publish
done
exit $status
