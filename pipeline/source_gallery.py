"""Fake identities to swap in: a folder of source face photos, each turned into a SimSwap latent.

Interim, until the identity work (PerFace embedding, attribute groups, person registry)
replaces `assign`: a track gets a source by a fixed rule on its id, so a run is repeatable.
The interface stays this small on purpose: `ids`, `latents`, `assign(track_id) -> index`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

from .alignment import align
from .errors import InvalidInputError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class SourceGallery:
    ids: list[str]
    latents: np.ndarray  # (N, 512) float32, L2-normalized SimSwap (ArcFace) latents

    @classmethod
    def from_dir(cls, folder: str, detector, latent_fn, *, size: int = 224) -> "SourceGallery":
        """`latent_fn(crops) -> (N, 512)` computes SimSwap latents from aligned 224 crops."""
        if not os.path.isdir(folder):
            raise InvalidInputError(f"gallery folder not found: {folder}")
        ids, crops = [], []
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("gallery: cannot read %s, skipped", name)
                continue
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            dets = detector.detect([img])[0]
            if not len(dets):
                log.warning("gallery: no face in %s, skipped", name)
                continue
            biggest = int(np.argmax((dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])))
            crops.append(align([img], [dets.landmarks[biggest : biggest + 1]], 224).crops[0])
            ids.append(os.path.splitext(name)[0])
        if not ids:
            raise InvalidInputError(f"gallery folder has no image with a detectable face: {folder}")
        return cls(ids, np.asarray(latent_fn(np.stack(crops)), np.float32))

    def assign(self, track_id: int) -> int:
        return (track_id - 1) % len(self.ids)
