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


def build_onnxruntime(entry, files: dict, **options) -> Engine:
    if options:
        raise ValueError(f"the onnxruntime generator backend takes no options, got {', '.join(sorted(options))}")
    from ..model_store import cache_dir
    from ..onnxruntime_engine import OnnxRuntimeEngine
    from ..registry import sha256_of

    path, variant = files["weights"], entry.settings["variant"]
    onnx_path = cache_dir() / "onnx" / f"simswap_{variant}_{sha256_of(path)[:16]}.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_generator(path, variant), str(onnx_path))
    return OnnxRuntimeEngine(str(onnx_path))
