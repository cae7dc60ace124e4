"""The tracking stage: shot cuts, then the tracker, one frame at a time in order."""

from __future__ import annotations

from pipeline.core.records import TrackedFrame
from pipeline.track.shot_cuts import ShotCutDetector
from trackers import FaceTracker


def track_stage(tracker: FaceTracker):
    """The tracking stage: shot cuts reset the tracker, so no track spans a cut."""
    cuts = ShotCutDetector()

    def track(items):
        for frame, dets in items:
            cut = cuts.update(frame.image)
            if cut:
                tracker.reset()
            yield TrackedFrame(frame, tracker.update(dets, frame.image), len(dets), shot_cut=cut)

    return track
