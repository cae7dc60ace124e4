"""dlib's CNN face detector (MMOD), the audit's detector of last resort for leaks.

Why it is here: the audit's leak check needs a detector the pipeline does not use, or a face
the pipeline misses is missed by its judge too. RetinaFace and CenterFace can both run in the
pipeline; dlib's MMOD network (a small CNN trained with max-margin object detection, weights
CC0 in `face_recognition_models`) is a third, unrelated one. We run dlib itself, as for the
dlib embedder: its DNN file format is undocumented and the reference implementation needs no
parity proof.

It is slow (dlib-bin has no BLAS), sees about half of CenterFace's faces and none of the dark
or edge-cut ones; upscaling costs four times as much for almost nothing, and the threshold
barely matters (benchmarks/results/audit_detector.md). Hence its settings: the working size
follows RetinaFace's rule (long side clamped to [640, 1280]), no extra dlib upsampling,
dlib's own threshold 0, and the audit samples every `audit_every`-th frame with it (a leak is
a face left visible over many frames).

dlib gives no landmarks. `Detections` carries five points per face, so they are placed at
fixed positions inside the box (`LANDMARKS_IN_BOX`, the ArcFace template over the square
box): nothing downstream of the audit's leak check reads them, and they are not measured.
dlib's network object is not thread-safe, so calls are serialized with a lock.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from pipeline.core.records import Detections

from .placement import HOST, Placement

# The ArcFace 112x112 template as fractions of a square box: right eye, left eye, nose, mouth
# right, mouth left (the order of every detector's landmarks here). An estimate, not a measurement.
LANDMARKS_IN_BOX = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]], np.float32) / 112.0


def build(entry, files: dict, *, placement: Placement = HOST, threshold: float | None = None,
          detect_size: int | None = None) -> "DlibMMOD":
    """The model table's builder for `dlib-mmod`: dlib's CNN on the mmod weights file, on the
    host whatever the placement."""
    return DlibMMOD(entry, files["weights"], threshold=threshold, detect_size=detect_size)


class DlibMMOD:
    """`detect(images) -> list[Detections]` in full-resolution pixels, one per RGB image."""

    def __init__(self, entry, weights: str, *, threshold: float | None = None, detect_size: int | None = None):
        from engines.extras import require

        require("identity", "the dlib face detector", ("dlib",))
        import dlib
        s = entry.settings
        self.name = entry.name
        self.threshold = s["threshold"] if threshold is None else float(threshold)
        self.detect_size = detect_size
        self.min_size, self.max_size, self.upsample = s["min_size"], s["max_size"], s["upsample"]
        self._net = dlib.cnn_face_detection_model_v1(weights)
        self._lock = threading.Lock()

    def long_side(self, height: int, width: int) -> int:
        if self.detect_size is not None:
            return self.detect_size
        return min(self.max_size, max(self.min_size, max(height, width)))

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        return [self._detect(img) for img in images]

    def _detect(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        scale = self.long_side(h, w) / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work = image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        with self._lock:
            found = self._net(np.ascontiguousarray(work), self.upsample)
        rows = [(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
                for d in found if d.confidence > self.threshold]
        if not rows:
            return Detections.empty()
        a = np.array(rows, np.float32)
        sx, sy = w / size[0], h / size[1]
        boxes = a[:, :4] * np.array([sx, sy, sx, sy], np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        wh = boxes[:, 2:] - boxes[:, :2]
        landmarks = boxes[:, None, :2] + LANDMARKS_IN_BOX[None] * wh[:, None, :]
        return Detections(boxes, a[:, 4].copy(), landmarks.astype(np.float32))
