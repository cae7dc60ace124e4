"""Face detection: frames → `Detections` (boxes, scores, 5 landmarks) in frame pixels."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pipeline.core.records import Detections


class Detector(Protocol):
    """What the run asks of "the detector": one network (`RetinaFaceDetector`,
    `CenterFaceDetector`) or several with the recall passes (`MultiPassDetector`)."""

    threshold: float
    detect_size: int | None

    def long_side(self, height: int, width: int) -> int: ...

    def detect(self, images: list[np.ndarray]) -> list[Detections]: ...
