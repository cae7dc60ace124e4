"""OpenCV's INTER_AREA in torch, on the frames' device.

Both device stages resize the way the host path's OpenCV does, so the two paths agree: the
detector's working-size image (pipeline.detect.torch_detect) and the blur / pixelate
shrink of a face (pipeline.anonymize.torch_faces).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _area_taps(n: int, m: int, shrink: bool) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA weights along one axis, n → m pixels: (m, K) source indices and weights.

    Shrinking (both axes ≥ 1×), an output pixel is the mean of the source cells its footprint
    [dx·s, dx·s + s) covers, partial cells by their covered length (slivers under 1e-3 are
    dropped, as OpenCV does). Otherwise OpenCV switches to a linear blend whose weight jumps
    at pixel edges: fx = (dx+1) − (sx+1)/s, its fraction, 0 when ≤ 0.
    """
    scale = 1.0 / (m / n)  # as OpenCV derives it, to the last bit
    dx = np.arange(m, dtype=np.float64)
    if shrink:
        start = dx * scale
        cell = np.minimum(scale, n - start)[:, None]
        sx = np.floor(start)[:, None] + np.arange(math.ceil(scale) + 1)
        cover = np.minimum(sx + 1, start[:, None] + scale) - np.maximum(sx, start[:, None])
        weight = np.where((cover > 1e-3) & (sx < n), cover, 0.0) / cell
    else:
        sx = np.floor(dx * scale)
        fx = (dx + 1) - (sx + 1) * (m / n)
        fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
        sx, weight = np.stack([sx, sx + 1], 1), np.stack([1 - fx, fx], 1)
    return np.minimum(sx, n - 1).astype(np.int64), weight.astype(np.float32)


@lru_cache(maxsize=32)
def _axis_taps(n: int, m: int, shrink: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    idx, weight = _area_taps(n, m, shrink)
    return torch.from_numpy(idx).to(device), torch.from_numpy(weight).to(device)


def resize_area(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float holding uint8 values → (N, C, h, w): the uint8 image
    `cv2.resize(..., INTER_AREA)` returns, as floats.

    Why not F.interpolate: none of its modes is INTER_AREA (its "area" is an adaptive average
    pool with whole-pixel windows; bilinear, with or without antialias, weighs differently),
    and each of them moved boxes by 0.5-3 px against the host path on our test frames. This
    separable gather of a few taps per pixel (columns, then rows, as OpenCV does) rounds as
    OpenCV does: half to even on its float path (shrinking), half up on its integer ones
    (exactly 2×, and enlarging). Shrinking gives the same pixels; enlarging, OpenCV's
    fixed-point arithmetic leaves about 2% of them 1 grey level apart.
    """
    (h, w), (H, W) = size, x.shape[-2:]
    shrink = H >= h and W >= w
    idx, weight = _axis_taps(W, w, shrink, x.device)
    x = sum(x[..., idx[:, k]] * weight[:, k] for k in range(idx.shape[1]))
    idx, weight = _axis_taps(H, h, shrink, x.device)
    x = sum(x[..., idx[:, k], :] * weight[:, k, None] for k in range(idx.shape[1]))
    x = x.round_() if shrink and (H, W) != (2 * h, 2 * w) else x.add_(0.5).floor_()
    return x.clamp_(0, 255)
