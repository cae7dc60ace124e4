"""Tracking stage: shot cuts (`shot_cuts`) and the tracker (`trackers.FaceTracker`) turn
per-frame detections into the faces to anonymize (`stage`)."""
