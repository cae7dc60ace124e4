"""The tracking stage: shot cuts, then the tracker, one frame at a time in order."""

from __future__ import annotations

from pipeline.core.records import TrackedFrame
from pipeline.track.guard import NumberGuard
from pipeline.track.shot_cuts import ShotCutDetector
from trackers import FaceTracker


def track_stage(tracker: FaceTracker):
    """The tracking stage: a shot cut ends every track's identity (no track spans a cut, so IoU
    never links two people), while the earlier shot's faces stay covered for their patience.
    Bad numbers are repaired around the tracker (pipeline.track.guard), never fatal."""
    cuts = ShotCutDetector()
    guard = NumberGuard()

    def track(items):
        for frame, dets in items:
            shape = frame.image.shape[:2]
            cut = cuts.update(frame.image)
            if cut:
                tracker.cut()
            usable, placeholder, repairs = guard.detections(dets, shape)
            faces = guard.faces(tracker.update(usable, frame.image), shape, repairs, placeholder)
            found = len(dets) if dets.weak is None else int((~dets.weak).sum())  # weak faces are not detections
            yield TrackedFrame(frame, faces, found, shot_cut=cut, repairs=dict(repairs))

    return track
