"""More than one look at each frame: the detector passes that find what one plain pass misses.

Why: a face a viewer can see must never be written unanonymized, and one RetinaFace pass
misses heads cut by the frame's edge (`pad`: the frame, shrunk to the pass's scale, inside a
black border; boxes clipped back so the cover reaches the edge), dim blurred faces
(`dark_luma`, `dark_looks`: a gamma and a CLAHE copy of dark frames, at half scale, because
such a face scores higher when the network sees it smaller; the two find different faces:
gamma the dim ones, CLAHE's local contrast an out-of-focus head at the top edge and a blurred
face in a dark crowd, issue 31), profiles (`flip`, and a second
detector: `ensemble`) and tiny faces (`min_face`: a larger working size, one batch per frame,
as costly as tiles). Every pass's faces are fused into one detection per face, and any face
one pass saw is kept (`fuse`: a union, recall first). A face a live track follows may fade
below the threshold for a while: `track_score` returns it as weak, and only the tracker may
use it, to continue that track. The passes are planned once (`MultiPassDetector._passes`)
for both paths; only their pixels (pad, flip, brighten) are made by NumPy/OpenCV on the
host or by torch ops on the device. `SETTINGS` names them (`--recall`).

What each setting finds and costs: benchmarks/results/recall.md, dark_pass.md,
detect_passes.md (each pass's time), throughput.md; the development measurements behind
the scales: benchmarks/results/notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.core.records import Detections

ENHANCERS = ("gamma", "clahe")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
MIN_FACE_AT = 32  # px a face must reach at the working size to be found on every frame (see min_face)


@dataclass(frozen=True)
class Passes:
    """Which extra looks each frame gets; every field off is the plain single pass."""

    pad: float = 0.0  # black border on each side, as a fraction of the frame's long side
    pad_scale: float = 0.5  # the padded pass's scale relative to the plain pass's
    dark_luma: float = 0.0  # mean luminance (0-255) below which a frame is also enhanced
    # the dark frames' looks: (enhancer, scale relative to the plain pass's)
    dark_looks: tuple[tuple[str, float], ...] = (("gamma", 1.0),)
    gamma: float = 0.5  # out = 255 * (in / 255) ** gamma
    flip: bool = False
    min_face: int = 0  # px: raise the plain pass's working size until such a face is 32 px there
    track_score: float = 0.0  # faces scoring from this up to the detector's threshold may continue a live track (0 = off)

    def __post_init__(self) -> None:
        for kind, _ in self.dark_looks:
            if kind not in ENHANCERS:
                raise ValueError(f"unknown enhancer {kind!r}; valid: {', '.join(ENHANCERS)}")
        if not 0.0 <= self.pad <= 1.0 or not 0.0 < self.pad_scale <= 2.0:
            raise ValueError(f"pad must be in [0, 1] and pad_scale in (0, 2], got {self.pad}, {self.pad_scale}")
        if self.min_face < 0:
            raise ValueError(f"min_face must be >= 0 pixels (0 = off), got {self.min_face}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1] (brightening), got {self.gamma}")
        if not 0.0 <= self.track_score < 1.0:
            raise ValueError(f"track_score must be in [0, 1) (0 = off), got {self.track_score}")
        if not self.dark_looks or not all(0.0 < s <= 2.0 for _, s in self.dark_looks):
            raise ValueError(f"dark_looks must be one or more (enhancer, scale in (0, 2]), got {self.dark_looks}")


# Named settings (`--recall NAME`); benchmarks/results/recall.md measured each, dark_pass.md
# the dark looks.
_DARK = (("gamma", 0.5), ("clahe", 0.5))
SETTINGS = {
    "plain": Passes(),
    "fast": Passes(pad=0.2, pad_scale=0.5, dark_luma=40.0, dark_looks=_DARK, track_score=0.3),
    "full": Passes(pad=0.2, pad_scale=0.5, dark_luma=40.0, dark_looks=(("gamma", 1.0), *_DARK, ("clahe", 0.75)), flip=True, track_score=0.3),
    "max": Passes(pad=0.2, pad_scale=0.5, dark_luma=40.0, dark_looks=(("gamma", 1.0), *_DARK, ("clahe", 0.75)), flip=True, min_face=16,
                  track_score=0.3),
}
DEFAULT_SETTING = "fast"


@lru_cache(maxsize=8)
def gamma_table(gamma: float) -> np.ndarray:
    return np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)


def enhance(image: np.ndarray, kind: str, gamma: float = 0.5) -> np.ndarray:
    """The brightened copy of an RGB uint8 image (host path): `kind` "gamma" or "clahe"."""
    if kind == "gamma":
        return cv2.LUT(image, gamma_table(gamma))  # the table as a lookup: about half NumPy indexing's time
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def luma(image: np.ndarray) -> float:
    """Mean luminance (Rec. 601) of an RGB uint8 image, on a 1/4-size copy (cheap, same mean)."""
    small = image[::4, ::4].reshape(-1, 3).astype(np.float32)
    return float((small @ LUMA).mean())


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of x1y1x2y2 boxes."""
    w = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def fuse(parts: list[Detections], iou_threshold: float = 0.4) -> Detections:
    """Score-aware union of the faces several passes or detectors found in one frame.

    Greedy in descending score: a face joins the group of the first kept face it overlaps by
    more than `iou_threshold`, else it starts a group. A group becomes one detection whose box
    is the union of its members' boxes (measured: weighted box fusion's mean box left part of
    a face cut by the frame's edge uncovered, where the padded pass saw more of it than the
    plain one), whose score is the best member's, and whose landmarks are the best member's (every detector we run gives five landmarks; the flipped pass's are mirrored
    back and re-ordered, see `unflip`). Faces no other pass saw stay: recall first.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    if len(parts) == 1:
        return parts[0]
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    lms = np.concatenate([p.landmarks for p in parts])
    order = np.argsort(-scores, kind="stable")
    boxes, scores, lms = boxes[order], scores[order], lms[order]
    overlap = iou(boxes, boxes) > iou_threshold
    group = np.full(len(boxes), -1)
    heads: list[int] = []
    for i in range(len(boxes)):
        for g, head in enumerate(heads):
            if overlap[head, i]:
                group[i] = g
                break
        else:
            group[i] = len(heads)
            heads.append(i)
    out_boxes = np.empty((len(heads), 4), np.float32)
    for g in range(len(heads)):
        members = boxes[group == g]
        out_boxes[g] = [members[:, 0].min(), members[:, 1].min(), members[:, 2].max(), members[:, 3].max()]
    return Detections(out_boxes, scores[heads].astype(np.float32), lms[heads].astype(np.float32))


@dataclass(frozen=True)
class PadPlan:
    """The padded pass's image, made at its working size: the frame resized to (h, w), then a
    black border of `pad` px on each side (resizing first costs a fraction of padding the
    full frame and shrinking that: benchmarks/results/detect_passes.md)."""

    h: int
    w: int
    pad: int

    @property
    def long_side(self) -> int:
        return max(self.h, self.w) + 2 * self.pad


def unpad(d: Detections, plan: PadPlan, h: int, w: int) -> Detections:
    """Boxes found on the padded pass's image, back in the frame's pixels, clipped to it (so a
    face cut by the edge is covered up to the edge). A face wholly inside the padding is dropped."""
    if not len(d):
        return d
    scale = np.array([w / plan.w, h / plan.h], np.float32)
    boxes = ((d.boxes.reshape(-1, 2, 2) - plan.pad) * scale).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
    return Detections(boxes[keep].astype(np.float32), d.scores[keep], ((d.landmarks[keep] - plan.pad) * scale).astype(np.float32))


# Mirroring swaps the sides: right eye ↔ left eye, mouth right ↔ mouth left.
_MIRROR = [1, 0, 2, 4, 3]


def unflip(d: Detections, w: int) -> Detections:
    """Faces found on the mirrored frame, back in the frame's pixels, landmarks in their order."""
    if not len(d):
        return d
    boxes = d.boxes.copy()
    boxes[:, [0, 2]] = w - d.boxes[:, [2, 0]]
    lms = d.landmarks[:, _MIRROR].copy()
    lms[..., 0] = w - lms[..., 0]
    return Detections(boxes, d.scores, lms)


class MultiPassDetector:
    """`detect(images)` / `detect_tensor(frames) -> list[Detections]` over one or more
    detectors (each with `long_side(h, w)`, `detect(images, long_side=None)` and, for the
    device path, `detect_tensor(frames, long_side=None)`), with the extra passes of `passes`.
    Same records, same order, same contract as a single `RetinaFaceDetector`."""

    def __init__(self, detectors: list, passes: Passes = Passes(), name: str = ""):
        """With `passes.track_score`, the detectors given are set to decode down to it (their
        own thresholds, taken first, stay the line between a detection and a weak face)."""
        if not detectors:
            raise ValueError("MultiPassDetector needs at least one detector")
        self.detectors = list(detectors)
        self.passes = passes
        self.name = name
        self._threshold = min(d.threshold for d in self.detectors)
        if passes.track_score and passes.track_score < self._threshold:
            for d in self.detectors:
                d.threshold = passes.track_score

    # What the rest of the run reads from "the detector" (report, gallery building, a fleet
    # actor's count of merged model calls).
    @property
    def engine(self):
        return getattr(self.detectors[0], "engine", None)

    @property
    def detect_size(self):
        return self.detectors[0].detect_size

    @property
    def threshold(self) -> float:
        """The score a face needs to be a detection (weak faces score from `track_score` up to it)."""
        return self._threshold

    def long_side(self, height: int, width: int, det=None) -> int:
        """The plain pass's working size: the detector's own, raised for `min_face`."""
        det = det or self.detectors[0]
        size = det.long_side(height, width)
        if self.passes.min_face:
            size = max(size, int(np.ceil(max(height, width) * MIN_FACE_AT / self.passes.min_face)))
        return size

    def _pad_plan(self, det, h: int, w: int) -> PadPlan | None:
        """The padded pass at `pad_scale` of the plain pass's scale, the padding `pad` of the
        frame's long side (both measured at that scale); never under the detectors' 32 px."""
        if not self.passes.pad:
            return None
        s = max(det.long_side(h, w) * self.passes.pad_scale, 32 / (1 + 2 * self.passes.pad)) / max(h, w)
        return PadPlan(max(1, round(h * s)), max(1, round(w * s)), round(self.passes.pad * max(h, w) * s))

    def _dark_looks(self, det, h: int, w: int) -> list[tuple[str, int]]:
        """(enhancer, working size) of each dark look."""
        return [(kind, max(32, int(round(self.long_side(h, w, det) * s)))) for kind, s in self.passes.dark_looks]

    def _split(self, fused: list[Detections], weak: bool) -> list[Detections]:
        """Faces under the threshold: marked weak (`weak=True`, for the tracker), else dropped."""
        out = []
        for d in fused:
            low = d.scores < self._threshold
            if not low.any():
                out.append(d)
            elif weak:
                out.append(Detections(d.boxes, d.scores, d.landmarks, {"weak": low}))
            else:
                out.append(d.subset(~low))
        return out

    def detect(self, images: list[np.ndarray], weak: bool = False) -> list[Detections]:
        """`weak=True`: also the faces scoring from `track_score` up to the threshold, marked
        (the pipeline's detect stage, whose tracker decides); else detections only."""
        return self._passes(_HostPixels(), images, weak)

    def detect_tensor(self, frames, weak: bool = False) -> list[Detections]:
        """The device path: the same passes as torch ops on the (F, H, W, 3) uint8 frames."""
        for det in self.detectors:
            if not hasattr(det, "detect_tensor"):
                raise ValueError(f"{type(det).__name__} has no device path (detect_tensor) on this build; run it with --device host")
        return self._passes(_DevicePixels(), frames, weak)

    def _passes(self, px, frames, weak: bool) -> list[Detections]:
        """The passes, planned once for both paths; `px` makes each pass's pixels where the
        frames are (host NumPy/OpenCV or device torch) and runs the detector there."""
        n, h, w = px.shape(frames)
        if n == 0:
            return []
        found: list[list[Detections]] = [[] for _ in range(n)]
        p = self.passes
        dark = px.dark(frames, p.dark_luma) if p.dark_luma else []
        # each enhancer's copy of the dark frames, made once for every detector and scale
        picked = px.pick(frames, dark) if dark else None
        bright = {kind: px.brighten(picked, kind, p.gamma) for kind, _ in p.dark_looks} if dark else {}
        for det in self.detectors:
            for i, d in enumerate(px.detect(det, frames, self.long_side(h, w, det), "plain")):
                found[i].append(d)
            plan = self._pad_plan(det, h, w)
            if plan:
                for i, d in enumerate(px.detect(det, px.padded(frames, plan), plan.long_side, "padded")):
                    found[i].append(unpad(d, plan, h, w))
            if p.flip:
                for i, d in enumerate(px.detect(det, px.flip(frames), None, "flip")):
                    found[i].append(unflip(d, w))
            if dark:
                for kind, size in self._dark_looks(det, h, w):
                    for i, d in zip(dark, px.detect(det, bright[kind], size, f"dark:{kind}@{size}")):
                        found[i].append(d)
        return self._split([fuse(parts) for parts in found], weak)


class _HostPixels:
    """The passes' pixels on the host: a list of (H, W, 3) uint8 RGB NumPy frames."""

    def shape(self, images) -> tuple[int, int, int]:
        return (len(images), *images[0].shape[:2]) if images else (0, 0, 0)

    def dark(self, images, below: float) -> list[int]:
        return [i for i, im in enumerate(images) if luma(im) < below]

    def padded(self, images, plan: PadPlan):
        p = plan.pad
        return [cv2.copyMakeBorder(im if im.shape[:2] == (plan.h, plan.w) else cv2.resize(im, (plan.w, plan.h), interpolation=cv2.INTER_AREA),
                                   p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0)) for im in images]

    def flip(self, images):
        return [cv2.flip(im, 1) for im in images]  # a fraction of NumPy's copy of a reversed view

    def pick(self, images, picked: list[int]):
        return [images[i] for i in picked]

    def brighten(self, images, kind: str, gamma: float):
        return [enhance(im, kind, gamma) for im in images]

    def detect(self, det, images, long_side: int | None, look: str) -> list[Detections]:
        """`look` names the pass (benchmarks/detect_passes.py times each)."""
        return det.detect(images, long_side=long_side)


class _DevicePixels:
    """The passes' pixels on the device: one (F, H, W, 3) uint8 RGB torch tensor."""

    def shape(self, frames) -> tuple[int, int, int]:
        return tuple(frames.shape[:3])

    def dark(self, frames, below: float) -> list[int]:
        import torch

        from pipeline.device.transfer import constant

        weights = constant(("luma",), frames.device, lambda: LUMA)
        means = (frames[:, ::4, ::4].to(torch.float32) @ weights).mean(dim=(1, 2)).cpu().numpy()  # one sync
        return [i for i in range(len(means)) if means[i] < below]

    def padded(self, frames, plan: PadPlan):
        import torch
        import torch.nn.functional as F

        from pipeline.device.resize import resize_area

        x = frames.permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (plan.h, plan.w):  # the uint8 image OpenCV's INTER_AREA gives, as the host's
            x = resize_area(x.to(torch.float32), (plan.h, plan.w)).to(torch.uint8)
        p = plan.pad
        return F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)

    def flip(self, frames):
        return frames.flip(2)

    def pick(self, frames, picked: list[int]):
        from pipeline.device.transfer import to_device

        return frames[to_device(picked, frames.device)]

    def brighten(self, frames, kind: str, gamma: float):
        from pipeline.device.transfer import constant, to_device

        if kind == "gamma":
            return constant(("gamma", gamma), frames.device, lambda: gamma_table(gamma))[frames.long()]
        # CLAHE has no torch equivalent here: the dark frames take the host's (a download and an
        # upload of them; its cost on a device is unmeasured)
        return to_device(np.stack([enhance(im, kind) for im in frames.cpu().numpy()]), frames.device)

    def detect(self, det, frames, long_side: int | None, look: str) -> list[Detections]:
        return det.detect_tensor(frames, long_side=long_side)
