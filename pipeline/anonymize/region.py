"""The covered region of a face and the cover effect's strength, shared by both data paths.

The host path (pipeline.anonymize.cover: OpenCV on NumPy images) and the device path
(pipeline.anonymize.torch_faces: torch on device tensors) both draw a face's feathered ellipse
from `face_ellipse` and shrink its ROI by `small_size`; this module sits below both, so
neither imports the other for them (NumPy only: the host path never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The covered ellipse's size over the face box, and its soft edge's width: the defaults of
# every cover (RunConfig.region_scale, FaceCover and torch_faces.cover_faces take them from here).
REGION_SCALE = 1.3
REGION_FEATHER = 0.25


@dataclass(frozen=True)
class Ellipse:
    """The covered ellipse of one face and its integer ROI; both data paths draw alpha from this."""

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


def small_size(mode: str, h: int, w: int, face_w: float) -> tuple[int, int]:
    """(h, w) an h×w ROI is shrunk to by blur or pixelate; both data paths take the effect's
    strength from this one place.

    blur: the face spans ~8 px, so its strength follows the face size (identity gone at any
    resolution) at a cost independent of it. pixelate: ~8 blocks across the face.
    """
    if mode == "blur":
        f = min(1.0, 8.0 / max(face_w, 1.0))
        return max(1, round(h * f)), max(1, round(w * f))
    block = max(2, int(round(face_w / 8)))
    return max(1, h // block), max(1, w // block)


# A cover must visibly remove the face, in the dark too: on a dim, low-contrast face a blur
# changes so little that a viewer (and the audit's SSIM) sees the same face (issue 31: faces
# the audit called unchanged). Where the cover left the inner half of the box (INNER) less
# than WEAK_MEAN grey levels away on average AND kept more than WEAK_DETAIL of its detail, the
# next stronger effect is used.
INNER = 0.5
WEAK_MEAN = 3.0
WEAK_DETAIL = 0.7
STRONGER = {"blur": ("pixelate", "mask"), "pixelate": ("mask",), "mask": ()}
_GREY = (0.299, 0.587, 0.114)
_C2 = (0.03 * 255) ** 2  # SSIM's contrast constant: variation under a few grey levels reads as the same


def inner_box(box: np.ndarray, shape: tuple[int, int], fraction: float, origin: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int] | None:
    """The centre `fraction` of `box` (each side), as integer (x0, y0, x1, y1) in an image of
    `shape` whose top-left is `origin` in the box's pixels, clipped to it; None when under 2×2
    px. The cover's weak check reads the inner half of its ROI, the audit's change score
    (pipeline.audit.leaks.core_box) the inner 70% of the frame's face."""
    h, w = shape
    cx, cy = (box[0] + box[2]) / 2 - origin[0], (box[1] + box[3]) / 2 - origin[1]
    hw, hh = (box[2] - box[0]) * fraction / 2, (box[3] - box[1]) * fraction / 2
    x0, y0 = max(0, int(round(cx - hw))), max(0, int(round(cy - hh)))
    x1, y1 = min(w, int(round(cx + hw))), min(h, int(round(cy + hh)))
    return (x0, y0, x1, y1) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def inner_slices(box: np.ndarray, e: Ellipse) -> tuple[slice, slice] | None:
    """The inner half of `box` in its ellipse ROI's pixels (rows, cols), where every cover is at
    full strength; None when under 2×2 px (too small to judge)."""
    inner = inner_box(box, (e.y1 - e.y0, e.x1 - e.x0), INNER, (e.x0, e.y0))
    return None if inner is None else (slice(inner[1], inner[3]), slice(inner[0], inner[2]))


def weak_cover(before, after) -> bool:
    """Did the cover leave this (h, w, 3) float inner face as it was? Written once for both data
    paths: NumPy arrays on the host, torch tensors on a device (only operators both share).

    Detail kept is SSIM's contrast-structure term of the grey images, with its constant: a
    blur of a face whose detail is a few grey levels keeps "all" of it, as a viewer cannot
    tell the difference, while a blurred face of ordinary contrast keeps about half or less."""
    a = before[..., 0] * _GREY[0] + before[..., 1] * _GREY[1] + before[..., 2] * _GREY[2]
    b = after[..., 0] * _GREY[0] + after[..., 1] * _GREY[1] + after[..., 2] * _GREY[2]
    if float(abs(a - b).mean()) >= WEAK_MEAN:
        return False
    da, db = a - a.mean(), b - b.mean()
    kept = (2 * float((da * db).mean()) + _C2) / (float((da * da).mean()) + float((db * db).mean()) + _C2)
    return kept > WEAK_DETAIL
