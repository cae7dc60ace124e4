"""Fail-closed anonymization of face regions: blur, pixelate or mask.

The region is an ellipse around the face's cover box, scaled up (`region_scale`) so hair
line, ears and chin are inside, at full strength; a feathered band outside it blends into the
background so the edit does not draw a hard outline. Work is done on each face's ROI only,
in float32, never on the full frame. Where the run's effect would leave a dim, flat face as it
was (`region.weak_cover`), that face gets the next stronger one (`region.STRONGER`), and
its record says so (its outcome, and `Face.data["stronger_cover"]` counted in the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.anonymize.face_ops import HostFaceOps
from pipeline.anonymize.region import REGION_FEATHER, REGION_SCALE, STRONGER, face_ellipse, inner_slices, small_size, weak_cover

MODES = ("blur", "pixelate", "mask")


@dataclass(frozen=True)
class Region:
    """Integer ROI (x0, y0, x1, y1) and its alpha (float32, 1 inside the ellipse)."""

    x0: int
    y0: int
    x1: int
    y1: int
    alpha: np.ndarray
    inner: tuple[slice, slice] | None = None  # the box's inner half in the ROI (region.inner_slices)


def face_region(box: np.ndarray, shape: tuple[int, int], *, scale: float = REGION_SCALE, feather: float = REGION_FEATHER) -> Region | None:
    """Alpha mask of the anonymized ellipse for one face; None if it lies outside the frame."""
    e = face_ellipse(box, shape, scale=scale, feather=feather)
    if e is None:
        return None
    xs = (np.arange(e.x0, e.x1, dtype=np.float32) + 0.5 - e.cx) / e.a
    ys = (np.arange(e.y0, e.y1, dtype=np.float32) + 0.5 - e.cy) / e.b
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    alpha = np.clip((e.reach - r) / e.feather, 0.0, 1.0).astype(np.float32)
    return Region(e.x0, e.y0, e.x1, e.y1, alpha, inner_slices(box, e))


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


class FaceCover:
    """Covers every face of a batch (blur, pixelate or mask), in place: the cover stage of
    blur / pixelate / mask runs, and the swap's fallback for the faces it does not swap.

    `apply_batch` runs its pixel work through `ops` (pipeline.anonymize.face_ops: host OpenCV by
    default, or torch on a device); `cover` is the host path for one face, which HostFaceOps calls.
    """

    def __init__(self, mode: str = "blur", *, region_scale: float = REGION_SCALE, feather: float = REGION_FEATHER, ops=None):
        if mode not in _EFFECTS:
            raise ValueError(f"unknown cover mode {mode!r}; valid modes: {', '.join(MODES)}")
        if region_scale < 1.0:
            raise ValueError(f"region_scale must be >= 1.0 so the whole box is covered, got {region_scale}")
        self.mode = mode
        self.region_scale = region_scale
        self.feather = feather
        self._effect = _EFFECTS[mode]
        self.ops = ops or HostFaceOps()

    def apply_batch(self, frames) -> None:
        """Same interface as the swapper: anonymize every face of these TrackedFrames."""
        faces = [(fi, face) for fi, tf in enumerate(frames) for face in tf.faces]
        with self.ops.editing([tf.frame for tf in frames], needed=bool(faces)) as pixels:  # no face: no load, no store
            if faces:
                self.cover_faces(pixels, faces)
        for tf in frames:
            for face in tf.faces:
                face.outcome = face.outcome or self.mode

    def cover_faces(self, pixels, faces: list, ops=None) -> None:
        """Covers each (frame index, Face) through `ops` (the swapper passes its own: the
        pixels are where it loaded them). A face that needed a stronger effect than the run's
        says so: its outcome names the effect used ("mask", or "mask:<reason>" for a swap's
        fallback) and `data["stronger_cover"]` is set (the report counts it)."""
        used = (ops or self.ops).cover(pixels, [(fi, face.cover) for fi, face in faces], self)
        for (_, face), mode in zip(faces, used):
            if mode != self.mode:
                face.data["stronger_cover"] = mode
                reason = (face.outcome or "").partition(":")[2]
                face.outcome = f"{mode}:{reason}" if reason else mode

    def cover(self, image: np.ndarray, box: np.ndarray, original: np.ndarray | None = None) -> str:
        """Covers one face's region (its cover box, scaled up and feathered) in place; returns
        the effect used: the run's, or a stronger one where it was weak (`region.weak_cover`).
        `original`: the frame before this batch's covers, when an earlier face's cover may
        overlap this one (a face already covered is judged against what it was, not re-covered)."""
        region = face_region(box, image.shape[:2], scale=self.region_scale, feather=self.feather)
        if region is None:
            return self.mode
        roi = image[region.y0 : region.y1, region.x0 : region.x1]
        mode = self.mode
        effect = self._effect(roi, float(box[2] - box[0]))
        if region.inner is not None:
            was = (image if original is None else original)[region.y0 : region.y1, region.x0 : region.x1][region.inner].astype(np.float32)
            for stronger in STRONGER[self.mode]:
                if not weak_cover(was, effect[region.inner].astype(np.float32)):
                    break
                mode, effect = stronger, _EFFECTS[stronger](roi, float(box[2] - box[0]))
        roi[...] = cv2.blendLinear(effect, roi, region.alpha, 1.0 - region.alpha)
        return mode
