"""SimSwap model definitions (our own code), laid out to load the official checkpoints.

The official weights are CC BY-NC-SA 4.0: non-commercial use only.
"""

from .checkpoint import check_state_dict, export_onnx, load_generator
from .generator import GENERATOR_VARIANTS, SimSwapGenerator

__all__ = ["GENERATOR_VARIANTS", "SimSwapGenerator", "check_state_dict", "export_onnx", "load_generator"]
