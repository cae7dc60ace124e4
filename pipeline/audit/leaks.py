"""Leaks: faces an independent detector finds in the original that the output still shows.

A face CenterFace finds on an original frame is a leak when no anonymized region claimed
for that frame covers it AND its pixels did not change. Both halves matter: the claim alone
would trust the pipeline about itself, and the pixels alone cannot be read for dark faces
(see `change_score`). A face that is claimed but unchanged is listed apart, as a suspect.

The change is 1 − SSIM of the grey face core (the inner 70% of the box, where every
anonymization is at full strength) resampled to 32×32 so it reads the same at any face size,
with SSIM's absolute constants (data range 255). The default threshold 0.08 sits above every
plain re-encode we measured, so a face that is merely re-encoded is always a leak, at the
price of flagging some blurred faces in the dark, where the encoder has already flattened
the detail (reported as suspects when claimed; reviewed by eye on the contact sheet). The
measurement: benchmarks/results/notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from pipeline.anonymize.region import inner_box
from pipeline.core.records import Detections

CORE = 0.7
PATCH = 32
CHANGE_THRESHOLD = 0.08
COVER_FRACTION = 0.5  # of the CenterFace box inside one claimed cover box


def core_box(box: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    return inner_box(box, shape, CORE)


def change_score(original: np.ndarray, output: np.ndarray, box: np.ndarray) -> float:
    """1 − SSIM of the face core, 0 = untouched (see the module docstring for the scale)."""
    core = core_box(box, original.shape[:2])
    if core is None:
        return 0.0
    x0, y0, x1, y1 = core
    a, b = (cv2.resize(cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), (PATCH, PATCH), interpolation=cv2.INTER_AREA)
            for img in (original, output))
    return float(1.0 - structural_similarity(a, b, data_range=255, win_size=7))


def covered_fraction(box: np.ndarray, covers: np.ndarray) -> float:
    """Largest share of `box` inside any one cover box (0 with no covers)."""
    if not len(covers):
        return 0.0
    iw = np.clip(np.minimum(box[2], covers[:, 2]) - np.maximum(box[0], covers[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], covers[:, 3]) - np.maximum(box[1], covers[:, 1]), 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    return float((iw * ih).max() / area)


@dataclass(frozen=True)
class LeakCheck:
    frame: int
    time: float
    box: np.ndarray
    score: float
    change: float
    covered: bool
    threshold: float = CHANGE_THRESHOLD

    @property
    def unchanged(self) -> bool:
        return self.change < self.threshold

    @property
    def leak(self) -> bool:
        return self.unchanged and not self.covered

    @property
    def suspect(self) -> bool:
        return self.unchanged and self.covered

    def as_dict(self) -> dict:
        return {"frame": self.frame, "time": round(self.time, 3), "box": [round(float(v), 1) for v in self.box],
                "score": round(self.score, 3), "change": round(self.change, 4), "covered": self.covered}


def check_frame(index: int, time: float, original: np.ndarray, output: np.ndarray, found: Detections,
                covers: np.ndarray | None, *, threshold: float = CHANGE_THRESHOLD) -> list[LeakCheck]:
    """One LeakCheck per independently detected face; `covers` None means no claims known."""
    covers = np.zeros((0, 4), np.float32) if covers is None else np.asarray(covers, np.float32).reshape(-1, 4)
    return [
        LeakCheck(index, time, box, float(score), change_score(original, output, box),
                  covered_fraction(box, covers) >= COVER_FRACTION, threshold)
        for box, score in zip(found.boxes, found.scores)
    ]
