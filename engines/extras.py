"""Optional features and the pip extras that bring them (pyproject.toml's optional-dependencies).

The core install runs a blur (pixelate, mask) run: PyAV, NumPy, ONNX Runtime, OpenCV,
scikit-image, norfair, tqdm and the RetinaFace weights. Everything else is an extra, and a
feature whose extra is missing fails in one line (`error: … pip install "anonswap[swap]"`,
exit status 2) when the user asks for it, never with a traceback. Packages are looked up
with `importlib.util.find_spec`: nothing is imported to answer.
"""

from __future__ import annotations

import importlib.util

from pipeline.core.errors import AnonswapError

# extra → the top-level modules its features import (pyproject.toml lists the distributions)
EXTRAS: dict[str, tuple[str, ...]] = {
    # the embedders: dlib (--gallery's default; the audit's re-ID and dlib-mmod), ArcFace/PerFace ONNX (read with onnx)
    "identity": ("dlib", "face_recognition_models", "onnx"),
    "swap": ("torch", "onnx"),  # SimSwap in torch, its ONNX export; PerFace training
    # pictures; CenterFace's graph (onnx); MTCNN's weights (lz4); re-ID and dlib-mmod (the identity extra, which audit includes)
    "audit": ("matplotlib", "onnx", "mtcnn", "lz4", "dlib", "face_recognition_models"),
    "fleet": ("ray",),
    "gpu": ("torch",),  # the device data path (--device cpu|cuda, --backend torch|tensorrt)
    "openvino": ("openvino",),  # --backend openvino: the detector on OpenVINO, host path
}


class MissingExtra(AnonswapError, ImportError):
    """A feature the user asked for needs an extra that is not installed (exit status 2)."""


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (none: the extra is installed)."""
    out = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed install
            found = False
        if not found:
            out.append(module)
    return out


def hint(extra: str) -> str:
    return f'pip install "anonswap[{extra}]"'


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raises MissingExtra (one line: what asked for it, what is missing, the pip command)
    unless `modules` (default: all of the extra's) can be imported."""
    gone = [m for m in missing(extra) if modules is None or m in modules]
    if gone:
        raise MissingExtra(f"{feature} needs the {extra} extra ({', '.join(gone)} not installed): {hint(extra)}")


def require_embedder(embedder: str, feature: str) -> None:
    """The identity extra's part that `embedder` needs: dlib and its weights' package for
    dlib, onnx (the graph's inputs and outputs are read with it) for ArcFace and PerFace."""
    modules = ("dlib", "face_recognition_models") if embedder == "dlib" else ("onnx",)
    require("identity", f"{feature} with --embedder {embedder}", modules)
