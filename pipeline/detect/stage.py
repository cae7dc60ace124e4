"""Frames → detections for a batch, on the data path chosen once for the run.

`HostDetect` runs the detector on the frames' NumPy images (OpenCV + ONNX Runtime: the CPU
default). `DeviceDetect` uploads the batch once (pinned, on the upload stream when on a
GPU), keeps each frame's device copy on the frame (`Frame.tensor`) for the anonymize stage,
and detects on the device; only the faces come back. The run calls either the same way.
"""

from __future__ import annotations

from pipeline.core.records import Detections, Frame
from pipeline.detect.retinaface import FaceDetector


class HostDetect:
    def __init__(self, detector: FaceDetector):
        self.detector = detector

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return self.detector.detect([f.image for f in frames])


class DeviceDetect:
    def __init__(self, detector: FaceDetector, transfer):
        self.detector = detector
        self.transfer = transfer

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        if not frames:
            return []
        pixels = self.transfer.upload([f.image for f in frames])
        for frame, tensor in zip(frames, pixels):
            frame.tensor = tensor
        return self.detector.detect_tensor(pixels)
