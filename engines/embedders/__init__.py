"""Face embedders: aligned faces → L2-normalized identity vectors, one interface for all.

`load_embedder(name, path=None)` picks the implementation once; callers only use
`embed(image, landmarks)` and the calibration in `spec` (thresholds differ per embedder).
"""

from .base import EMBEDDERS, EmbedderSpec, FaceEmbedder, load_embedder

__all__ = ["EMBEDDERS", "EmbedderSpec", "FaceEmbedder", "load_embedder"]
