"""Maps (model, backend) to a ready engine. The only place a backend is chosen."""

from __future__ import annotations

from .base import Engine
from .models import get_model


def _onnxruntime(model_bytes: bytes, **options) -> Engine:
    from .onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(model_bytes, **options)


BACKENDS = {"onnxruntime": _onnxruntime}


def load_engine(model: str, backend: str = "onnxruntime", **options) -> Engine:
    spec = get_model(model)
    try:
        build = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}") from None
    return build(spec.load_bytes(), **options)
