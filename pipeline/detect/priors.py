"""RetinaFace's prior boxes, in NumPy: one definition of their order for the host decoder
(pipeline.detect.retinaface) and the device one (pipeline.detect.torch_detect uploads them)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def anchors(height: int, width: int, strides: tuple, sizes: tuple) -> np.ndarray:
    """Prior boxes (cx, cy, w, h) in pixels, in the order the network emits them."""
    out = []
    for stride, pair in zip(strides, sizes):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centers = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_each = np.repeat(centers, len(pair), axis=0)
        wh = np.tile(np.array([[s, s] for s in pair], np.float32), (ny * nx, 1))
        out.append(np.hstack([for_each, wh]))
    return np.concatenate(out).astype(np.float32)
