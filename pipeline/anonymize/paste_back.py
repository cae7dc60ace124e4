"""Inverse paste-back of generated crops with a soft mask, one ROI per face.

SimSwap's official path warps a white mask to the *whole frame* in float64, erodes it with a
fixed 40-pixel kernel and blurs it, per face: slow, and on a face smaller than ~80 px the
fixed erosion eats the whole mask. Here the soft mask is built once in crop coordinates
(erosion and feather proportional to the crop, the same proportions as the official kernel
on a 224 crop: 20/224 per side, Gaussian σ ≈ 6.5/224) and warped into each face's bounding
ROI only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

from pipeline.core.alignment import inverse

ERODE_FRACTION = 20.0 / 224.0  # per side
FEATHER_SIGMA_FRACTION = 6.5 / 224.0


@lru_cache(maxsize=4)
def soft_mask(size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 in the core, feathered to 0 before the crop edge."""
    mask = np.zeros((size, size), np.float32)
    e = int(round(size * ERODE_FRACTION))
    mask[e : size - e, e : size - e] = 1.0
    sigma = max(0.5, size * FEATHER_SIGMA_FRACTION)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask[mask < 1e-3] = 0.0
    mask[mask > 1.0 - 1e-3] = 1.0  # the core is fully the generated face, not 99.99% of it
    return mask


def paste_roi(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The frame ROI (x0, y0, x1, y1) a size×size crop lands in through the frame→crop `matrix`:
    the warped crop's bounding box, clipped to the frame; None where it misses the frame."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse(matrix).T
    h, w = shape
    x0, y0 = max(0, int(np.floor(corners[:, 0].min()))), max(0, int(np.floor(corners[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 1), min(h, int(np.ceil(corners[:, 1].max())) + 1)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def paste_back(
    image: np.ndarray,
    crop: np.ndarray,
    matrix: np.ndarray,
    *,
    noise: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> tuple[int, int, int, int] | None:
    """Blends `crop` (S×S×3 uint8) back into `image` in place; returns the ROI touched (x0, y0, x1, y1).

    `noise(roi, alpha)`, when given, runs on the blended ROI (a view into `image`) with the
    warped soft mask, so it can perturb exactly the pasted pixels (pipeline.anonymize.noise_defense).
    """
    size = crop.shape[0]
    roi_box = paste_roi(matrix, size, image.shape[:2])
    if roi_box is None:
        return None
    x0, y0, x1, y1 = roi_box
    local = inverse(matrix)
    local[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, local, dsize, flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpAffine(soft_mask(size), local, dsize, flags=cv2.INTER_LINEAR, borderValue=0)
    roi = image[y0:y1, x0:x1]
    roi[...] = cv2.blendLinear(warped, roi, alpha, 1.0 - alpha)
    if noise is not None:
        noise(roi, alpha)
    return x0, y0, x1, y1
