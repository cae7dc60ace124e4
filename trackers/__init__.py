"""Trackers turn per-frame detections into faces with stable ids (`FaceTracker.update`)."""

from .norfair_tracker import FaceTracker, TrackerConfig

__all__ = ["FaceTracker", "TrackerConfig"]
