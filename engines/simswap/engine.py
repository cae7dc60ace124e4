"""The SimSwap generator behind the `Engine` interface; the backend is picked here, once.

- "torch": our nn.Module; `device`, `dtype` (float16 / bfloat16) and `channels_last` are the
  GPU settings (checked on CPU only so far: tests/test_torch_engine.py).
- "onnxruntime": the ONNX export of the same weights, cached by the checkpoint's sha256, so a
  checkpoint is exported once (the same file TensorRT will build from).
"""

from __future__ import annotations

import hashlib

from ..base import Engine
from .checkpoint import ONNX_INPUTS, ONNX_OUTPUT, export_onnx, load_generator


def _torch(path: str, variant: str, **options) -> Engine:
    """`options`: TorchEngine's device, dtype and channels_last (the GPU settings)."""
    from ..torch_engine import TorchEngine

    return TorchEngine(load_generator(path, variant), ONNX_INPUTS, (ONNX_OUTPUT,), **options)


def _onnxruntime(path: str, variant: str, **options) -> Engine:
    if options:
        raise ValueError(f"the onnxruntime generator backend takes no options, got {', '.join(sorted(options))}")
    from ..model_store import cache_dir
    from ..onnxruntime_engine import OnnxRuntimeEngine

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    onnx_path = cache_dir() / "onnx" / f"simswap_{variant}_{h.hexdigest()[:16]}.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_generator(path, variant), str(onnx_path))
    return OnnxRuntimeEngine(str(onnx_path))


GENERATOR_BACKENDS = {"torch": _torch, "onnxruntime": _onnxruntime}


def generator_engine(path: str, variant: str, backend: str = "torch", **options) -> Engine:
    try:
        build = GENERATOR_BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown generator backend {backend!r}; available: {', '.join(GENERATOR_BACKENDS)}") from None
    return build(path, variant, **options)
