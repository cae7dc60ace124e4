"""The MTCNN cascade on the host: image pyramid → P-Net proposals → R-Net → O-Net, with NMS
between the stages, for the audit's leak check (`detect(images) -> list[Detections]`).

Follows the published algorithm and the `mtcnn` package's conventions for its weights: pixels
scaled to (x - 127.5) / 128 in RGB order; pyramid scales 12 / min_face · 0.709^k down to 12 px;
a proposal is P-Net's 12x12 window (stride 2) moved by its regression, then NMS at IoU 0.5
per scale and 0.7 over all scales; R-Net and O-Net see square crops (bilinear, outside the
frame reads as 0 after scaling, i.e. mid-grey), offsets are fractions of the box's width + 1;
O-Net's NMS uses intersection over the smaller box. Settings (thresholds, minimum face,
working size) come from the model table's `mtcnn` entry.

Runs in torch on the CPU: the networks are tiny and only the pyramid's first levels are large.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.records import Detections

from ..placement import HOST, Placement
from .weights import load_net


def build(entry, files: dict, *, placement: Placement = HOST, threshold: float | None = None,
          detect_size: int | None = None) -> "MTCNN":
    """The model table's builder for `mtcnn`: `threshold` overrides O-Net's (the final score).
    The audit's cascade steps through NumPy between its three small nets, so it runs on the
    host's CPU whatever the placement."""
    nets = {name: load_net(name, files[name]) for name in ("pnet", "rnet", "onet")}
    return MTCNN(nets, entry.settings, threshold=threshold, detect_size=detect_size)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy NMS in descending score; `min` divides by the smaller area."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = (np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])).clip(0)
        h = (np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])).clip(0)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def refine(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
    return boxes + offsets * np.concatenate([wh, wh], axis=1)


def crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(N, 3, size, size) bilinear samples of the (1, 3, H, W) image over each box, corners on
    the box's corners; outside the image reads 0."""
    _, _, h, w = image.shape
    t = torch.linspace(0.0, 1.0, size)
    b = torch.as_tensor(boxes[:, :4], dtype=torch.float32)
    xs = b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1])
    ys = b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2])
    gx = (2 * xs / max(w - 1, 1) - 1)[:, None, :].expand(-1, size, -1)
    gy = (2 * ys / max(h - 1, 1) - 1)[:, :, None].expand(-1, -1, size)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image.expand(len(boxes), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class MTCNN:
    """`detect(images) -> list[Detections]` in full-resolution pixels, one per RGB uint8 image."""

    def __init__(self, nets: dict, settings: dict, *, threshold: float | None = None, detect_size: int | None = None):
        self.pnet, self.rnet, self.onet = nets["pnet"], nets["rnet"], nets["onet"]
        s = settings
        self.thresholds = (s["thresholds"][0], s["thresholds"][1], s["thresholds"][2] if threshold is None else float(threshold))
        self.threshold = self.thresholds[2]
        self.min_face, self.factor = s["min_face"], s["scale_factor"]
        self.min_size, self.max_size = s["min_size"], s["max_size"]
        self.detect_size = detect_size
        self._lock = threading.Lock()  # one cascade at a time: torch's CPU threads are shared anyway

    def long_side(self, height: int, width: int) -> int:
        if self.detect_size is not None:
            return self.detect_size
        return min(self.max_size, max(self.min_size, max(height, width)))

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        with self._lock, torch.inference_mode():
            return [self._detect(img) for img in images]

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale, out = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            sh, sw = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            level = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            x = (torch.from_numpy(level).permute(2, 0, 1)[None].float() - 127.5) / 128.0
            reg, prob = self.pnet(x)
            ys, xs = np.nonzero(prob[0].numpy() > self.thresholds[0])
            if len(ys):
                r = reg[0][:, ys, xs].numpy().T
                base = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], axis=1).astype(np.float32)
                boxes = (base + r * 12) / scale
                scores = prob[0].numpy()[ys, xs]
                keep = nms(boxes, scores, 0.5)
                out.append(np.hstack([boxes[keep], scores[keep, None]]))
            scale *= self.factor
        if not out:
            return np.empty((0, 5), np.float32)
        cand = np.concatenate(out)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        cand[:, :4] = square(cand[:, :4])
        return cand

    def _detect(self, image: np.ndarray) -> Detections:
        h0, w0 = image.shape[:2]
        side = self.long_side(h0, w0)
        s = side / max(h0, w0)
        work = image if s == 1 else cv2.resize(image, (max(1, round(w0 * s)), max(1, round(h0 * s))),
                                                  interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        cand = self._proposals(work)
        if not len(cand):
            return Detections.empty()
        x = (torch.from_numpy(np.ascontiguousarray(work)).permute(2, 0, 1)[None].float() - 127.5) / 128.0
        reg, prob = self.rnet(crops(x, cand, 24))
        keep = prob.numpy() > self.thresholds[1]
        if not keep.any():
            return Detections.empty()
        boxes = refine(cand[keep, :4], reg.numpy()[keep])
        scores = prob.numpy()[keep]
        k = nms(boxes, scores, 0.7)
        boxes = square(boxes[k])
        reg, lm, prob = self.onet(crops(x, boxes, 48))
        reg, lm, prob = reg.numpy(), lm.numpy(), prob.numpy()
        keep = prob > self.thresholds[2]
        if not keep.any():
            return Detections.empty()
        base = boxes[keep]
        wh = base[:, 2:4] - base[:, 0:2] + 1
        pts = np.stack([lm[keep, :5] * wh[:, :1] + base[:, :1] - 1, lm[keep, 5:] * wh[:, 1:] + base[:, 1:2] - 1], axis=-1)
        final = refine(base, reg[keep])
        scores = prob[keep]
        k = nms(final, scores, 0.7, method="min")
        final, scores, pts = final[k] / s, scores[k], pts[k] / s
        final[:, [0, 2]] = final[:, [0, 2]].clip(0, w0)
        final[:, [1, 3]] = final[:, [1, 3]].clip(0, h0)
        ok = (final[:, 2] - final[:, 0] > 1) & (final[:, 3] - final[:, 1] > 1)
        return Detections(final[ok].astype(np.float32), scores[ok].astype(np.float32), pts[ok].astype(np.float32))
