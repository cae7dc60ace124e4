"""`--parsing-mask`: SimSwap's `--use_mask`, which keeps the swap to the inner face.

Official (util/reverse2original.py, `reverse2wholeimage(..., use_mask=True)`), per face: the
aligned crop is normalized (ImageNet mean/std), resized to 512 by nearest, parsed by BiSeNet;
the labels skin, brows, eyes, glasses, nose, lips (and, separately, the mouth) become a 0/255
map, which is resized to the crop (bilinear), eroded softly (`soft_erosion`) and used to blend
in crop space: `generated · m + crop · (1 − m)`. The result is pasted back as usual. Hair,
ears, neck and background inside the crop therefore stay the original's: that is what the
option is for (no swap seams in the hair), and it is the privacy trade-off (docs/swap.md;
the audit's re-identification rate measures what it leaves).

Here every face of a batch is parsed in one engine call and post-processed batched in torch,
on whatever device the crops are (host path: CPU tensors over the NumPy arrays). Settings
(mean/std, size, classes, gate, erosion) come from the model table's `face-parsing` entry.

Where the official code and ours part (`FaceParser.masks` returns why, per face):
- "gate": fewer than 5000/255 ≈ 20 face pixels at 512: official uses no parsing mask; same here.
- "inner_face": our addition. If the mask does not cover the template's eyes–nose–mouth hull
  (≥ 0.5 on at least `MIN_INNER_COVER` of it), the parser missed the face (occlusion, an odd
  pose) and the official blend would leave the real eyes, nose or mouth in the output; the
  whole crop is swapped instead (no parsing mask), as with the gate.
- official raises when no pixel of the eroded mask is below 0.9 and divides 0 by 0 when every
  pixel is 0; here the first is a mask of ones, the second cannot pass the gate.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.alignment import FRONTAL, templates

MIN_INNER_COVER = 0.9
USED, GATE, INNER_FACE = "used", "gate", "inner_face"


@lru_cache(maxsize=4)
def soft_erosion_kernel(size: int) -> np.ndarray:
    """SoftErosion's kernel: max(d) − d for the distance d to the centre, normalized to sum 1
    (computed in float32, as torch does it there)."""
    r = size // 2
    ys, xs = torch.meshgrid(torch.arange(0.0, size), torch.arange(0.0, size), indexing="ij")
    dist = torch.sqrt((xs - r) ** 2 + (ys - r) ** 2)
    kernel = dist.max() - dist
    return (kernel / kernel.sum()).numpy()


def soft_erosion(m: torch.Tensor, *, kernel_size: int, threshold: float, iterations: int) -> torch.Tensor:
    """(N, 1, S, S) float32 → soft mask, as SimSwap's SoftErosion: `iterations − 1` times
    m = min(m, conv(m)), then conv; ≥ threshold → 1; the rest divided by its own maximum, per face."""
    weight = torch.as_tensor(soft_erosion_kernel(kernel_size), device=m.device).view(1, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    for _ in range(iterations - 1):
        m = torch.min(m, F.conv2d(m, weight, padding=pad))
    m = F.conv2d(m, weight, padding=pad)
    full = m >= threshold
    rest_max = torch.where(full, torch.full_like(m, -1.0), m).amax(dim=(1, 2, 3), keepdim=True)
    scaled = torch.where(rest_max > 0, m / rest_max.clamp(min=torch.finfo(m.dtype).tiny), m)
    return torch.where(full, torch.ones_like(m), scaled)


@lru_cache(maxsize=4)
def _inner_face(size: int) -> np.ndarray:
    """(S, S) bool: the hull of the frontal (224) / FFHQ (512) template's five points."""
    tpl = templates(size)[FRONTAL if size == 224 else 0].astype(np.float32)
    hull = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(tpl)).astype(np.int32).reshape(-1, 2), 1)
    return hull.astype(bool)


class FaceParser:
    """`masks(crops) -> (masks, reasons)`: SimSwap's soft inner-face mask of every crop of a batch.

    `engine` runs BiSeNet (`{"image"} → {"logits"}`, any backend: called through `run_tensors`,
    so on the device path the crops never leave the device); `settings` is the model table's
    face-parsing entry.
    """

    def __init__(self, engine, settings):
        self.engine = engine
        self.settings = settings
        self.face_classes = tuple(settings["face_classes"])
        self.mouth_class = int(settings["mouth_class"])

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) RGB [0, 1] → the parser's input: normalized at crop size in float32
        (divided, not multiplied by a reciprocal), then resized to 512 by nearest, as official."""
        s = self.settings
        mean = torch.tensor(s["mean"], dtype=torch.float32, device=crops.device).view(1, 3, 1, 1)
        std = torch.tensor(s["std"], dtype=torch.float32, device=crops.device).view(1, 3, 1, 1)
        x = (crops.float() - mean) / std
        return F.interpolate(x, size=(s["size"], s["size"]), mode="nearest")

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 19, 512, 512): every crop of the batch in one engine call."""
        s = self.settings
        return self.engine.run_tensors({s["input"]: self.prepare(crops)})[s["output"]]

    def official_masks(self, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 512, 512) class labels → ((N, size, size) float32 soft masks, (N,) bool gate): the
        official post-processing (encode_segmentation_rgb, gate, resize, postprocess, SoftErosion)."""
        s = self.settings
        face = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        for c in self.face_classes:
            face |= labels == c
        maps = torch.stack([face, labels == self.mouth_class], dim=1).double() * 255.0  # encode_segmentation_rgb
        gate = maps.sum(dim=(1, 2, 3)) >= s["gate"]
        if maps.shape[-1] != size:  # cv2.resize(map, (crop, crop)), INTER_LINEAR
            maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
        inv = torch.tensor(1 / 255.0, dtype=torch.float32, device=labels.device)
        m = maps[:, :1].float() * inv + maps[:, 1:].float() * inv  # each channel scaled, then summed, as postprocess
        e = s["soft_erosion"]
        m = soft_erosion(m, kernel_size=e["kernel_size"], threshold=e["threshold"], iterations=e["iterations"])[:, 0]
        return m, gate

    def masks(self, crops: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """(N, 3, S, S) crops → ((N, S, S) masks, one reason per face: "used", or "gate" /
        "inner_face" where no parsing mask is used (a mask of ones: the whole crop is swapped))."""
        size = crops.shape[-1]
        if len(crops) == 0:
            return torch.zeros((0, size, size), device=crops.device), []
        labels = self.logits(crops).argmax(dim=1)  # the first maximum wins, as numpy's argmax
        m, gate = self.official_masks(labels, size)
        inner = torch.as_tensor(_inner_face(size), device=m.device)
        cover = ((m >= 0.5) & inner).sum(dim=(1, 2)).float() / inner.sum()
        reasons = [GATE if not g else (INNER_FACE if c < MIN_INNER_COVER else USED) for g, c in zip(gate.tolist(), cover.tolist())]
        keep = torch.as_tensor([r == USED for r in reasons], device=m.device)[:, None, None]
        return torch.where(keep, m, torch.ones_like(m)), reasons

    def blend(self, generated: torch.Tensor, crops: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """SimSwap's crop-space blend `generated · m + crop · (1 − m)` (float32); (blended, reasons)."""
        m, reasons = self.masks(crops)
        m = m[:, None].to(generated.dtype)
        return generated * m + crops.to(generated.dtype) * (1 - m), reasons
