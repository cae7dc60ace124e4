"""RetinaFace MobileNet-0.25 as our own torch module, loaded from the ONNX export's weights.

The ONNX Runtime backend runs the exported graph itself; this one runs the same numbers in
torch, so the detector can live on the device next to the frames (the GPU data path).
"""

from .model import OUTPUT_ROLES, RetinaFaceMNet025
from .weights import load_retinaface

__all__ = ["OUTPUT_ROLES", "RetinaFaceMNet025", "load_retinaface"]
