#!/usr/bin/env bash
# The GPU checks (issue #6, docs/benchmarks.md) in one run, for a session that is lent a CUDA machine:
#   the CUDA tests, the shipped mini world on the GPU, and apt2-8b (random weights, bf16) at 736x416.
# Run from the repository root with a python3 that has CUDA torch; the project need not be installed (pygame and
# moderngl are not needed). Logs and JSON go to $OUT (default gpu-check/). Each part has its own time limit so
# that one failure still leaves the others' results.
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

bench() {  # NAME LIMIT_S ARGS...: one bench, its JSON in $out/NAME.json and its progress log in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== bench $name"
    timeout "$limit" python3 -c 'import sys; from explorer.cli import main; sys.exit(main())' bench "$@" --json \
        >"$out/$name.json" 2>"$out/$name.log"
    echo "rc=$?"
    tr '\r' '\n' <"$out/$name.log" | grep -v '^\s*$' | tail -n 3
    cat "$out/$name.json"
}

nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
echo "== tests"
timeout 150 python3 -m pytest -q -rs tests/test_cuda.py tests/test_bench.py 2>&1 | tee "$out/pytest.log" | tail -n 15
bench bench-apt2-8b-cuda 290 --config apt2-8b --device cuda --seconds 20 --baseline-steps ${BASELINE_STEPS:-6}
bench bench-mini-cuda 100 --config mini --device cuda --seconds 20
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv
