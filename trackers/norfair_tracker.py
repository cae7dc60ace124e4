"""norfair tracking of faces: stable ids, Kalman smoothing, prediction through misses.

Privacy rule (STYLE.md): the output is the *union* of this frame's detections and every
live track. A detection that has not yet confirmed a track (norfair's initialization delay)
is still returned, with `track_id=None`; a confirmed track the detector missed on this frame
is returned as `predicted=True` with its Kalman estimate, grown a little per missed frame
because the estimate drifts.

Weak faces (`Detections.weak`: below the detector's threshold, pipeline.detect.recall) count
only where they continue a confirmed live track, as ByteTrack's second association does: one
overlapping such a track's estimate by `WEAK_OVERLAP` is a detection of it, the others are
dropped before norfair sees them, so a weak face never starts a track and never is a face of
its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import norfair
import numpy as np
from norfair.distances import Distance

from pipeline.core.records import Detections, Face


@dataclass(frozen=True)
class TrackerConfig:
    patience: int = 15  # frames a track survives without a detection (norfair hit_counter_max)
    confirm_hits: int = 2  # detections before a track gets an id (norfair initialization_delay)
    max_distance: float = 0.9  # 1 - IoU between a detection and a track's estimate
    grow_per_miss: float = 0.2  # predicted boxes grow by this fraction per missed frame...
    max_grow: float = 1.5  # ...up to this fraction (the estimate drifts: err on covering more)
    reid_patience: int = 90  # frames a lost track can be re-identified by embedding (norfair ReID; needs an embedder)
    reid_max_distance: float = 0.075  # 1 - cosine; dlib's calibrated same-person similarity is 0.925

    @property
    def max_id_gap(self) -> int:
        """The most frames between two outputs of one track id, for whoever keeps per-track state.

        A track is output on every frame while it lives (predicted ones included); once lost,
        norfair keeps it for ReID `reid_patience` more frames, and a new track matched to it
        on its second frame takes its id: `reid_patience + 2` (norfair's step order). Without
        an embedder there is no ReID and the gap is 1, so this is an upper bound either way.
        """
        return self.reid_patience + 2


COAST_OVERLAP = 0.3  # IoU above which an earlier shot's predicted face is the same spot as a current face
WEAK_OVERLAP = 0.3  # IoU with a confirmed track's estimate at which a weak face continues that track


def boxes_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


class BoxIoUDistance(Distance):
    """1 − IoU on the box part (first two points) of each face; landmarks ride along."""

    def get_distances(self, objects, candidates) -> np.ndarray:
        if not objects or not candidates:
            return np.full((len(candidates or []), len(objects)), np.inf, np.float32)
        det = np.stack([_points(c)[:2].ravel() for c in candidates])
        obj = np.stack([o.estimate[:2].ravel() for o in objects])
        return (1.0 - boxes_iou(det, obj)).astype(np.float32)


def _points(candidate) -> np.ndarray:
    return candidate.points if isinstance(candidate, norfair.Detection) else candidate.estimate


@dataclass
class _Shot:
    """One shot's norfair tracker and the id offsets that keep its ids unique in the video."""

    tracker: norfair.Tracker
    id_offset: int
    cand_offset: int
    last_hit: dict = field(default_factory=dict)  # norfair initializing_id -> frame of last detection


class FaceTracker:
    """`update(detections, image) -> list[Face]`, called once per frame in order.

    With an `embed(image, landmarks) -> unit vectors` function, norfair's re-identification
    hook is on: a new track whose face matches a track lost in the last `reid_patience`
    frames takes over its id (someone who stepped out of frame and back). Embeddings are
    computed lazily, only for the faces norfair asks about, from the frame each was seen on.

    A detected face carries the detector's own landmarks, not the Kalman-smoothed ones: on
    fast motion the estimate lags, and a swap aligned on it would slide off the real face.
    The smoothed box is kept (with the raw box in the cover) and a missed face is predicted.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig(), embed=None):
        self.config = config
        self._embed = embed
        # ids keep increasing across shots: a track id names one track for the whole video
        self._max_id = self._max_cand = 0
        self._retired: list[_Shot] = []
        self._shot = self._new_shot()
        self._frame = -1

    def cut(self) -> None:
        """A shot cut: identity linking ends, coverage does not. The next frame's faces start new
        tracks, while the previous shot's tracks keep being predicted and covered for their
        usual patience, matched to nothing: a false cut (a flash, a strobe) followed by a
        detector miss must not leave a face bare."""
        self._retired.append(self._shot)
        self._shot = self._new_shot()

    def reset(self) -> None:
        """Forgets every track at once (the audit's per-shot view of the original faces, which
        must not place predicted faces into the next shot). The pipeline uses `cut`."""
        self._retired = []
        self._shot = self._new_shot()

    def _new_shot(self) -> _Shot:
        config = self.config
        tracker = norfair.Tracker(
            distance_function="iou",
            distance_threshold=config.max_distance,
            hit_counter_max=config.patience,
            initialization_delay=config.confirm_hits,
            past_detections_length=0,
            **({"reid_distance_function": self._reid_distance, "reid_distance_threshold": config.reid_max_distance,
                "reid_hit_counter_max": config.reid_patience} if self._embed and config.reid_patience > 0 else {}),
        )
        # norfair 2.3's constructor takes only names or scalar callables; its loop calls
        # `distance_function.get_distances`, so a vectorized Distance subclass plugs in here.
        # The built-in "iou" would read all 7 points (box + landmarks) as a box.
        tracker.distance_function = BoxIoUDistance()
        return _Shot(tracker, self._max_id, self._max_cand)

    def _reid_distance(self, a, b) -> float:
        ea, eb = self._embedding(a.last_detection), self._embedding(b.last_detection)
        return 1.0 if ea is None or eb is None else float(1.0 - ea @ eb)

    def _embedding(self, det) -> np.ndarray | None:
        if det.embedding is None and det.data[1] is not None:
            patch, origin = det.data[1]
            det.embedding = self._embed(patch, (det.points[2:7] - origin)[None])[0]
            det.data = (det.data[0], None)  # the patch is no longer needed
        return det.embedding

    @staticmethod
    def _patch(image: np.ndarray | None, box: np.ndarray):
        """A copy of the face's surroundings: later stages anonymize the frame in place."""
        if image is None:
            return None
        w, h = box[2] - box[0], box[3] - box[1]
        x1, y1 = int(max(0, box[0] - w)), int(max(0, box[1] - h))
        x2, y2 = int(min(image.shape[1], box[2] + w)), int(min(image.shape[0], box[3] + h))
        return image[y1:y2, x1:x2].copy(), np.array([x1, y1], np.float32)

    def _continuing(self, detections: Detections) -> Detections:
        """The detections without the weak faces that continue no confirmed live track."""
        if detections.weak is None or not detections.weak.any():
            return detections
        live = [o.estimate[:2].ravel() for o in self._shot.tracker.tracked_objects if o.id is not None and o.hit_counter_is_positive]
        keep = ~detections.weak
        if live:
            keep |= boxes_iou(detections.boxes, np.array(live, np.float32)).max(axis=1) >= WEAK_OVERLAP
        return detections.subset(keep)

    def update(self, detections: Detections, image: np.ndarray | None = None) -> list[Face]:
        self._frame += 1
        detections = self._continuing(detections)
        keep = image if self._embed is not None else None
        nd = [
            norfair.Detection(
                points=np.vstack([detections.boxes[i].reshape(2, 2), detections.landmarks[i]]),
                scores=np.full(7, detections.scores[i], np.float32),
                data=(i, self._patch(keep, detections.boxes[i])),
            )
            for i in range(len(detections))
        ]
        self._shot.tracker.update(nd)
        faces, emitted = self._faces(self._shot, detections, {id(d) for d in nd})
        # Fail closed: a detection norfair did not account for is still anonymized as-is.
        for i in range(len(detections)):
            if i not in emitted:
                b = detections.boxes[i]
                faces.append(Face(b.copy(), detections.landmarks[i].copy(), float(detections.scores[i]), None, False, b.copy(),
                                  detection=i))
        faces += self._coasting(faces)
        return faces

    def _faces(self, shot: _Shot, detections: Detections, current: set) -> tuple[list[Face], set[int]]:
        """The shot's live tracks as faces: detected ones with the detector's numbers, missed
        ones predicted (box grown per missed frame, since the estimate drifts)."""
        faces: list[Face] = []
        emitted: set[int] = set()
        alive = set()
        for obj in shot.tracker.tracked_objects:
            if not obj.hit_counter_is_positive:
                continue
            key = obj.initializing_id
            alive.add(key)
            tid = None if obj.id is None else obj.id + shot.id_offset
            cand = key + shot.cand_offset
            self._max_id = max(self._max_id, tid or 0)
            self._max_cand = max(self._max_cand, cand)
            est = obj.estimate
            smooth_box = est[:2].ravel().astype(np.float32)
            if id(obj.last_detection) in current:
                i = obj.last_detection.data[0]
                emitted.add(i)
                shot.last_hit[key] = self._frame
                raw = detections.boxes[i]
                cover = np.concatenate([np.minimum(raw[:2], smooth_box[:2]), np.maximum(raw[2:], smooth_box[2:])])
                faces.append(Face(smooth_box, detections.landmarks[i].copy(), float(detections.scores[i]), tid, False, cover,
                                  candidate_id=cand, detection=i))
            else:
                missed = self._frame - shot.last_hit.get(key, self._frame)
                grow = min(self.config.max_grow, self.config.grow_per_miss * missed)
                faces.append(Face(smooth_box, est[2:7].astype(np.float32), 0.0, tid, True, grow_box(smooth_box, grow),
                                  missed_frames=missed, candidate_id=cand))
        shot.last_hit = {k: v for k, v in shot.last_hit.items() if k in alive}
        return faces, emitted

    def _coasting(self, current: list[Face]) -> list[Face]:
        """Predicted faces of earlier shots' tracks, until their patience runs out. One that
        overlaps a face of this shot is left out: that face already covers the spot, and a
        blur over it would spoil a swap after every false cut."""
        out: list[Face] = []
        boxes = np.array([f.box for f in current], np.float32).reshape(-1, 4)
        for shot in self._retired:
            shot.tracker.update([])
            faces, _ = self._faces(shot, Detections.empty(), set())
            for face in faces:
                if len(boxes) and boxes_iou(face.box[None], boxes).max() >= COAST_OVERLAP:
                    continue
                out.append(face)
        self._retired = [s for s in self._retired if any(o.hit_counter_is_positive for o in s.tracker.tracked_objects)]
        return out


def grow_box(box: np.ndarray, frac: float) -> np.ndarray:
    """`box` made `frac` wider and taller about its centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * (1 + frac) / 2, (box[3] - box[1]) * (1 + frac) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
