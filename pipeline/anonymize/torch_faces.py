"""Face crops, paste-back and cover effects as batched torch ops, on whatever device the frames are.

Why: the host path (alignment.align, paste_back.paste_back, Anonymizer) loops over faces with
OpenCV on host images. A GPU path that went back to the host for that would spend its time on
PCIe copies, so the same pixel work is done here on a (F, H, W, 3) uint8 tensor:
- the crops of every face of every frame in one `grid_sample` call. The frames are laid out
  as one tall image with a zero row under each frame, so a bilinear tap just outside a frame
  reads zero (OpenCV's BORDER_CONSTANT), and a sample farther outside is sent off the image;
- the paste-back of every face in one `grid_sample` call: crop and soft mask together, each
  into its own ROI (padded to the largest), then one blend per face into its ROI, in order,
  as the host path does (overlapping faces come out the same);
- blur / pixelate / mask over the same feathered ellipse (anonymizer.face_ellipse).

Matrices and ROIs are a handful of numbers per face and are worked out on the host, like
the host path does; only pixels stay on the device. Results match the OpenCV path within
interpolation rounding (OpenCV quantizes sample positions to 1/32 pixel and rounds the warped
crop to uint8 before blending; this path stays in float until the final write), which
tests/test_torch_faces.py checks on CPU. Nothing here names a device: it comes from the tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.alignment import inverse
from pipeline.anonymize.cover import Ellipse, face_ellipse, small_size
from pipeline.anonymize.paste_back import paste_roi, soft_mask
from pipeline.device.resize import resize_area

OFF_IMAGE = -3.0  # a normalized grid coordinate beyond any tap: grid_sample returns zeros


def upload(images: list[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """(F, H, W, 3) uint8 on `device`: one host-to-device copy for the whole batch."""
    return torch.from_numpy(np.stack(images)).to(device)


def download(frames: torch.Tensor, images: list[np.ndarray]) -> None:
    """Writes the device frames back into the host images, in place (one copy for the batch)."""
    host = frames.cpu().numpy()
    for image, new in zip(images, host):
        image[...] = new


def _tall(frames: torch.Tensor) -> torch.Tensor:
    """(1, 3, F·(H+1), W) float: the frames stacked vertically, each followed by a zero row."""
    n, h, w, _ = frames.shape
    tall = torch.zeros((3, n, h + 1, w), dtype=torch.float32, device=frames.device)
    tall[:, :, :h] = frames.permute(3, 0, 1, 2)
    return tall.reshape(1, 3, n * (h + 1), w)


def warp_crops(frames: torch.Tensor, frame_index, matrices: np.ndarray, size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: face i cut from frames[frame_index[i]] with the
    frame→crop 2×3 `matrices[i]`, as `cv2.warpAffine(..., INTER_LINEAR, borderValue=0)` would."""
    n_faces = len(matrices)
    n, h, w, _ = frames.shape
    dev = frames.device
    if n_faces == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=dev)
    inv = torch.as_tensor(np.stack([inverse(m) for m in matrices]), dtype=torch.float32, device=dev)  # crop → frame
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32, device=dev),
                            torch.arange(size, dtype=torch.float32, device=dev), indexing="ij")
    px = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    py = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    fi = torch.as_tensor(np.asarray(frame_index), dtype=torch.float32, device=dev)[:, None, None]
    gx = (2.0 * px + 1.0) / w - 1.0
    gy = (2.0 * (py + fi * (h + 1)) + 1.0) / (n * (h + 1)) - 1.0
    # Beyond the zero row above or below, a tap would read the neighbouring frame.
    gx = torch.where((py <= -1.0) | (py >= h), torch.full_like(gx, OFF_IMAGE), gx)
    grid = torch.stack([gx, gy], dim=-1).reshape(1, n_faces * size, size, 2)
    out = F.grid_sample(_tall(frames), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(3, n_faces, size, size).permute(1, 0, 2, 3).div_(255.0)


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

    `noise_eps` > 0 adds alpha · U(-eps, eps) to the blended pixels, as
    noise_defense.add_uniform_noise does on the host (rounded first, so alpha = 0 stays exact).
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
    m = torch.as_tensor(np.asarray(matrices, np.float32)[live], device=dev)  # frame → crop
    origin = torch.as_tensor([rois[i][:2] for i in live], dtype=torch.float32, device=dev)
    xs = torch.arange(rw, dtype=torch.float32, device=dev)[None, None, :] + origin[:, 0, None, None]
    ys = torch.arange(rh, dtype=torch.float32, device=dev)[None, :, None] + origin[:, 1, None, None]
    qx = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]
    qy = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    grid = torch.stack([(2.0 * qx + 1.0) / size - 1.0, (2.0 * qy + 1.0) / size - 1.0], dim=-1)
    mask = torch.as_tensor(soft_mask(size), device=dev)[None, None].expand(len(live), 1, size, size)
    src = torch.cat([crops[live].float() * 255.0, mask], dim=1)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (L, 4, rh, rw)
    frame_index = np.asarray(frame_index)
    for k, i in enumerate(live):
        x0, y0, x1, y1 = rois[i]
        roi = frames[int(frame_index[i]), y0:y1, x0:x1]
        alpha = warped[k, 3, : y1 - y0, : x1 - x0, None]
        face = warped[k, :3, : y1 - y0, : x1 - x0].permute(1, 2, 0)
        out = torch.round(face * alpha + roi.float() * (1.0 - alpha))
        if noise_eps > 0:
            noise = torch.rand(out.shape, generator=generator, device=dev) * (2.0 * noise_eps) - noise_eps
            out = torch.where(alpha > 0, torch.round(out + alpha * noise), out)
        roi.copy_(out.clamp_(0, 255).to(torch.uint8))
    return rois


def _ellipse_alpha(e: Ellipse, device) -> torch.Tensor:
    xs = (torch.arange(e.x0, e.x1, dtype=torch.float32, device=device) + 0.5 - e.cx) / e.a
    ys = (torch.arange(e.y0, e.y1, dtype=torch.float32, device=device) + 0.5 - e.cy) / e.b
    r = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return ((e.reach - r) / e.feather).clamp_(0.0, 1.0)


def _reflect101(n: int, pad: int) -> list[int]:
    """Source index of each of n + 2·pad positions under OpenCV's BORDER_REFLECT_101, which
    keeps reflecting on axes shorter than the pad (a 3-pixel-wide shrunken face): torch's
    "reflect" padding refuses those, and "replicate" differs from OpenCV there."""
    out = []
    for p in range(-pad, n + pad):
        if n == 1:
            out.append(0)
            continue
        while p < 0 or p >= n:
            p = -p if p < 0 else 2 * n - 2 - p
        out.append(p)
    return out


def _gaussian_1(x: torch.Tensor) -> torch.Tensor:
    """σ = 1 Gaussian, 7 taps, BORDER_REFLECT_101: OpenCV's GaussianBlur((0, 0), 1.0)."""
    t = torch.arange(-3, 4, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / 2.0)
    k = k / k.sum()
    c = x.shape[1]
    cols = torch.tensor(_reflect101(x.shape[-1], 3), device=x.device)
    x = F.conv2d(x[..., cols], k.view(1, 1, 1, 7).expand(c, 1, 1, 7), groups=c)
    rows = torch.tensor(_reflect101(x.shape[-2], 3), device=x.device)
    return F.conv2d(x[..., rows, :], k.view(1, 1, 7, 1).expand(c, 1, 7, 1), groups=c)


def _effect(roi: torch.Tensor, mode: str, face_w: float) -> torch.Tensor:
    """roi (1, 3, h, w) float → the covered roi; the same recipes as anonymizer._blur/_pixelate/_mask."""
    h, w = roi.shape[-2:]
    if mode == "mask":
        return torch.zeros_like(roi)
    small = resize_area(roi, small_size(mode, h, w, face_w))  # cv2.resize(INTER_AREA), as the host path
    if mode == "blur":
        return F.interpolate(_gaussian_1(small), size=(h, w), mode="bilinear", align_corners=False)
    return F.interpolate(small, size=(h, w), mode="nearest")


def cover_faces(frames: torch.Tensor, items, mode: str, *, scale: float = 1.3, feather: float = 0.25) -> None:
    """Covers each (frame_index, cover_box) in `items` in place, in order, like Anonymizer.apply."""
    _, h, w, _ = frames.shape
    for fi, box in items:
        e = face_ellipse(np.asarray(box), (h, w), scale=scale, feather=feather)
        if e is None:
            continue
        roi = frames[int(fi), e.y0 : e.y1, e.x0 : e.x1]
        alpha = _ellipse_alpha(e, frames.device)[..., None]
        x = roi.permute(2, 0, 1)[None].float()
        effect = _effect(x, mode, float(box[2] - box[0]))[0].permute(1, 2, 0)
        roi.copy_(torch.round(effect * alpha + roi.float() * (1.0 - alpha)).clamp_(0, 255).to(torch.uint8))
