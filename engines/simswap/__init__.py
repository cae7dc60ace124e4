"""SimSwap model definitions (our own code), laid out to load the official checkpoints.

The official weights are CC BY-NC-SA 4.0: non-commercial use only.
"""

from .arcface import ArcFaceResNet, latent_from_crops
from .checkpoint import check_state_dict, export_onnx, load_generator
from .generator import GENERATOR_VARIANTS, SimSwapGenerator
from .safe_pickle import UnsafeCheckpointError, load_arcface_checkpoint

__all__ = [
    "ArcFaceResNet", "GENERATOR_VARIANTS", "SimSwapGenerator", "UnsafeCheckpointError",
    "check_state_dict", "export_onnx", "latent_from_crops", "load_arcface_checkpoint", "load_generator",
]
