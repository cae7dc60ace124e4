"""Stored pixels ↔ the picture a viewer sees, for clips with a display matrix (phones).

A portrait phone clip is stored sideways with a display matrix that players apply; a
detector run on the stored pixels sees every face lying on its side and misses most (0 of 123
on the phone clip that showed it). So the
reader turns each frame upright (`to_display`) before any stage looks at it, and the writer
turns it back (`to_stored`) and writes the same matrix, so the output is stored and displayed
exactly as the input was.

A display matrix can also mirror the picture (front cameras, some editors: hflip, or a
quarter turn and a flip). The rotation alone (PyAV's `VideoFrame.rotation`,
av_display_rotation_get) reads a left-right mirror as a 180° turn, which would show the
detector every face upside down; so the whole matrix is read, and the picture is what
FFmpeg's own autorotation makes of it (fftools' transpose / hflip / vflip choice, what
ffplay, VLC and browsers show): `np.rot90(stored, turns)`, then flipped left-right when
`mirror`. An iPhone portrait clip (tkhd matrix 0 1 / -1 0) reads rotation -90: turned a
quarter clockwise. Quarter turns and flips are exact (no resampling), so the round trip is
lossless, and the writer stores the input's exact matrix again.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def read_orientation(av_frame, source: str) -> tuple[int, bool, tuple[int, ...] | None]:
    """(rotation, mirror, matrix) of the frame's display matrix (`orientation`), and the 9 raw
    numbers to write back (None: no matrix). An angle that is not a quarter turn (rare) is
    rounded to the nearest one, with a warning: faces stay within 45° of upright for the
    detector instead of being silently left sideways."""
    matrix = _display_matrix(av_frame)
    if matrix is None:
        return 0, False, None
    rotation, mirror = orientation(matrix)
    if abs(rotation - 90 * round(rotation / 90)) > 1:  # FFmpeg's CLI treats ±1° as exact too
        log.warning("%s: display matrix rotates by %d°, not a multiple of 90; faces are looked for in the "
                    "picture turned by %d° (the nearest quarter turn)", source, rotation, 90 * round(rotation / 90))
    return rotation, mirror, matrix


def orientation(matrix) -> tuple[int, bool]:
    """(rotation, mirror): the picture FFmpeg's autorotation makes of stored pixels with this
    display matrix is `np.rot90(stored, rotation / 90)`, then flipped left-right if `mirror`.

    FFmpeg's choice, case by case (theta = −av_display_rotation_get, in [0, 360)):
    90: a transpose when m[3] > 0, else a clockwise turn; 270: an anti-transpose when
    m[3] < 0, else a counterclockwise turn; 180: hflip when m[0] < 0, vflip when m[4] < 0
    (both: a half turn); 0: vflip when m[4] < 0. A transpose is a clockwise turn then a
    mirror, an anti-transpose a counterclockwise one then a mirror, a vflip a half turn then a
    mirror. Any other angle is returned as it is, unmirrored.
    """
    m = [float(v) for v in matrix]
    rotation = _rotation_get(m)
    theta = (-rotation) % 360
    if abs(theta - 90) < 1:
        return -90, m[3] > 0
    if abs(theta - 270) < 1:
        return 90, m[3] < 0
    if abs(theta - 180) < 1:
        hflip, vflip = m[0] < 0, m[4] < 0
        return (180, False) if hflip and vflip else ((180, True) if vflip else (0, hflip))
    if theta < 1 or theta > 359:
        return (180, True) if m[4] < 0 else (0, False)
    return int(round(rotation)), False


def display_matrix(rotation: float, hflip: bool = False) -> tuple[int, ...]:
    """FFmpeg's av_display_rotation_set(rotation), then av_display_matrix_flip(hflip): what
    `ffmpeg -display_rotation R -display_hflip` writes (16.16 fixed point, w in 2.30)."""
    a = np.deg2rad(rotation)
    c, s = np.cos(a), np.sin(a)
    m = [round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30]
    if hflip:
        m[0], m[3], m[6] = -m[0], -m[3], -m[6]
    return tuple(int(v) for v in m)


def _rotation_get(m) -> float:
    """av_display_rotation_get: degrees counterclockwise (PyAV's `VideoFrame.rotation`)."""
    sx, sy = np.hypot(m[0], m[3]), np.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return 0.0
    return float(-np.degrees(np.arctan2(m[1] / sy, m[0] / sx)))


def _display_matrix(av_frame) -> tuple[int, ...] | None:
    for sd in getattr(av_frame, "side_data", ()) or ():
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            return tuple(int(v) for v in np.frombuffer(bytes(sd), "<i4")[:9])
    return None


def to_display(image: np.ndarray, turns: int, mirror: bool = False) -> np.ndarray:
    """Stored pixels → the upright picture (contiguous: OpenCV and in-place blur need it)."""
    if turns:
        image = np.rot90(image, turns)
    if mirror:
        image = image[:, ::-1]
    return np.ascontiguousarray(image) if turns or mirror else image


def to_stored(image: np.ndarray, turns: int, mirror: bool = False) -> np.ndarray:
    """The inverse of `to_display`, for the encoder."""
    if mirror:
        image = image[:, ::-1]
    if turns:
        image = np.rot90(image, -turns)
    return np.ascontiguousarray(image) if turns or mirror else image
