"""Frames up to the device and back: one upload and one download per frame.

On a GPU both copies come from page-locked (pinned) host buffers, on their own CUDA streams,
ordered against the compute stream by events, so a batch's upload overlaps the previous
batch's compute and the encoder's download does not stall the next upload. Two pinned
buffers per shape alternate (double buffering): a buffer is refilled only once the copy that
last read it has finished. On the CPU the same calls are plain copies, which is what the
tests run.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(values, device, dtype=None) -> torch.Tensor:
    """Host numbers (an array, a list: matrices, indices, sizes) on `device` without making the
    host wait: a copy from pageable memory returns only once the GPU has finished everything
    queued before it, so each small one stalls the pipeline. On a GPU they go through pinned
    memory (torch's caching host allocator, which keeps a block until its copy is done) with a
    non-blocking copy; elsewhere this is `torch.as_tensor`."""
    t = torch.as_tensor(values if torch.is_tensor(values) else np.asarray(values), dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(key: tuple, device, make) -> torch.Tensor:
    """A read-only constant (a kernel, a table, anchors per working size) uploaded once per
    `key` and device; `make()` builds it on the host the first time. Keys are few (model
    settings, sizes a run meets). Callers must not modify it in place."""
    k = (key, torch.device(device))
    t = _CONSTANTS.get(k)
    if t is None:
        t = _CONSTANTS[k] = to_device(make(), device)
    return t


class Transfer:
    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.is_cuda = self.device.type == "cuda"
        self._pinned: dict[tuple, list] = {}  # (kind, shape) → [(buffer, event | None), …]
        self._turn: dict[tuple, int] = {}
        if self.is_cuda:
            self.upload_stream = torch.cuda.Stream(self.device)
            self.download_stream = torch.cuda.Stream(self.device)

    def _buffer(self, kind: str, shape: tuple) -> tuple:
        key = (kind, shape)
        if key not in self._pinned:
            self._pinned[key] = [[torch.empty(shape, dtype=torch.uint8, pin_memory=True), None] for _ in range(2)]
            self._turn[key] = 0
        slot = self._pinned[key][self._turn[key]]
        self._turn[key] ^= 1
        if slot[1] is not None:
            slot[1].synchronize()  # the copy that last used this buffer is done
        return slot

    def upload(self, images: list[np.ndarray]) -> torch.Tensor:
        """(F, H, W, 3) uint8 on the device, ready for the current stream."""
        if not self.is_cuda:
            return torch.from_numpy(np.stack(images)).to(self.device)
        slot = self._buffer("up", (len(images), *images[0].shape))
        np.stack(images, out=slot[0].numpy())
        with torch.cuda.stream(self.upload_stream):
            frames = slot[0].to(self.device, non_blocking=True)
            slot[1] = torch.cuda.Event()
            slot[1].record(self.upload_stream)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(slot[1])
        frames.record_stream(compute)  # allocated on the upload stream, used on the compute one
        return frames

    def download(self, frames: torch.Tensor, images: list[np.ndarray]) -> None:
        """Writes the device frames into the host images, in place, once the device is done."""
        if not self.is_cuda:
            host = frames.cpu().numpy()
        else:
            slot = self._buffer("down", tuple(frames.shape))
            self.download_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.download_stream):
                slot[0].copy_(frames, non_blocking=True)
                slot[1] = torch.cuda.Event()
                slot[1].record(self.download_stream)
            frames.record_stream(self.download_stream)
            slot[1].synchronize()
            host = slot[0].numpy()
        for image, new in zip(images, host):
            image[...] = new
