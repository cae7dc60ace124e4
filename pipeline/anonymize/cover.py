"""Fail-closed anonymization of face regions: blur, pixelate or mask.

The region is an ellipse around the face's cover box, scaled up (`region_scale`) so hair
line, ears and chin are inside, at full strength; a feathered band outside it blends into the
background so the edit does not draw a hard outline. Work is done on each face's ROI only,
in float32, never on the full frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.anonymize.face_ops import HostFaceOps
from pipeline.core.records import Face

MODES = ("blur", "pixelate", "mask")
# The covered ellipse's size over the face box, and its soft edge's width: the defaults of
# every cover (RunConfig.region_scale and the device path's cover_faces take them from here).
REGION_SCALE = 1.3
REGION_FEATHER = 0.25


@dataclass(frozen=True)
class Region:
    """Integer ROI (x0, y0, x1, y1) and its alpha (float32, 1 inside the ellipse)."""

    x0: int
    y0: int
    x1: int
    y1: int
    alpha: np.ndarray


@dataclass(frozen=True)
class Ellipse:
    """The anonymized ellipse of one face and its integer ROI; both data paths (OpenCV on
    host images, torch on device tensors: pipeline.anonymize.torch_faces) draw alpha from this."""

    cx: float
    cy: float
    a: float  # semi-axes, pixels
    b: float
    reach: float  # 1 + feather: alpha falls from 1 at r = 1 to 0 at r = reach
    feather: float
    x0: int
    y0: int
    x1: int
    y1: int


def face_ellipse(box: np.ndarray, shape: tuple[int, int], *, scale: float = REGION_SCALE, feather: float = REGION_FEATHER) -> Ellipse | None:
    """None if the feathered ellipse lies outside the frame."""
    h, w = shape
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a = max(1.0, (box[2] - box[0]) * scale / 2)
    b = max(1.0, (box[3] - box[1]) * scale / 2)
    reach = 1.0 + feather
    x0, x1 = max(0, int(np.floor(cx - a * reach))), min(w, int(np.ceil(cx + a * reach)) + 1)
    y0, y1 = max(0, int(np.floor(cy - b * reach))), min(h, int(np.ceil(cy + b * reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return Ellipse(float(cx), float(cy), float(a), float(b), reach, feather, x0, y0, x1, y1)


def face_region(box: np.ndarray, shape: tuple[int, int], *, scale: float = REGION_SCALE, feather: float = REGION_FEATHER) -> Region | None:
    """Alpha mask of the anonymized ellipse for one face; None if it lies outside the frame."""
    e = face_ellipse(box, shape, scale=scale, feather=feather)
    if e is None:
        return None
    xs = (np.arange(e.x0, e.x1, dtype=np.float32) + 0.5 - e.cx) / e.a
    ys = (np.arange(e.y0, e.y1, dtype=np.float32) + 0.5 - e.cy) / e.b
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    alpha = np.clip((e.reach - r) / e.feather, 0.0, 1.0).astype(np.float32)
    return Region(e.x0, e.y0, e.x1, e.y1, alpha)


def small_size(mode: str, h: int, w: int, face_w: float) -> tuple[int, int]:
    """(h, w) an h×w ROI is shrunk to by blur or pixelate; both data paths (here and
    pipeline.anonymize.torch_faces) take the effect's strength from this one place.

    blur: the face spans ~8 px, so its strength follows the face size (identity gone at any
    resolution) at a cost independent of it. pixelate: ~8 blocks across the face.
    """
    if mode == "blur":
        f = min(1.0, 8.0 / max(face_w, 1.0))
        return max(1, round(h * f)), max(1, round(w * f))
    block = max(2, int(round(face_w / 8)))
    return max(1, h // block), max(1, w // block)


def _blur(roi: np.ndarray, face_w: float) -> np.ndarray:
    # Downscale, smooth, upscale.
    sh, sw = small_size("blur", roi.shape[0], roi.shape[1], face_w)
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    return cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR)


def _pixelate(roi: np.ndarray, face_w: float) -> np.ndarray:
    sh, sw = small_size("pixelate", roi.shape[0], roi.shape[1], face_w)
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)


def _mask(roi: np.ndarray, face_w: float) -> np.ndarray:
    return np.zeros_like(roi)


_EFFECTS = {"blur": _blur, "pixelate": _pixelate, "mask": _mask}


class Anonymizer:
    """`apply(image, faces) -> image`: every face is covered, in place.

    `apply_batch` runs its pixel work through `ops` (pipeline.anonymize.face_ops: host OpenCV by
    default, or torch on a device); `apply` and `cover` are always the host path, which
    HostFaceOps calls.
    """

    def __init__(self, mode: str = "blur", *, region_scale: float = REGION_SCALE, feather: float = REGION_FEATHER, ops=None):
        if mode not in _EFFECTS:
            raise ValueError(f"unknown anonymizer mode {mode!r}; valid modes: {', '.join(MODES)}")
        if region_scale < 1.0:
            raise ValueError(f"region_scale must be >= 1.0 so the whole box is covered, got {region_scale}")
        self.mode = mode
        self.region_scale = region_scale
        self.feather = feather
        self._effect = _EFFECTS[mode]
        self.ops = ops or HostFaceOps()

    def apply_batch(self, frames) -> None:
        """Same interface as the swapper: anonymize every face of these TrackedFrames."""
        items = [(fi, face.cover) for fi, tf in enumerate(frames) for face in tf.faces]
        if items:  # a batch with no face has nothing to change: no load, no store
            pixels = self.ops.load([tf.frame for tf in frames])
            self.ops.cover(pixels, items, self)
            self.ops.store(pixels, [tf.frame for tf in frames])
        else:
            self.ops.release([tf.frame for tf in frames])
        for tf in frames:
            for face in tf.faces:
                face.outcome = face.outcome or self.mode

    def apply(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        for face in faces:
            self.cover(image, face.cover)
        return image

    def cover(self, image: np.ndarray, box: np.ndarray) -> None:
        """Covers one face's region (its cover box, scaled up and feathered) in place."""
        region = face_region(box, image.shape[:2], scale=self.region_scale, feather=self.feather)
        if region is None:
            return
        roi = image[region.y0 : region.y1, region.x0 : region.x1]
        effect = self._effect(roi, float(box[2] - box[0]))
        roi[...] = cv2.blendLinear(effect, roi, region.alpha, 1.0 - region.alpha)
