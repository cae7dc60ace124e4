"""Where a batch's pixel work runs: OpenCV on the host images, or torch on a device.

The swap and cover stages decide what happens to each face (swap, which fake identity, or
blur and why); a FaceOps does the pixel work (crops, generator call, paste-back, cover) and
is picked once, when the stage is built, so the stages never branch on where they run:

    with ops.editing(frames) as pixels: crops → generate → [parsing_blend] → paste → cover

`editing` loads the batch's pixels once, writes them back for the encoder, and drops the
frames' device copies (`Frame.tensor`, set by the detect stage) whatever happens: the one
place they are released.

- `HostFaceOps`: OpenCV on the frames' own NumPy images, in place; the host path (the CPU default).
- `TorchFaceOps(device)`: one upload of the batch's frames, every step batched on the device
  (pipeline.anonymize.torch_faces), the engine called through `run_tensors` so crops and generated
  faces never leave the device, one download at the end. The device path (`--device`) runs it
  on a GPU; on CPU the tests hold it to the host path's output.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from pipeline.core.alignment import FaceFits, warp_all
from pipeline.anonymize.paste_back import paste_back


class _Editing:
    @contextmanager
    def editing(self, frames, needed: bool = True) -> Iterator:
        """The batch's pixels (None when `needed` is false: a batch with no face is neither
        loaded nor stored), stored back on success; the device copies go in any case."""
        try:
            pixels = self.load(frames) if needed else None
            yield pixels
            if needed:
                self.store(pixels, frames)
        finally:
            self.release(frames)


class HostFaceOps(_Editing):
    """OpenCV on host images: `frames` is the list of the batch's images, edited in place."""

    def load(self, frames) -> list[np.ndarray]:
        return [f.image for f in frames]

    def store(self, pixels, frames) -> None:
        pass  # edited in place

    def release(self, frames) -> None:
        pass

    def crops(self, frames, fits: FaceFits, keep: np.ndarray, size: int) -> np.ndarray:
        """(K, 3, S, S) float32 in [0, 1]: the generator's input for the faces in `keep`."""
        sub = FaceFits(fits.matrices[keep], fits.frame_index[keep], fits.pose[keep], fits.ok[keep])
        return np.ascontiguousarray(warp_all(frames, sub, size).astype(np.float32).transpose(0, 3, 1, 2) / 255.0)

    def latents(self, latents: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.stack(latents).astype(np.float32))

    def generate(self, engine, image, latent):
        return engine({"image": image, "latent": latent})["output"]

    def finite(self, out) -> bool:
        return bool(np.isfinite(out).all())

    def parsing_blend(self, parser, image: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The parser's inner-face blend (pipeline.anonymize.parsing), on CPU tensors over these arrays."""
        import torch

        blended, reasons = parser.blend(torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(image))
        return blended.numpy(), reasons

    def paste(self, frames, out, frame_index: np.ndarray, matrices: np.ndarray, noise=None) -> None:
        """The generator's float crops are warped as they are (official: no uint8 round trip
        before the paste), face after face in batch order."""
        crops = np.clip(out, 0.0, 1.0).astype(np.float32).transpose(0, 2, 3, 1)
        for crop, fi, m in zip(crops, frame_index, matrices):
            paste_back(frames[fi], np.ascontiguousarray(crop), m, noise=noise)

    def cover(self, frames, items: list[tuple[int, np.ndarray]], face_cover) -> list[str]:
        """Covers each (frame index, cover box) with the FaceCover's effect (pipeline.anonymize.cover),
        in order; returns the effect each got (a stronger one where the run's was weak, judged
        against the frame as it was: a copy of frames with more than one face)."""
        faces_on = Counter(fi for fi, _ in items)
        originals = {fi: frames[fi].copy() for fi, n in faces_on.items() if n > 1}
        return [face_cover.cover(frames[fi], box, originals.get(fi)) for fi, box in items]


class TorchFaceOps(_Editing):
    """torch on `device`: `frames` is one (F, H, W, 3) uint8 tensor for the batch."""

    def __init__(self, device: str = "cpu", transfer=None):
        import torch

        from pipeline.device.transfer import Transfer

        self.torch = torch
        self.device = torch.device(device)
        self.transfer = transfer or Transfer(self.device)
        self._generator: Any = None

    def load(self, frames):
        """The batch as one (F, H, W, 3) tensor: from the frames' device tensors when detection
        uploaded them (a device-side stack), else one upload of their images."""
        if all(f.tensor is not None for f in frames):
            return self.torch.stack([f.tensor for f in frames])
        return self.transfer.upload([f.image for f in frames])

    def store(self, pixels, frames) -> None:
        """One download of the batch into the frames' images, for the encoder."""
        self.transfer.download(pixels, [f.image for f in frames])

    def release(self, frames) -> None:
        """The device copies go: their memory returns to the allocator for the next batch."""
        for f in frames:
            f.tensor = None

    def crops(self, frames, fits: FaceFits, keep: np.ndarray, size: int):
        from pipeline.anonymize.torch_faces import warp_crops

        return warp_crops(frames, fits.frame_index[keep], fits.matrices[keep], size)

    def latents(self, latents: list[np.ndarray]):
        from pipeline.device.transfer import to_device

        return to_device(np.stack(latents).astype(np.float32), self.device)

    def generate(self, engine, image, latent):
        return engine.run_tensors({"image": image, "latent": latent})["output"]

    def finite(self, out) -> bool:
        return bool(self.torch.isfinite(out).all())

    def parsing_blend(self, parser, image, out):
        """The parser's inner-face blend (pipeline.anonymize.parsing), on the device."""
        return parser.blend(out, image)

    def paste(self, frames, out, frame_index: np.ndarray, matrices: np.ndarray, noise=None) -> None:
        from pipeline.anonymize.torch_faces import paste_crops

        eps = noise.eps if noise is not None else 0.0
        if eps > 0 and self._generator is None:
            # Seeded from the noise hook's own generator: unseeded (OS entropy) in a run, so
            # nobody can regenerate the noise; seeded in tests, so they can repeat it.
            self._generator = self.torch.Generator(device=self.device)
            self._generator.manual_seed(int(noise.rng.integers(2**62)))
        paste_crops(frames, out.clamp(0.0, 1.0), frame_index, matrices, noise_eps=eps, generator=self._generator)

    def cover(self, frames, items: list[tuple[int, np.ndarray]], face_cover) -> list[str]:
        from pipeline.anonymize.torch_faces import cover_faces

        return cover_faces(frames, items, face_cover.mode, scale=face_cover.region_scale, feather=face_cover.feather)

