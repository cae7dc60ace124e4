"""Paste-back of generated crops as SimSwap's official inference does it, one ROI per face.

Official (`util/reverse2original.py`, `reverse2wholeimage`), per face: a white crop-sized mask
is warped into the frame, values above 20 (of 255) are set to 255, it is eroded with a 40×40
kernel and feathered with a 41×41 Gaussian (σ 6.5), *in frame pixels, whatever the face size*;
the generated crop (float, [0, 1]) is warped the same way and ×255; the frame is blended in
float64, face after face, and truncated to uint8 at the end. Matching that matters: a mask
that scales with the crop leaves a wider ring of the original face on close-ups (0.59× the
official core on a 672 px face) and is 3.5–10 levels off inside the faces.

Why ROI-only gives the official numbers: the warped mask is zero outside the crop's footprint
(the crop square mapped into the frame), so the eroded mask is too, and the Gaussian reaches
20 px further. Everything is computed on the footprint's bounding box plus `MARGIN` (> 20 + 1
px); inside it the erosion never needs a pixel beyond it, and where the blur reflects at an
ROI edge that is not the frame's edge it reflects zeros, which is what the full frame holds
there. At the frame's own edges the ROI edge *is* the frame edge, so OpenCV's borders (erode:
ignore outside; blur: reflect-101) act exactly as on the full frame, and the crop and masks are
sampled at the positions a full-frame warpAffine would use (`sample_positions`): on the golden
frames this host path is bit-exact.

Small faces: below about 80 px the fixed 40 px erosion eats the official mask, and the swap
would leave the original face showing through (face features at alpha < 1, or untouched). Where
`official_covers_face` says the official mask does not reach 0.99 over the whole inner face
(the hull of the template's eyes, nose and mouth), the mask of the previous releases is used
instead: erosion and feather proportional to the crop (the official proportions on a 224 crop:
20/224 per side, σ 6.5/224), warped into the ROI. The rule: docs/swap.md; its check against the official mask: tests/test_alignment_paste_back.py.

Overlapping faces: official blends every face in float64 and truncates once; here each face is
truncated when it is pasted, so where two faces' masks overlap a value can be up to 1 level lower.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

from pipeline.core.alignment import FRONTAL, templates

# The official mask, in frame pixels (reverse2original.py).
MASK_THRESHOLD = 20.0  # of 255: warped mask values above it become 255
ERODE = 40  # cv2.erode(np.ones((40, 40))): anchor at 20, so the window is x−20 … x+19
FEATHER = 41  # cv2.GaussianBlur(ksize=(41, 41), sigma=0)
FEATHER_SIGMA = 0.3 * ((FEATHER - 1) * 0.5 - 1) + 0.8  # = 6.5, what OpenCV derives from ksize
MARGIN = ERODE // 2 + FEATHER // 2 + 2  # ROI padding around the footprint (see the module docstring)
FULL = 0.99  # "the face is swapped": the official alpha reaches this over the inner face
_Z_FULL = 2.3263  # a blurred straight edge reaches FULL at 2.3263 σ inside it (Φ⁻¹(0.99))

# The small-face mask: proportional to the crop.
ERODE_FRACTION = 20.0 / 224.0  # per side
FEATHER_SIGMA_FRACTION = 6.5 / 224.0


@lru_cache(maxsize=4)
def soft_mask(size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the small-face mask, 1 in the core, feathered to 0
    before the crop edge; erosion and feather scale with the crop, so it never vanishes."""
    mask = np.zeros((size, size), np.float32)
    e = int(round(size * ERODE_FRACTION))
    mask[e : size - e, e : size - e] = 1.0
    sigma = max(0.5, size * FEATHER_SIGMA_FRACTION)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask[mask < 1e-3] = 0.0
    mask[mask > 1.0 - 1e-3] = 1.0  # the core is fully the generated face, not 99.99% of it
    return mask


@lru_cache(maxsize=4)
def _inner_face_inset(size: int) -> float:
    """Crop pixels between the crop's edges and the nearest eye, nose or mouth point of the
    frontal template (224) or the FFHQ one (512): the mouth corners, 50.0 and 140.6 px from the
    bottom edge. (The extreme-profile 224 templates, not swapped by default, are 5 px tighter.)"""
    t = templates(size)[FRONTAL if size == 224 else 0]
    return float(min(t.min(), (size - t).min()))


def official_covers_face(matrix: np.ndarray, size: int) -> bool:
    """True when SimSwap's fixed-pixel mask reaches `FULL` over the whole inner face of this crop.

    Why a rule and not a look at the mask: both data paths (OpenCV, torch) decide from the same
    float64 matrix, so they always pick the same mask. Along each crop edge the official mask
    is a straight edge eroded by the 40×40 box (20·(|cos θ| + |sin θ|) frame px for a crop
    rotated by θ) and blurred, so it reaches FULL a further 2.33 σ in. In crop pixels (`k` of them per frame pixel) that reach must stay within the
    distance from the crop's edges to the nearest template point.
    """
    a = np.asarray(matrix, np.float64)[:, :2]
    k = float(np.sqrt(abs(np.linalg.det(a))))  # crop pixels per frame pixel
    if not np.isfinite(k) or k <= 0:
        return False
    c, s = a[0, 0] / k, a[1, 0] / k
    reach = (ERODE / 2 * (abs(c) + abs(s)) + _Z_FULL * FEATHER_SIGMA) * k
    return reach <= _inner_face_inset(size)


def footprint(matrix: np.ndarray, size: int) -> np.ndarray:
    """(4, 2) frame points of the crop's corners, extended by the one crop pixel a bilinear tap
    can still reach: where the warped mask (and crop) can be nonzero."""
    corners = np.array([[-1, -1, 1], [size, -1, 1], [-1, size, 1], [size, size, 1]], np.float64)
    return corners @ official_inverse(matrix).T


def paste_roi(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The frame ROI (x0, y0, x1, y1) a size×size crop's paste can touch through the frame→crop
    `matrix`: the footprint's bounding box plus `MARGIN`, clipped to the frame; None where it misses."""
    c = footprint(matrix, size)
    h, w = shape
    x0, y0 = max(0, int(np.floor(c[:, 0].min())) - MARGIN), max(0, int(np.floor(c[:, 1].min())) - MARGIN)
    x1, y1 = min(w, int(np.ceil(c[:, 0].max())) + MARGIN + 1), min(h, int(np.ceil(c[:, 1].max())) + MARGIN + 1)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def official_inverse(matrix: np.ndarray) -> np.ndarray:
    """Crop→frame 2×3 matrix computed as `reverse2wholeimage` does (explicit 2×2 formula)."""
    m = np.asarray(matrix, np.float64)
    rev = np.zeros((2, 3), np.float64)
    div1 = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    rev[0, 0] = m[1, 1] / div1
    rev[0, 1] = -m[0, 1] / div1
    rev[0, 2] = -(m[0, 2] * m[1, 1] - m[0, 1] * m[1, 2]) / div1
    div2 = m[0, 1] * m[1, 0] - m[0, 0] * m[1, 1]
    rev[1, 0] = m[1, 0] / div2
    rev[1, 1] = -m[0, 0] / div2
    rev[1, 2] = -(m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) / div2
    return rev


_AB_SCALE = 1 << 10  # cv2.warpAffine's fixed point (AB_BITS)
_TAB = 32  # … and its sub-pixel steps (INTER_TAB_SIZE)


def sample_positions(matrix: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, 2) float32 crop positions of the ROI's pixels, on OpenCV's 1/32 px grid, exactly as
    `cv2.warpAffine(crop, mat_rev, (W, H))` computes them for the *whole frame*.

    Why: warpAffine rounds `M·x` to 1/1024 px from the absolute pixel coordinates, then to 1/32;
    an ROI-sized warp rounds from ROI coordinates and lands on the other side of a 1/32 step now
    and then (up to 3 levels on a sharp edge). With these positions `cv2.remap` reads exactly the
    official taps and weights, so the host paste is bit-exact on the golden frames.
    """
    x0, y0, x1, y1 = roi
    m = cv2.invertAffineTransform(official_inverse(matrix))  # what warpAffine inverts mat_rev into
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    half = _AB_SCALE // _TAB // 2
    shift = int(np.log2(_AB_SCALE // _TAB))
    px = (np.rint((m[0, 1] * ys + m[0, 2]) * _AB_SCALE).astype(np.int64)[:, None] + half
          + np.rint(m[0, 0] * xs * _AB_SCALE).astype(np.int64)[None, :]) >> shift
    py = (np.rint((m[1, 1] * ys + m[1, 2]) * _AB_SCALE).astype(np.int64)[:, None] + half
          + np.rint(m[1, 0] * xs * _AB_SCALE).astype(np.int64)[None, :]) >> shift
    return np.stack([px, py], axis=-1).astype(np.float32) / np.float32(_TAB)


def _remap(src: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return cv2.remap(src, positions, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def roi_alpha(matrix: np.ndarray, size: int, roi: tuple[int, int, int, int], positions: np.ndarray | None = None) -> np.ndarray:
    """(h, w) float64 paste mask of one face on its ROI: official, or the small-face mask."""
    positions = sample_positions(matrix, roi) if positions is None else positions
    if not official_covers_face(matrix, size):
        return _remap(soft_mask(size), positions).astype(np.float64)
    white = _remap(_white(size), positions)
    white[white > MASK_THRESHOLD] = 255.0
    eroded = cv2.erode(white, _ERODE_KERNEL)
    return cv2.GaussianBlur(eroded, (FEATHER, FEATHER), 0) / 255.0


_ERODE_KERNEL = np.ones((ERODE, ERODE), np.uint8)


@lru_cache(maxsize=4)
def _white(size: int) -> np.ndarray:
    return np.full((size, size), 255.0, np.float64)


def paste_back(
    image: np.ndarray,
    crop: np.ndarray,
    matrix: np.ndarray,
    *,
    noise: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> tuple[int, int, int, int] | None:
    """Blends `crop` (S×S×3, float in [0, 1] as the generator returns it, or uint8) back into
    `image` (uint8, same channel order) in place; returns the ROI touched (x0, y0, x1, y1).

    `noise(roi, alpha)`, when given, runs on the blended ROI (a view into `image`) with the
    paste mask, so it can perturb exactly the pasted pixels (pipeline.anonymize.noise_defense).
    """
    size = crop.shape[0]
    roi_box = paste_roi(matrix, size, image.shape[:2])
    if roi_box is None:
        return None
    x0, y0, x1, y1 = roi_box
    if crop.dtype == np.uint8:
        crop = crop.astype(np.float32) / np.float32(255.0)
    positions = sample_positions(matrix, roi_box)
    warped = _remap(np.ascontiguousarray(crop, np.float32), positions)
    alpha = roi_alpha(matrix, size, roi_box, positions)[..., None]
    roi = image[y0:y1, x0:x1]
    blended = alpha * (warped.astype(np.float64) * 255.0) + (1.0 - alpha) * roi
    roi[...] = np.clip(blended, 0.0, 255.0).astype(np.uint8)  # truncation, as official
    if noise is not None:
        noise(roi, alpha[..., 0].astype(np.float32))
    return x0, y0, x1, y1
