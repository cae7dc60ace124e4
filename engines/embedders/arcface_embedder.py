"""ArcFace-family embedders (insightface ArcFace R50, our PerFace) from an ONNX file.

Both take insightface's convention: a 112×112 crop aligned to `ARCFACE_TEMPLATE_112`, RGB,
(x − 127.5) / 127.5, NCHW. The ONNX runs through our `Engine` interface (ONNX Runtime); the
input name is read from the model, so insightface's files ("input.1") and ours ("input") both load.
"""

from __future__ import annotations

import numpy as np

from engines.onnxruntime_engine import OnnxRuntimeEngine
from pipeline.core.alignment import ARCFACE_TEMPLATE_112, warp_to_template

from .base import FaceEmbedder, normalize


def build(entry, files: dict) -> "ArcFaceEmbedder":
    """The model table's builder for ArcFace-convention embedders (arcface-r50, perface)."""
    return ArcFaceEmbedder(files["weights"], entry)


class ArcFaceEmbedder(FaceEmbedder):
    def __init__(self, path: str, entry):
        self.entry = entry
        s = entry.settings
        self._size, self._mean, self._std = s["size"], s["mean"], s["std"]
        self.engine = OnnxRuntimeEngine(path)
        if len(self.engine.inputs) != 1:
            raise ValueError(f"{path}: an embedder ONNX has one input (N, 3, 112, 112); found {len(self.engine.inputs)}")
        shape = self.engine.inputs[0].shape
        if len(shape) != 4 or tuple(shape[1:]) != (3, self._size, self._size):
            raise ValueError(f"{path}: expected input (N, 3, {self._size}, {self._size}), found {shape}")
        out = self.engine.outputs[0].shape
        if out[-1] != self.dim:
            raise ValueError(f"{path}: expected a {self.dim}-d embedding output for {entry.name}, found {out}")
        self._input = self.engine.inputs[0].name
        self._output = self.engine.outputs[0].name

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crops = warp_to_template(image, landmarks, ARCFACE_TEMPLATE_112, self._size)
        return self.embed_crops(crops)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB crops already on the ArcFace template."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        x = (crops.astype(np.float32).transpose(0, 3, 1, 2) - self._mean) / self._std
        return normalize(self.engine({self._input: np.ascontiguousarray(x)})[self._output])
