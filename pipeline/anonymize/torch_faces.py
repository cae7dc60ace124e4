"""Face crops, paste-back and cover effects as batched torch ops, on whatever device the frames are.

Why: the host path (alignment.align, paste_back.paste_back, cover.FaceCover) loops over faces with
OpenCV on host images. A GPU path that went back to the host for that would spend its time on
PCIe copies, so the same pixel work is done here on a (F, H, W, 3) uint8 tensor:
- the crops of every face of every frame: one gather per bilinear tap, at the positions and
  with the integer weights cv2.warpAffine uses, so the crops are OpenCV's (and SimSwap's) to the bit;
- the paste-back of every face: crop, white mask and small-face mask sampled into each face's
  ROI (padded to the largest) at a full-frame warpAffine's positions with OpenCV's float
  weights; the official erosion and feather for all faces in one batched min-pool and one
  banded matrix product; then one float64 blend per face into its ROI, truncated, in order,
  as the host path does (overlapping faces come out the same);
- blur / pixelate / mask over the same feathered ellipse (region.face_ellipse).

Matrices and ROIs are a handful of numbers per face and are worked out on the host, like
the host path does; only pixels stay on the device. On the golden frames this path is
bit-exact against SimSwap's official output where the host path is (tests/test_swap_golden.py),
and tests/test_torch_faces.py holds it to the host path. Nothing here names a device: it
comes from the tensors. (torch's own elementwise kernels do not fuse multiply-adds, on CPU or
CUDA, which the float32 sums rely on to round as OpenCV's do.)
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.anonymize.paste_back import (
    _AB_SCALE, _TAB, ERODE, FEATHER, MASK_THRESHOLD, official_covers_face, official_inverse, paste_roi, soft_mask,
)
from pipeline.core.alignment import template_matrices
from pipeline.anonymize.region import REGION_FEATHER, REGION_SCALE, STRONGER, Ellipse, face_ellipse, inner_slices, small_size, weak_cover
from pipeline.device.resize import resize_area
from pipeline.device.transfer import constant, to_device

_COEF_BITS = 15  # INTER_REMAP_COEF_BITS
_COEF = 1 << _COEF_BITS


def _fixed_positions(dst_to_src: np.ndarray, origins, shape: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, h, w) int64 source positions, in 1/32 px, of the destination pixels origin + (x, y),
    exactly as cv2.warpAffine computes them (`dst_to_src`: the (L, 2, 3) matrix it inverts yours
    into): M·x rounded to 1/1024 px per column and M·y + t per row, then summed and cut to 1/32."""
    m = to_device(np.asarray(dst_to_src, np.float64), device)
    origin = to_device(np.asarray(origins, np.float64).reshape(-1, 2), device)
    h, w = shape
    xs = torch.arange(w, dtype=torch.float64, device=device)[None, :] + origin[:, 0, None]  # (L, w)
    ys = torch.arange(h, dtype=torch.float64, device=device)[None, :] + origin[:, 1, None]  # (L, h)
    half, shift = _AB_SCALE // _TAB // 2, int(np.log2(_AB_SCALE // _TAB))

    def axis(a, b, c):
        col = torch.round(a[:, None] * xs * _AB_SCALE).long()[:, None, :]
        row = torch.round((b[:, None] * ys + c[:, None]) * _AB_SCALE).long()[:, :, None] + half
        return (row + col) >> shift

    return axis(m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]), axis(m[:, 1, 0], m[:, 1, 1], m[:, 1, 2])


def warp_crops(frames: torch.Tensor, frame_index, matrices: np.ndarray, size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: face i cut from frames[frame_index[i]] with the
    frame→crop 2×3 `matrices[i]`, exactly as `cv2.warpAffine(..., INTER_LINEAR, borderValue=0)`
    computes a uint8 warp: its 1/32 px positions, its 15-bit integer weights (32·(32 − f)(32 − g)
    …, which sum to 2^15 exactly) and its rounding; a tap outside the frame reads 0. One gather
    per tap for every face of the batch; the generator then sees SimSwap's own crops."""
    n_faces = len(matrices)
    n, h, w, c = frames.shape
    dev = frames.device
    if n_faces == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=dev)
    inv = np.stack([cv2.invertAffineTransform(np.asarray(m, np.float64)) for m in matrices])  # crop → frame
    qx, qy = _fixed_positions(inv, np.zeros((n_faces, 2)), (size, size), dev)
    x0, y0 = qx >> 5, qy >> 5
    fx, fy = qx & (_TAB - 1), qy & (_TAB - 1)
    base = to_device(np.asarray(frame_index, np.int64), dev)[:, None, None] * (h * w)
    flat = frames.reshape(n * h * w, c)
    acc = torch.zeros((n_faces, size, size, c), dtype=torch.int32, device=dev)
    for (yy, xx), wgt in (((y0, x0), (_TAB - fy) * (_TAB - fx)), ((y0, x0 + 1), (_TAB - fy) * fx),
                          ((y0 + 1, x0), fy * (_TAB - fx)), ((y0 + 1, x0 + 1), fy * fx)):
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        v = flat[(base + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(-1)].reshape(n_faces, size, size, c)
        acc += v.to(torch.int32) * (wgt * (_COEF // (_TAB * _TAB)) * inside).to(torch.int32)[..., None]
    out = ((acc + (_COEF >> 1)) >> _COEF_BITS).clamp_(0, 255)
    return out.permute(0, 3, 1, 2).float().div_(255.0)


def _reflect101(i: torch.Tensor, n) -> torch.Tensor:
    """OpenCV's BORDER_REFLECT_101 index (…, 2, 1, |0, 1, …, n−1|, n−2, …) for each `i`, per
    length `n` (a tensor of lengths, or one int)."""
    period = torch.clamp(2 * (n - 1), min=1) if torch.is_tensor(n) else max(2 * (n - 1), 1)
    i = torch.remainder(i.abs(), period)
    return torch.where(i >= n, period - i, i).clamp(min=0)


def _gaussian_taps(dtype, device) -> torch.Tensor:
    """The official feather's 41 taps, as OpenCV computes them for GaussianBlur((41, 41), 0)."""
    return constant(("feather", FEATHER), device, lambda: cv2.getGaussianKernel(FEATHER, 0).ravel()).to(dtype)


def paste_masks(warped_white: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """(L, rh, rw) official paste masks in [0, 1] from the warped white masks (L, rh, rw, 0..255),
    in their dtype (float64 to match OpenCV's).

    Face k's ROI is the top-left `sizes[k]` = (h, w) of its slice; the rest is padding. Beyond its
    ROI a face's mask counts as +inf for the erosion: at a frame edge that is OpenCV's border for
    erode, and at an ROI edge inside the frame only pixels outside the footprint (already 0)
    have windows reaching there. The blur reflects (101) at each face's own ROI edges: OpenCV's
    border at a frame edge, and zeros reflected into zeros anywhere else (paste_back.py).
    """
    n, rh, rw = warped_white.shape
    dev = warped_white.device
    hs, ws = to_device(np.asarray(sizes, np.int64).reshape(-1, 2), dev).unbind(1)
    rows, cols = torch.arange(rh, device=dev), torch.arange(rw, device=dev)
    inside = (rows[None, :, None] < hs[:, None, None]) & (cols[None, None, :] < ws[:, None, None])
    m = torch.where(warped_white > MASK_THRESHOLD, torch.full_like(warped_white, 255.0), warped_white)
    m = torch.where(inside, m, torch.full_like(m, 255.0))
    # Erosion = −max_pool(−m), separable; window x−20 … x+19 as cv2.erode's 40-wide kernel anchored at 20.
    lo, hi = ERODE // 2, ERODE - 1 - ERODE // 2
    e = F.pad(-m[:, None], (lo, hi, 0, 0), value=-float("inf"))
    e = F.max_pool2d(e, (1, ERODE), stride=1)
    e = F.pad(e, (0, 0, lo, hi), value=-float("inf"))
    e = -F.max_pool2d(e, (ERODE, 1), stride=1)[:, 0]  # (L, rh, rw)
    r = FEATHER // 2
    ri = _reflect101(torch.arange(-r, rh + r, device=dev)[None, :], hs[:, None])  # (L, rh + 2r)
    ci = _reflect101(torch.arange(-r, rw + r, device=dev)[None, :], ws[:, None])
    k = torch.arange(n, device=dev)[:, None, None]
    padded = e[k, ri[:, :, None], ci[:, None, :]][:, None]  # (L, 1, rh + 2r, rw + 2r)
    taps = _gaussian_taps(e.dtype, dev)
    # The separable blur as two banded matrix products: a float64 matmul runs at BLAS speed where
    # a float64 conv2d does not (20× on CPU), and the sums differ from OpenCV's only in the last bit.
    band_w = _band(taps, rw)  # (rw + 2r, rw)
    band_h = _band(taps, rh)
    return (band_h.T @ padded[:, 0] @ band_w) / 255.0


def _band(taps: torch.Tensor, n: int) -> torch.Tensor:
    """(n + len(taps) − 1, n) matrix whose column j holds `taps` at rows j … j + len − 1 (a valid 1-D filter)."""
    k = len(taps)
    i = torch.arange(n + k - 1, device=taps.device)[:, None] - torch.arange(n, device=taps.device)[None, :]
    return torch.where((i >= 0) & (i < k), taps[i.clamp(0, k - 1)], torch.zeros((), dtype=taps.dtype, device=taps.device))


class _Taps:
    """The four bilinear taps of every ROI pixel and their OpenCV weights, worked out once for
    all the images warped with them (crop, white mask, small-face mask)."""

    def __init__(self, qx: torch.Tensor, qy: torch.Tensor, size: int):
        x0, y0 = qx >> 5, qy >> 5
        fx = (qx & (_TAB - 1)).to(torch.float32) / _TAB
        fy = (qy & (_TAB - 1)).to(torch.float32) / _TAB
        self.shape, self.size = qx.shape, size
        self.index, self.inside = [], []
        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
            self.inside.append(((xx >= 0) & (xx < size) & (yy >= 0) & (yy < size)).reshape(qx.shape[0], 1, -1))
            self.index.append((yy.clamp(0, size - 1) * size + xx.clamp(0, size - 1)).reshape(qx.shape[0], 1, -1))
        # OpenCV's table: (1 − g, g) ⊗ (1 − f, f), each product rounded to float32
        self.weights = [((1 - fy) * (1 - fx)), ((1 - fy) * fx), (fy * (1 - fx)), (fy * fx)]

    def sample(self, src: torch.Tensor) -> torch.Tensor:
        """(L, C, rh, rw): `src` (L, C, S, S) read at the taps, zero outside, summed in OpenCV's
        order, so a float32 crop warps to the very float32 values cv2.remap gives (grid_sample's
        weights differ in the last bits, which the official truncation turns into whole levels)."""
        n, c = src.shape[:2]
        flat = src.reshape(n, c, self.size * self.size)
        out = None
        for idx, ok, w in zip(self.index, self.inside, self.weights):
            v = torch.where(ok, flat.gather(2, idx.expand(n, c, -1)), torch.zeros((), dtype=src.dtype, device=src.device))
            v = v * w.reshape(n, 1, -1).to(src.dtype)
            out = v if out is None else out + v
        return out.reshape(n, c, *self.shape[1:])


def paste_crops(
    frames: torch.Tensor,
    crops: torch.Tensor,
    frame_index,
    matrices: np.ndarray,
    *,
    noise_eps: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[tuple[int, int, int, int] | None]:
    """Blends `crops` (N, 3, S, S, float in [0, 1]) back into `frames` in place; returns each ROI.

    The official paste (pipeline.anonymize.paste_back), batched: every face's crop, white mask and
    small-face mask are warped into its ROI (padded to the largest) by one gather, one batched
    erosion and blur make the official masks, then each face is blended in float64 and truncated,
    in order. The masks are float64 as OpenCV's are (a float32 feather moves `alpha` by ~1e-7,
    enough to flip a truncation now and then). `noise_eps` > 0 adds alpha · U(-eps, eps) to the
    blended pixels, as noise_defense.add_uniform_noise does on the host (rounded, so alpha = 0
    stays exact).
    """
    size = crops.shape[-1]
    _, h, w, _ = frames.shape
    rois = [paste_roi(m, size, (h, w)) for m in matrices]
    live = [i for i, r in enumerate(rois) if r is not None]
    if not live:
        return rois
    dev = frames.device
    rh = max(rois[i][3] - rois[i][1] for i in live)
    rw = max(rois[i][2] - rois[i][0] for i in live)
    # warpAffine(crop, mat_rev) samples the crop at inv(mat_rev)·x: official_inverse, then OpenCV's own inversion
    dst_to_src = np.stack([cv2.invertAffineTransform(official_inverse(matrices[i])) for i in live])
    qx, qy = _fixed_positions(dst_to_src, [rois[i][:2] for i in live], (rh, rw), dev)
    n_live = len(live)
    taps = _Taps(qx, qy, size)
    face = taps.sample(crops[live].float())  # (L, 3, rh, rw) float32, as cv2.remap of the float crop
    covers = [official_covers_face(matrices[i], size) for i in live]
    official = small = None
    if any(covers):
        white = torch.full((n_live, 1, size, size), 255.0, dtype=torch.float64, device=dev)
        official = paste_masks(taps.sample(white)[:, 0], [(rois[i][3] - rois[i][1], rois[i][2] - rois[i][0]) for i in live])
    if not all(covers):
        small = taps.sample(constant(("soft_mask", size), dev, lambda: soft_mask(size))[None, None].expand(n_live, 1, size, size))[:, 0]
    frame_index = np.asarray(frame_index)
    for k, i in enumerate(live):
        x0, y0, x1, y1 = rois[i]
        roi = frames[int(frame_index[i]), y0:y1, x0:x1]
        alpha = (official[k] if covers[k] else small[k].double())[: y1 - y0, : x1 - x0, None]
        target = face[k, :, : y1 - y0, : x1 - x0].permute(1, 2, 0).double() * 255.0
        out = torch.floor(alpha * target + (1.0 - alpha) * roi.double())  # truncation, as official
        if noise_eps > 0:
            noise = torch.rand(out.shape, generator=generator, device=dev) * (2.0 * noise_eps) - noise_eps
            out = torch.where(alpha > 0, torch.round(out + alpha * noise.double()), out)
        roi.copy_(out.clamp_(0, 255).to(torch.uint8))
    return rois


def _ellipse_alpha(e: Ellipse, device) -> torch.Tensor:
    xs = (torch.arange(e.x0, e.x1, dtype=torch.float32, device=device) + 0.5 - e.cx) / e.a
    ys = (torch.arange(e.y0, e.y1, dtype=torch.float32, device=device) + 0.5 - e.cy) / e.b
    r = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return ((e.reach - r) / e.feather).clamp_(0.0, 1.0)


def _gaussian_1(x: torch.Tensor) -> torch.Tensor:
    """σ = 1 Gaussian, 7 taps, BORDER_REFLECT_101: OpenCV's GaussianBlur((0, 0), 1.0)."""
    t = torch.arange(-3, 4, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / 2.0)
    k = k / k.sum()
    c = x.shape[1]
    # OpenCV keeps reflecting on axes shorter than the pad (a 3-pixel-wide shrunken face): torch's
    # "reflect" padding refuses those, and "replicate" differs from OpenCV there.
    cols = _reflect101(torch.arange(-3, x.shape[-1] + 3, device=x.device), x.shape[-1])
    x = F.conv2d(x[..., cols], k.view(1, 1, 1, 7).expand(c, 1, 1, 7), groups=c)
    rows = _reflect101(torch.arange(-3, x.shape[-2] + 3, device=x.device), x.shape[-2])
    return F.conv2d(x[..., rows, :], k.view(1, 1, 7, 1).expand(c, 1, 7, 1), groups=c)


def _effect(roi: torch.Tensor, mode: str, face_w: float) -> torch.Tensor:
    """roi (1, 3, h, w) float → the covered roi; the same recipes as cover._blur/_pixelate/_mask."""
    h, w = roi.shape[-2:]
    if mode == "mask":
        return torch.zeros_like(roi)
    # cv2.resize(INTER_AREA), as the host path; rounded after each step as OpenCV's uint8 steps
    # are, so the weak-cover check (region.weak_cover) decides as the host's does
    small = torch.round(resize_area(roi, small_size(mode, h, w, face_w)))
    if mode == "blur":
        return torch.round(F.interpolate(torch.round(_gaussian_1(small)), size=(h, w), mode="bilinear", align_corners=False))
    return F.interpolate(small, size=(h, w), mode="nearest")


def cover_faces(frames: torch.Tensor, items, mode: str, *, scale: float = REGION_SCALE, feather: float = REGION_FEATHER) -> list[str]:
    """Covers each (frame_index, cover_box) in `items` in place, in order, as FaceCover.cover does
    on the host, with the same stronger effect where the run's is weak; returns each face's
    effect. The weak-cover check reads two numbers per face back (a sync per face)."""
    _, h, w, _ = frames.shape
    used = []
    faces_on = Counter(int(fi) for fi, _ in items)
    originals = {fi: frames[fi].clone() for fi, n in faces_on.items() if n > 1}  # judged against the frame as it was, as the host
    for fi, box in items:
        e = face_ellipse(np.asarray(box), (h, w), scale=scale, feather=feather)
        used.append(mode)
        if e is None:
            continue
        roi = frames[int(fi), e.y0 : e.y1, e.x0 : e.x1]
        alpha = _ellipse_alpha(e, frames.device)[..., None]
        x = roi.permute(2, 0, 1)[None].float()
        face_w = float(box[2] - box[0])
        effect = _effect(x, mode, face_w)[0].permute(1, 2, 0)
        inner = inner_slices(np.asarray(box), e)
        if inner is not None:
            was = originals.get(int(fi), frames[int(fi)])[e.y0 : e.y1, e.x0 : e.x1]
            before = was[inner].float()
            for stronger in STRONGER[mode]:
                if not weak_cover(before, effect[inner]):
                    break
                used[-1], effect = stronger, _effect(x, stronger, face_w)[0].permute(1, 2, 0)
        roi.copy_(torch.round(effect * alpha + roi.float() * (1.0 - alpha)).clamp_(0, 255).to(torch.uint8))
    return used


def embed_faces(embedder, frame: torch.Tensor, landmarks) -> np.ndarray:
    """The device path's identity samples: `frame` is the (H, W, 3) uint8 tensor already on
    the device; the crops are cut there (the host's warp to the bit), black where a face does
    not fit (as the host's), and embedded by the embedder's torch backend
    (`embed_crop_tensors`); only the (N, dim) vectors come back."""
    lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    if not len(lms):
        return np.zeros((0, embedder.dim), np.float32)
    matrices, ok = template_matrices(lms, embedder.template)
    crops = warp_crops(frame[None], np.zeros(len(lms), int), matrices, embedder.crop_size)  # (N, 3, s, s) in [0, 1]
    crops = crops * to_device(np.asarray(ok, np.float32), crops.device)[:, None, None, None]  # unfit: black, as the host
    return embedder.embed_crop_tensors(crops)
