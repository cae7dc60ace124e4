"""Bad numbers never end a run and never uncover a face.

A NaN or infinite box or landmark (a detector engine in fp16 overflowing, a broken export, a
Kalman estimate gone astray) used to reach norfair or the anonymizer and abort the whole
video, or a live stream. Here every detection is checked before the tracker sees it, and
every face after it:

- a detection with a usable box but bad landmarks gets placeholder landmarks, one with usable
  landmarks but a bad box gets a box rebuilt around them; both still feed the tracker, so the
  track goes on (and covers the frames where nothing is usable), but a face with placeholder
  landmarks is marked (`face.data["repaired"]`) so the swap never aligns on made-up points;
- a detection with neither is dropped; its track, if it has one, is predicted and covered;
- a face whose numbers went bad after tracking is covered by its track's last good cover, or,
  with none known, the whole frame is covered.

Every repair is counted per reason on the TrackedFrame (`repairs`) and in the report.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.core.records import Detections, Face

LANDMARK_BOX_SCALE = 2.2  # a face box is about this many times the spread of its 5 landmarks


def box_finite(box: np.ndarray) -> bool:
    """Finite and not degenerate (a predicted face may legitimately have left the frame)."""
    return bool(np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1])


def box_usable(box: np.ndarray, shape: tuple[int, int]) -> bool:
    """A detection's box: finite, not degenerate, and overlapping the frame it was found in."""
    h, w = shape
    return box_finite(box) and bool(box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h)


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    c = landmarks.mean(axis=0)
    half = max(float(np.ptp(landmarks, axis=0).max()) * LANDMARK_BOX_SCALE / 2, 4.0)
    return np.array([c[0] - half, c[1] - half * 1.1, c[0] + half, c[1] + half * 1.1], np.float32)


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    """Placeholder points (eyes, nose, mouth at their usual places in a face box) so a face
    record is complete and trackable; never aligned on (the face is marked repaired)."""
    x1, y1, x2, y2 = box
    rel = np.array([[0.33, 0.4], [0.67, 0.4], [0.5, 0.58], [0.36, 0.76], [0.64, 0.76]], np.float32)
    return (rel * [x2 - x1, y2 - y1] + [x1, y1]).astype(np.float32)


class NumberGuard:
    """`detections(dets, shape)` before the tracker, `faces(faces, shape)` after it."""

    def __init__(self):
        self._last_cover: dict[int, np.ndarray] = {}  # track key → its cover on the previous frame

    def detections(self, dets: Detections, shape: tuple[int, int]) -> tuple[Detections, dict[int, str], Counter]:
        """(the detections the tracker may see, {index in them: repair} for those whose
        landmarks are placeholders, repairs counted by reason)."""
        repairs: Counter = Counter()
        boxes, scores, landmarks, kept, placeholder = [], [], [], [], {}
        for i in range(len(dets)):
            box, lms = dets.boxes[i], dets.landmarks[i]
            lms_ok = bool(np.isfinite(lms).all())
            if box_usable(box, shape) and lms_ok:
                pass
            elif box_usable(box, shape):
                repairs["bad_landmarks"] += 1
                lms = landmarks_from_box(box)
                placeholder[len(boxes)] = "bad_landmarks"
            elif lms_ok and box_usable(rebuilt := box_from_landmarks(lms), shape):
                repairs["bad_box"] += 1
                box = rebuilt
            else:
                repairs["unlocatable_detection"] += 1
                continue
            boxes.append(box)
            landmarks.append(lms)
            scores.append(float(dets.scores[i]) if np.isfinite(dets.scores[i]) else 0.0)
            kept.append(i)
        if not repairs and np.isfinite(dets.scores).all():
            return dets, placeholder, repairs
        kept = np.array(kept, np.int64)
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                          np.array(landmarks, np.float32).reshape(-1, 5, 2), {k: v[kept] for k, v in dets.data.items()}), placeholder, repairs

    def faces(self, faces: list[Face], shape: tuple[int, int], repairs: Counter, placeholder: dict[int, str] | None = None) -> list[Face]:
        h, w = shape
        seen: dict[int, np.ndarray] = {}
        for face in faces:
            if placeholder and face.detection in placeholder:
                face.data["repaired"] = placeholder[face.detection]
            key = face.candidate_id
            if not (box_finite(face.cover) and box_finite(face.box) and np.isfinite(face.landmarks).all()):
                last = self._last_cover.get(key) if key is not None else None
                if last is not None:
                    repairs["bad_face_last_cover"] += 1
                    cover = last
                else:
                    repairs["bad_face_whole_frame"] += 1
                    cover = np.array([0, 0, w, h], np.float32)
                face.cover, face.box = cover.copy(), cover.copy()
                if not np.isfinite(face.landmarks).all():
                    face.landmarks = landmarks_from_box(cover)
                face.data["repaired"] = "bad_face"  # its numbers are not the detector's: never swapped on
            if key is not None:
                seen[key] = face.cover
        self._last_cover = seen
        return faces
