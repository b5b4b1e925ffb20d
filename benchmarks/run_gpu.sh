#!/usr/bin/env bash
# On a GPU machine: build fastdiff (with fastdiff._C), run every test (the GPU ones included) and
# every benchmark, in one go. Results land in results/ (and in $OUT when it is set), the measured
# backend orders in fastdiff/measured.json.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
status=0
python -m pip install -q --no-build-isolation --no-deps -e . || exit 1
python -I -c "import fastdiff._C, fastdiff._triton" || exit 1
python -m pytest -q tests -x -m "not slow" 2>&1 | tee results-tests.log || status=1
for script in benchmarks/bench_*.py; do
    echo "== $script"
    python "$script" || status=1
done
python benchmarks/record_auto.py || status=1  # the measured backend orders, for auto
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/results"
    cp results/*.json "$OUT/results/" 2>/dev/null
    cp fastdiff/measured.json "$OUT/" 2>/dev/null
    cp results-tests.log "$OUT/" 2>/dev/null
fi
exit $status
