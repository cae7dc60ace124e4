"""Is the anonymized video a copy of this original, and are the boxes this run's?

An audit of an unrelated pair of the same size and length measured nothing and passed
(re-ID 0 %, no leaks). Outside the faces an anonymized copy is the original re-encoded, so
the two pictures agree there up to coding noise; an unrelated video does not. The run's
boxes claim faces where the audit's own detector finds them on the original; another
video's boxes claim faces elsewhere. Both are decided on the first frames, before the long
pass, and a mismatch is an input error unless `--allow-unrelated` says it is meant.
"""

from __future__ import annotations

import cv2
import numpy as np

from trackers.norfair_tracker import grow_box

from pipeline.audit.leaks import COVER_FRACTION, covered_fraction
from pipeline.core.errors import InvalidInputError

OVERRIDE = "--allow-unrelated"
FRAMES = 12  # frames looked at before deciding
WIDTH = 96  # the pictures are compared this wide, blurred: coding noise and small shifts fade
# Medians over 60 frames of the shared clip, faces not even masked: our blur output at crf 35
# differs by 1.6 grey levels and correlates 1.00, at crf 51 (the worst x264 makes) 11.3 and
# 0.88, a dark copy at crf 40 1.3 and 0.91; the clip against itself 3 s later 21.6 and 0.09,
# mirrored 31 and -0.12, two dark clips 5.5 and -0.04 (close in grey, not correlated).
MAX_DIFFERENCE = 16.0
MIN_CORRELATION = 0.5
MIN_CLAIM_MATCH = 0.3  # share of the audit's original faces a run's claims must cover


class Derivation:
    def __init__(self, allow_unrelated: bool = False):
        self.allow = allow_unrelated
        self.differences: list[float] = []
        self.correlations: list[float] = []
        self.faces = self.claimed = 0  # audit faces on the original, and those a claim covers
        self.decided = False

    def add(self, orig: np.ndarray, out: np.ndarray, faces: np.ndarray, covers: np.ndarray | None) -> None:
        """`faces`: the audit's boxes on the original; `covers`: the boxes file's claims (or None)."""
        if self.decided:
            return
        h, w = orig.shape[:2]
        scale = WIDTH / w
        size = (WIDTH, max(1, round(h * scale)))
        a, b = (cv2.GaussianBlur(cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA), (3, 3), 0)
                .astype(np.float32) for x in (orig, out))
        keep = np.ones(a.shape, bool)
        for box in [*faces, *(covers if covers is not None else ())]:
            x0, y0, x1, y1 = grow_box(box, 0.5) * scale
            keep[max(0, int(y0)): int(np.ceil(y1)) + 1, max(0, int(x0)): int(np.ceil(x1)) + 1] = False
        if keep.sum() >= keep.size // 4:  # a frame that is mostly face says nothing about the rest
            da, db = a[keep], b[keep]
            self.differences.append(float(np.abs(da - db).mean()))
            sa, sb = da.std(), db.std()
            self.correlations.append(float(((da - da.mean()) * (db - db.mean())).mean() / (sa * sb)) if sa > 2 and sb > 2 else 1.0)
        if covers is not None:
            self.faces += len(faces)
            # covered as the leak check counts it: half the face inside one claimed cover
            self.claimed += sum(covered_fraction(box, covers) >= COVER_FRACTION for box in faces)
        if len(self.differences) >= FRAMES:
            self.decide()

    def decide(self) -> None:
        """Raises on a mismatch (unless allowed); called after FRAMES frames or at the end."""
        if self.decided:
            return
        self.decided = True
        if self.allow:
            return
        if self.differences:
            diff, corr = float(np.median(self.differences)), float(np.median(self.correlations))
            if diff > MAX_DIFFERENCE or corr < MIN_CORRELATION:
                raise InvalidInputError(
                    f"the anonymized video is not a copy of the original: outside the faces they differ by {diff:.0f} grey "
                    f"levels on average and correlate {corr:.2f} (a copy: at most {MAX_DIFFERENCE:.0f}, at least {MIN_CORRELATION}); "
                    f"pass {OVERRIDE} to audit them anyway")
        if self.faces >= 5 and self.claimed < MIN_CLAIM_MATCH * self.faces:
            raise InvalidInputError(
                f"the boxes file is not this video's: it claims {self.claimed} of the {self.faces} faces found on the "
                f"original's first frames; give the boxes the run wrote for it, or pass {OVERRIDE}")

