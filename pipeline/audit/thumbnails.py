"""Face thumbnails for the contact sheets, kept in bounded memory while the videos stream.

The audit does not know how long a track will live when its first face goes by, so each
track keeps every `stride`-th face and doubles the stride whenever it holds twice what the
sheet needs: memory stays O(sheet size) per track, and the kept faces still span the whole
track evenly enough to pick the sheet's columns from at the end.

`TopThumbnails` is the same bound for a set decided only at the end (the faces that are not
judgeable depend on τ, known after the pass): it keeps the faces with the highest score.
"""

from __future__ import annotations

import heapq

import cv2
import numpy as np

from pipeline.audit.records import TrackSheet

SIZE = 96


def crop_thumb(image: np.ndarray, box: np.ndarray, size: int = SIZE, grow: float = 1.25) -> np.ndarray:
    """Square crop around the box (grown, padded with black past the frame edge), size×size."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(float(box[2] - box[0]), float(box[3] - box[1]), 2.0) * grow
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def side_by_side(original: np.ndarray, output: np.ndarray, box: np.ndarray, size: int = SIZE, gap: int = 2) -> np.ndarray:
    """The original's crop and the output's at the same box, left and right (a white gap between),
    so one tile shows whether the output still holds the face."""
    sep = np.full((size, gap, 3), 255, np.uint8)
    return np.hstack([crop_thumb(original, box, size), sep, crop_thumb(output, box, size)])


class TopThumbnails:
    """The crops of the `cap` faces with the highest score so far, in bounded memory.

    A face is cropped only when it enters the kept set; ties keep the earlier face. `kept()`
    returns (score, key, frame, crop) in frame order.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self._heap: list[tuple[float, int, int, np.ndarray]] = []  # min-heap on (score, -key)

    def add(self, score: float, key: int, frame: int, image: np.ndarray, box: np.ndarray) -> None:
        item = (score, -key)
        if self.cap <= 0 or (len(self._heap) >= self.cap and item <= self._heap[0][:2]):
            return
        entry = (score, -key, frame, crop_thumb(image, box))
        if len(self._heap) < self.cap:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def kept(self) -> list[tuple[float, int, int, np.ndarray]]:
        return [(s, -k, f, im) for s, k, f, im in sorted(self._heap, key=lambda e: (e[2], -e[1]))]


class TrackThumbnails:
    def __init__(self, columns: int = 8):
        self.columns = max(1, columns)
        self._kept: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self._seen: dict[int, int] = {}
        self._stride: dict[int, int] = {}

    def add(self, track_id: int, frame: int, original: np.ndarray, output: np.ndarray, box: np.ndarray) -> None:
        seen = self._seen.get(track_id, 0)
        self._seen[track_id] = seen + 1
        stride = self._stride.setdefault(track_id, 1)
        if seen % stride:
            return
        kept = self._kept.setdefault(track_id, [])
        kept.append((frame, crop_thumb(original, box), crop_thumb(output, box)))
        if len(kept) > 2 * self.columns:
            self._kept[track_id] = kept[::2]
            self._stride[track_id] = stride * 2

    def sheets(self) -> list[TrackSheet]:
        out = []
        for tid, kept in sorted(self._kept.items()):
            idx = np.unique(np.linspace(0, len(kept) - 1, min(self.columns, len(kept))).round().astype(int))
            cols = [kept[i] for i in idx]
            out.append(TrackSheet(tid, [c[0] for c in cols], [c[1] for c in cols], [c[2] for c in cols]))
        return out
