"""The SimSwap generator's builders for the model table (`engines.models`, simswap-224/512).

- "onnxruntime" (the CPU default, 33% faster there): the ONNX export of the checkpoint,
  cached by the checkpoint's sha256, so a checkpoint is exported once (the same file TensorRT
  will build from).
- "torch": our nn.Module; `device`, `dtype` (float16 / bfloat16) and `channels_last` are the
  GPU settings (checked on CPU only so far: tests/test_torch_engine.py).
"""

from __future__ import annotations

from ..base import Engine
from .checkpoint import ONNX_INPUTS, ONNX_OUTPUT, export_onnx, load_generator


def build_torch(entry, files: dict, **options) -> Engine:
    """`options`: TorchEngine's device, dtype and channels_last (the GPU settings)."""
    from ..torch_engine import TorchEngine

    return TorchEngine(load_generator(files["weights"], entry.settings["variant"]), ONNX_INPUTS, (ONNX_OUTPUT,), **options)


def cached_onnx(entry, files: dict) -> str:
    """The checkpoint's ONNX export, made once and cached by the checkpoint's sha256: what ONNX
    Runtime runs and TensorRT builds from."""
    from ..model_store import cache_dir
    from ..registry import sha256_of

    path, variant = files["weights"], entry.settings["variant"]
    onnx_path = cache_dir() / "onnx" / f"simswap_{variant}_{sha256_of(path)[:16]}.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_generator(path, variant), str(onnx_path))
    return str(onnx_path)


def build_onnxruntime(entry, files: dict, **options) -> Engine:
    if options:
        raise ValueError(f"the onnxruntime generator backend takes no options, got {', '.join(sorted(options))}")
    from ..onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(cached_onnx(entry, files))


def build_tensorrt(entry, files: dict, **options) -> Engine:
    from ..tensorrt_engine import MAX_BATCH, TensorRTEngine

    size = entry.settings["size"]
    return TensorRTEngine.from_onnx(cached_onnx(entry, files), entry, shapes={
        "image": ((1, 3, size, size), (16, 3, size, size), (MAX_BATCH, 3, size, size)),
        "latent": ((1, 512), (16, 512), (MAX_BATCH, 512)),
    }, **options)
