"""The SimSwap generator's builders for the model table (`engines.models`, simswap-224/512).

- "onnxruntime" (the CPU default, 33% faster there): the ONNX export of the checkpoint,
  cached by the checkpoint's sha256, so a checkpoint is exported once (the same file TensorRT
  will build from).
- "torch": our nn.Module on the placement (engines.placement: device, dtype, channels_last,
  compile; checked on CPU only so far: tests/test_torch_engine.py).
"""

from __future__ import annotations

from ..base import Engine
from ..placement import HOST, Placement
from .checkpoint import ONNX_INPUTS, ONNX_OUTPUT, export_onnx, load_generator


def build_torch(entry, files: dict, *, placement: Placement = HOST) -> Engine:
    from ..torch_engine import TorchEngine

    return TorchEngine.placed(load_generator(files["weights"], entry.settings["variant"]), ONNX_INPUTS, (ONNX_OUTPUT,), placement)


def cached_onnx(entry, files: dict) -> str:
    """The checkpoint's ONNX export, made once and cached by the checkpoint's sha256: what ONNX
    Runtime runs and TensorRT builds from."""
    from ..model_files import cache_dir, sha256_of

    path, variant = files["weights"], entry.settings["variant"]
    onnx_path = cache_dir() / "onnx" / f"simswap_{variant}_{sha256_of(path)[:16]}.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_generator(path, variant), str(onnx_path))
    return str(onnx_path)


def build_onnxruntime(entry, files: dict, *, placement: Placement = HOST) -> Engine:
    """ONNX Runtime on the host, whatever the placement."""
    from ..onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(cached_onnx(entry, files))


def build_tensorrt(entry, files: dict, *, placement: Placement = HOST) -> Engine:
    from ..tensorrt_engine import MAX_BATCH, TensorRTEngine

    size = entry.settings["size"]
    return TensorRTEngine.from_onnx(cached_onnx(entry, files), entry, shapes={
        "image": ((1, 3, size, size), (16, 3, size, size), (MAX_BATCH, 3, size, size)),
        "latent": ((1, 512), (16, 512), (MAX_BATCH, 512)),
    }, placement=placement)
