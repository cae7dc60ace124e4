"""Model runtimes behind one interface (`Engine`) and the per-model settings (`MODELS`)."""

from .base import Engine, TensorSpec
from .models import MODELS, ModelSpec, get_model
from .registry import BACKENDS, load_engine

__all__ = ["Engine", "TensorSpec", "MODELS", "ModelSpec", "get_model", "BACKENDS", "load_engine"]
