"""Face embedders: aligned faces → L2-normalized identity vectors, one interface for all.

`load_embedder(name, path=None)` builds one through the model table (`engines.models`);
callers only use `embed(image, landmarks)` and `calibration(name)` (thresholds differ per
embedder).
"""

from .base import FaceEmbedder, attribute_settings, calibration, embedder_entry, embedder_names, load_embedder

__all__ = ["FaceEmbedder", "attribute_settings", "calibration", "embedder_entry", "embedder_names", "load_embedder"]
