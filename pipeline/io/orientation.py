"""Stored pixels ↔ the picture a viewer sees, for clips with a display matrix (phones).

A portrait phone clip is stored sideways with a display matrix that players apply; a
detector run on the stored pixels sees every face lying on its side and misses most (0 of 123
on the phone clip that showed it). So the
reader turns each frame upright (`to_display`) before any stage looks at it, and the writer
turns it back (`to_stored`) and writes the same matrix, so the output is stored and displayed
exactly as the input was.

Convention, checked against FFmpeg's own autorotation (what ffplay/VLC/browsers show):
PyAV's `VideoFrame.rotation` is av_display_rotation_get, degrees counterclockwise, and the
viewer's picture is `np.rot90(stored, rotation / 90)` (np.rot90 turns counterclockwise
too). An iPhone portrait clip ("rotate=90" in old ffprobe, tkhd matrix 0 1 / -1 0) reads -90:
turned a quarter clockwise. Quarter turns are exact (no resampling), so the round trip is
lossless.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def read_rotation(av_frame, source: str) -> int:
    """The frame's display-matrix rotation; warns when it is not a quarter turn.

    Such a matrix (rare) is applied rounded to the nearest quarter turn (`VideoInfo.turns`):
    faces stay within 45° of upright for the detector, instead of being silently left
    sideways.
    """
    rotation = int(av_frame.rotation or 0)
    off = rotation - 90 * round(rotation / 90)
    if abs(off) > 1:  # FFmpeg's CLI treats ±1° as exact too
        log.warning("%s: display matrix rotates by %d°, not a multiple of 90; faces are looked for in the "
                    "picture turned by %d° (the nearest quarter turn)", source, rotation, 90 * round(rotation / 90))
    return rotation


def to_display(image: np.ndarray, turns: int) -> np.ndarray:
    """Stored pixels → the upright picture (contiguous: OpenCV and in-place blur need it)."""
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def to_stored(image: np.ndarray, turns: int) -> np.ndarray:
    """The inverse of `to_display`, for the encoder."""
    return np.ascontiguousarray(np.rot90(image, -turns)) if turns else image
