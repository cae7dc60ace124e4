"""RetinaFace detection: our own batched pre/post-processing around an `Engine`.

Frames are resized so the long side equals `detect_size`, run as one batch, and the
anchor/landmark decode is vectorized over the whole batch. NMS is OpenCV's. Boxes and
landmarks come back in full-resolution pixels. Settings (mean, anchors, output names) come
from the model's entry in `engines.models`, never from tensor shapes.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines import Engine, get_model, load

from pipeline.core.records import Detections
from pipeline.detect.priors import anchors

# Working size (long side) when none is given: the native size clamped to [640, 1280].
# benchmarks/results/detect_size.md: on 1080p, 45-px faces are found 4% of the time at 640
# and 97% at 1280; on the 360p clip, native 640 beats both 320 and an upscaled 1280.
AUTO_MIN_SIZE, AUTO_MAX_SIZE = 640, 1280
DEFAULT_DETECT_SIZE = None
DEFAULT_THRESHOLD = 0.5
NMS_IOU = 0.4


class WorkingSize:
    """The detectors' shared size rule: the native long side clamped to [AUTO_MIN_SIZE,
    AUTO_MAX_SIZE], or `detect_size`; `long_side` overrides it per call (the recall passes)."""

    detect_size: int | None

    def long_side(self, height: int, width: int) -> int:
        if self.detect_size is not None:
            return self.detect_size
        return min(AUTO_MAX_SIZE, max(AUTO_MIN_SIZE, max(height, width)))

    def working_size(self, height: int, width: int, long_side: int | None = None) -> tuple[int, int, float]:
        scale = (long_side or self.long_side(height, width)) / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale)), scale


class RetinaFaceDetector(WorkingSize):
    """`detect(images) -> list[Detections]`, one per image, for a batch of same-size frames."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        model: str = "retinaface-mnet025",
        detect_size: int | None = DEFAULT_DETECT_SIZE,
        threshold: float = DEFAULT_THRESHOLD,
        nms_iou: float = NMS_IOU,
    ):
        if detect_size is not None and detect_size < 32:
            raise ValueError(f"detect_size must be at least 32 pixels (long side), got {detect_size}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.settings = get_model(model).settings
        self.engine = engine if engine is not None else load(model)
        self.detect_size = detect_size
        self.threshold = threshold
        self.nms_iou = nms_iou
        self._mean = np.array(self.settings["mean"], np.float32)
        self._bgr = self.settings["channel_order"] == "BGR"

    def preprocess(self, images: list[np.ndarray], long_side: int | None = None) -> tuple[np.ndarray, float, float]:
        h, w = images[0].shape[:2]
        wh, ww, _ = self.working_size(h, w, long_side)
        batch = np.empty((len(images), 3, wh, ww), np.float32)
        order = [2, 1, 0] if self._bgr else [0, 1, 2]
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                raise ValueError(f"a detection batch needs frames of one size: {(h, w)} vs {img.shape[:2]}")
            small = img if (wh, ww) == (h, w) else cv2.resize(img, (ww, wh), interpolation=cv2.INTER_AREA)
            for c, src in enumerate(order):
                np.subtract(small[:, :, src], self._mean[c], out=batch[i, c], dtype=np.float32)
        return batch, w / ww, h / wh

    def detect(self, images: list[np.ndarray], long_side: int | None = None) -> list[Detections]:
        """`long_side` overrides the working size for this call (pipeline.detect.recall's
        padded pass keeps its own scale)."""
        if not images:
            return []
        batch, sx, sy = self.preprocess(images, long_side)
        names = self.settings["outputs"]
        out = self.engine({self.settings["input"]: batch})
        loc, conf, landm = out[names["boxes"]], out[names["scores"]], out[names["landmarks"]]
        priors = anchors(batch.shape[2], batch.shape[3], self.settings["strides"], self.settings["anchor_sizes"])
        if loc.shape[1] != len(priors):
            raise ValueError(
                f"detector output has {loc.shape[1]} anchors, expected {len(priors)} for input "
                f"{batch.shape[2]}x{batch.shape[3]}: model settings do not match the weights"
            )
        return [self._decode(loc[b], conf[b, :, 1], landm[b], priors, sx, sy, images[b].shape) for b in range(len(images))]

    def detect_tensor(self, frames, long_side: int | None = None) -> list[Detections]:
        """The device data path: `frames` is a (F, H, W, 3) uint8 RGB torch tensor (as
        pipeline.device.transfer.Transfer.upload makes it); resize, decode and NMS run where it
        is (pipeline.detect.torch_detect), only the faces come back to the host. Same working
        size, thresholds and results as `detect` (within resize rounding). Any engine serves
        it; the torch one (`load(model, "torch", placement=...)`) keeps the batch on the device."""
        from pipeline.detect import torch_detect

        n, h, w = torch_detect.check_frames(frames)
        if n == 0:
            return []
        wh, ww, _ = self.working_size(h, w, long_side)
        batch = torch_detect.preprocess(frames, (wh, ww), self.settings["mean"], self._bgr)
        names = self.settings["outputs"]
        out = self.engine.run_tensors({self.settings["input"]: batch})
        loc, conf, landm = out[names["boxes"]], out[names["scores"]], out[names["landmarks"]]
        priors = torch_detect.prior_boxes(wh, ww, self.settings["strides"], self.settings["anchor_sizes"], loc.device)
        if loc.shape[1] != len(priors):
            raise ValueError(
                f"detector output has {loc.shape[1]} anchors, expected {len(priors)} for input "
                f"{wh}x{ww}: model settings do not match the weights"
            )
        return torch_detect.postprocess(loc, conf[..., 1], landm, priors, variance=self.settings["variance"],
                                        threshold=self.threshold, nms_iou=self.nms_iou, scale=(w / ww, h / wh), frame_hw=(h, w))

    def _decode(self, loc, scores, landm, priors, sx, sy, shape) -> Detections:
        keep = scores > self.threshold
        if not keep.any():
            return Detections.empty()
        v_c, v_s = self.settings["variance"]
        loc, scores, landm, p = loc[keep], scores[keep], landm[keep], priors[keep]
        centers = p[:, :2] + loc[:, :2] * v_c * p[:, 2:]
        sizes = p[:, 2:] * np.exp(loc[:, 2:] * v_s)
        boxes = np.hstack([centers - sizes / 2, centers + sizes / 2])
        pts = p[:, None, :2] + landm.reshape(-1, 5, 2) * v_c * p[:, None, 2:]
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.threshold, self.nms_iou)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        scale = np.array([sx, sy], np.float32)
        h, w = shape[:2]
        boxes = (boxes[idx].reshape(-1, 2, 2) * scale).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return Detections(boxes.astype(np.float32), scores[idx].astype(np.float32), (pts[idx] * scale).astype(np.float32))
