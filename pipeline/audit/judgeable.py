"""Which original faces carry an identity the recognizer can judge (issue 31).

A near-black face (luminance 5–26, a spread of a few grey levels) is matched by dlib to its
own blurred copy at cosine 0.99: both chips are almost empty, so the recognizer answers
"same person" whatever the anonymizer did, and such faces inflated the re-ID rate. A face is
*judgeable* only if the recognizer tells the original from a destroyed copy of itself: the
same frame with the face's region replaced by a heavy blur, embedded at the same landmarks.
Its similarity must be below τ, the audit's own threshold; faces at or above it are left out
of re-ID and ¬ID and reported apart.
"""

from __future__ import annotations

import cv2
import numpy as np

GROW = 1.3  # the destroyed region, as a multiple of the face box (like a cover): the
# recognizer's chip reaches past the box (dlib pads it by 0.25), and sharp hair or jaw left
# around a blurred centre would keep part of the identity in the "destroyed" copy
CELLS = 4  # samples left across the face's region

RULE = (f"a face is judgeable when the recognizer's similarity between the original and a heavy blur of "
        f"its own region ({CELLS} samples across) is below τ; the others are too dark or flat to carry an identity "
        "and are left out of re-ID and ¬ID")


def destroyed_copy(image: np.ndarray, boxes: np.ndarray, grow: float = GROW) -> np.ndarray:
    """`image` with each face box (grown, clipped to the frame) replaced by a heavy blur of itself.

    Downscaled with INTER_AREA to CELLS samples across, then back up with INTER_LINEAR: the
    blur's strength follows the face's size (a Gaussian would need σ and a kernel per size, and
    costs more on large faces), at most CELLS × CELLS averages of the face survive, which holds
    no identity, and the linear way up leaves no block edges for the recognizer to read as
    features (a mosaic would).
    """
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = (box[2] - box[0]) * grow / 2, (box[3] - box[1]) * grow / 2
        x0, y0 = max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh)))
        x1, y1 = min(w, int(np.ceil(cx + hw))), min(h, int(np.ceil(cy + hh)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        roi = out[y0:y1, x0:x1]
        cells = (min(CELLS, x1 - x0), min(CELLS, y1 - y0))
        small = cv2.resize(roi, cells, interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


def is_judgeable(destroyed_similarity: float, tau: float) -> bool:
    """The recognizer tells the face from its destroyed copy at the audit's threshold."""
    return destroyed_similarity < tau
