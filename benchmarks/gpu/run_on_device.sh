#!/usr/bin/env bash
# The whole device check in one call (the device tool's `run`), under 8 minutes:
#   run(command="bash benchmarks/gpu/run_on_device.sh", carry=[".whl"], timeout_s=560)
# 1. installs the carried wheels (benchmarks/gpu/prepare_wheels.sh made them here);
# 2. runs the GPU tests (tests/test_gpu.py: the device path on CUDA against the host path);
# 3. runs benchmarks/gpu_throughput.py;
# and leaves the JSON, the markdown and the logs in $OUT for the tool to bring back.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/anonswap-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/machine.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -n 3
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import av, norfair, retinaface; print('av', av.__version__, 'hwdevices', av.codec.hwaccel.hwdevices_available())" \
    2>&1 | tee -a "$OUT/machine.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 15
echo "tests done after $(( $(date +%s) - start )) s"
timeout $(( 470 - ($(date +%s) - start) )) python3 benchmarks/gpu_throughput.py --out "$OUT" 2>&1 | tee "$OUT/gpu_benchmark.log" | tail -n 40
echo "all done after $(( $(date +%s) - start )) s"
