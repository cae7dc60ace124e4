"""Model runtimes behind one interface (`Engine`), the model table (`MODELS`) and its loader (`load`)."""

from .base import Engine, TensorSpec
from .models import MODELS, ModelEntry, get_model
from .registry import load

__all__ = ["Engine", "TensorSpec", "MODELS", "ModelEntry", "get_model", "load"]
