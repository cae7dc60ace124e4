"""Frames → detections for a batch, on the data path chosen once for the run.

`HostDetect` runs the detector on the frames' NumPy images (OpenCV + ONNX Runtime: the CPU
default). `DeviceDetect` uploads the batch once (pinned, on the upload stream when on a
GPU), keeps each frame's device copy on the frame (`Frame.tensor`) for the anonymize stage,
and detects on the device; only the faces come back. The run calls either the same way.
Both ask for weak faces too (pipeline.detect.recall): the tracking stage comes next.
"""

from __future__ import annotations

from pipeline.core.records import Detections, Frame
from pipeline.detect import Detector
from pipeline.detect.recall import MultiPassDetector


def _weak(detector: Detector) -> dict:
    """A single detector handed in by a caller (tests, tools) has no weak faces to give."""
    return {"weak": True} if isinstance(detector, MultiPassDetector) else {}


class HostDetect:
    def __init__(self, detector: Detector):
        self.detector = detector
        self._options = _weak(detector)

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return self.detector.detect([f.image for f in frames], **self._options)


class DeviceDetect:
    def __init__(self, detector: Detector, transfer):
        self.detector = detector
        self.transfer = transfer
        self._options = _weak(detector)

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        if not frames:
            return []
        pixels = self.transfer.upload([f.image for f in frames])
        for frame, tensor in zip(frames, pixels):
            frame.tensor = tensor
        return self.detector.detect_tensor(pixels, **self._options)
