"""RetinaFace pre- and post-processing as torch ops, on whatever device the frames are.

Why: on the device data path the frames are already a (F, H, W, 3) uint8 tensor in device
memory (pipeline.device.transfer.Transfer.upload). Going back to the host to resize with OpenCV,
decode 37 000 anchors per frame in NumPy and run OpenCV's NMS would cost a full-frame copy
each way; here only the kept faces (a few numbers each) are downloaded, once per batch.

The steps are those of the host path (pipeline.detect.retinaface), number for number:
- `preprocess`: resize to the working size (OpenCV's INTER_AREA, reproduced: `resize_area`),
  RGB → BGR, minus the mean;
- `prior_boxes`: the host's anchors, uploaded once per working size and device;
- `decode`: score threshold, then box and landmark decode of the candidates only;
- `nms`: greedy NMS with OpenCV's rule (suppress when IoU > threshold, candidates in stable
  descending score order), batched over the images and vectorized (see `greedy_keep`);
- `to_detections`: scaled to full resolution, boxes clipped to the frame, one download.
The host waits on the device only for sizes (how many candidates, the longest image's count,
whether an NMS round changed anything) and for that final download of a few numbers per face.
Nothing here names a device: it comes from the tensors. No torchvision.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.records import Detections
from pipeline.detect.priors import anchors
from pipeline.device.resize import resize_area
from pipeline.device.transfer import constant


def check_frames(frames) -> tuple[int, int, int]:
    """(F, H, W) of the device path's frames: (F, H, W, 3) uint8 RGB, as Transfer.upload makes them.
    Not cached: a cache keyed by the tensor would keep whole frame batches alive."""
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"detect_tensor expects (F, H, W, 3) uint8 RGB frames, got {tuple(frames.shape)} {frames.dtype}")
    return tuple(frames.shape[:3])


def prior_boxes(height: int, width: int, strides, sizes, device: torch.device) -> torch.Tensor:
    """(A, 4) cx, cy, w, h: the host path's anchors (one definition of their order), on
    `device`, computed and uploaded once per working size."""
    strides, sizes = tuple(strides), tuple(tuple(s) for s in sizes)
    return constant(("retinaface-priors", height, width, strides, sizes), device, lambda: anchors(height, width, strides, sizes))


def preprocess(frames: torch.Tensor, size: tuple[int, int], mean, bgr: bool) -> torch.Tensor:
    """(F, H, W, 3) uint8 RGB → (F, 3, h, w) float32, the network's input. The channel swap
    runs on the uint8 pixels and the float copy is made once, straight into NCHW: each full-frame
    pass costs as much as the rest together on a CPU."""
    x = frames.permute(0, 3, 1, 2)
    if bgr:
        x = x.flip(1)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    if tuple(x.shape[-2:]) != tuple(size):
        x = resize_area(x, size)
    mean = tuple(float(m) for m in mean)
    return x.sub_(constant(("mean", mean), x.device, lambda: np.asarray(mean, np.float32)).view(1, 3, 1, 1))


def decode(loc, scores, landm, priors, variance, threshold: float):
    """Candidates above `threshold`, decoded, grouped by image and in stable descending score
    order within each (OpenCV's NMS order). Returns (image index, boxes x1y1x2y2, scores,
    landmarks (K, 5, 2)) in working-size pixels.

    `loc`, `landm`: (B, A, 4), (B, A, 10); `scores`: (B, A), the face class; `priors`: (A, 4).
    """
    image, anchor = (scores > threshold).nonzero(as_tuple=True)  # a device sync: how many candidates
    s = scores[image, anchor]
    order = torch.sort(s, descending=True, stable=True).indices
    order = order[torch.sort(image[order], stable=True).indices]  # by image, score order kept inside
    image, anchor, s = image[order], anchor[order], s[order]
    v_c, v_s = variance
    p, d, lm = priors[anchor], loc[image, anchor], landm[image, anchor]
    centers = p[:, :2] + d[:, :2] * v_c * p[:, 2:]
    half = p[:, 2:] * torch.exp(d[:, 2:] * v_s) / 2
    boxes = torch.cat([centers - half, centers + half], dim=1)
    pts = p[:, None, :2] + lm.reshape(-1, 5, 2) * v_c * p[:, None, 2:]
    return image, boxes, s, pts


def iou_matrix(boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, K, K) IoU of padded (B, K, 4) boxes, as OpenCV computes it for NMS (no +1, an
    empty intersection is 0); pairs involving padding are 0."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = w * h
    union = area[:, :, None] + area[:, None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    return iou * (valid[:, :, None] & valid[:, None, :])


def greedy_keep(suppresses: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Greedy NMS from the (B, K, K) matrix "i (earlier, higher score) would suppress j".

    Why this is exact and still vectorized: greedy keeps j iff no *kept* earlier i suppresses
    it. Iterating keep ← valid ∧ ¬∃i (keep_i ∧ suppresses[i, j]) from "all kept" fixes one more
    leading position each round (position j only reads positions < j), and that equation has a
    single solution, so the first round that changes nothing has reached greedy's answer. It
    takes as many rounds as the longest chain of suppressions (2-4 on real outputs), each one
    batched matrix op, instead of K sequential steps.
    """
    keep = valid.clone()
    for _ in range(suppresses.shape[-1] + 1):
        new = valid & ~(suppresses & keep[:, :, None]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def nms(image: torch.Tensor, boxes: torch.Tensor, batch: int, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept candidates (in their given order) for candidates grouped by image
    and score-ordered within each, as `decode` returns them."""
    if len(image) == 0:
        return image
    counts = torch.bincount(image, minlength=batch)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(image), device=image.device) - first[image]
    k = int(counts.max())
    padded = boxes.new_zeros((batch, k, 4))
    padded[image, slot] = boxes
    valid = torch.zeros((batch, k), dtype=torch.bool, device=boxes.device)
    valid[image, slot] = True
    earlier = torch.ones((k, k), dtype=torch.bool, device=boxes.device).triu_(1)
    keep = greedy_keep((iou_matrix(padded, valid) > iou_threshold) & earlier, valid)
    return keep[image, slot].nonzero(as_tuple=True)[0]


def to_detections(image, boxes, scores, pts, batch: int, scale: tuple[float, float], frame_hw: tuple[int, int]) -> list[Detections]:
    """Working-size results → one `Detections` per image in frame pixels: one download."""
    h, w = frame_hw
    sx, sy = (float(v) for v in scale)  # Python numbers: no upload
    boxes = torch.stack([(boxes[:, 0] * sx).clamp(0, w), (boxes[:, 1] * sy).clamp(0, h),
                         (boxes[:, 2] * sx).clamp(0, w), (boxes[:, 3] * sy).clamp(0, h)], 1)
    pts = torch.stack([pts[..., 0] * sx, pts[..., 1] * sy], -1)
    packed = torch.cat([boxes, scores[:, None], pts.reshape(-1, 10), image[:, None].float()], dim=1).cpu().numpy()
    out = []
    for b in range(batch):
        rows = packed[packed[:, 15] == b]
        if not len(rows):
            out.append(Detections.empty())
            continue
        out.append(Detections(np.ascontiguousarray(rows[:, :4]), np.ascontiguousarray(rows[:, 4]),
                              np.ascontiguousarray(rows[:, 5:15]).reshape(-1, 5, 2)))
    return out


def postprocess(loc, scores, landm, priors, *, variance, threshold: float, nms_iou: float, scale, frame_hw) -> list[Detections]:
    """The network's outputs for a batch → `Detections` per image (the host path's `_decode` + NMS)."""
    batch = loc.shape[0]
    image, boxes, s, pts = decode(loc, scores, landm, priors, variance, threshold)
    keep = nms(image, boxes, batch, nms_iou)
    return to_detections(image[keep], boxes[keep], s[keep], pts[keep], batch, scale, frame_hw)
