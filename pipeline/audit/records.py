"""Records the audit hands from measurement to pictures.

The measurement side crops faces while it decodes both videos once; the report side only
draws. A `TrackSheet` is the whole hand-over for one track, and `AuditThumbnails` the crops
of the faces listed apart (leaks, suspects, faces not judgeable), so the renderer never
needs to open a video again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackSheet:
    """Thumbnails of one track over time, original above anonymized."""

    track_id: int
    frames: list[int]  # frame index of each column
    original: list[np.ndarray]  # RGB uint8 thumbnails, all the same size (e.g. 96x96)
    anonymized: list[np.ndarray]  # same length and size as original

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError unless every column has one original and one anonymized thumbnail.

        Checked when built and again before drawing (the lists are mutable): a column whose
        two halves came from different frames would show the officer a comparison that is
        not one.
        """
        n = len(self.frames)
        if len(self.original) != n or len(self.anonymized) != n:
            raise ValueError(
                f"TrackSheet {self.track_id}: expects as many original and anonymized thumbnails "
                f"as frames ({n}); got {len(self.original)} original, {len(self.anonymized)} "
                "anonymized. Crop both videos at the same frames."
            )
        shape = None
        for row, images in (("original", self.original), ("anonymized", self.anonymized)):
            for i, im in enumerate(images):
                im = np.asarray(im)
                if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                    raise ValueError(
                        f"TrackSheet {self.track_id}: {row}[{i}] expects an H×W×3 uint8 RGB "
                        f"thumbnail; got shape {im.shape}, dtype {im.dtype}"
                    )
                if shape is None:
                    shape = im.shape
                elif im.shape != shape:
                    raise ValueError(
                        f"TrackSheet {self.track_id}: all thumbnails must be the same size; "
                        f"{row}[{i}] is {im.shape}, the first is {shape}. Resize when cropping."
                    )

    def __len__(self) -> int:
        return len(self.frames)


Thumb = tuple[int, np.ndarray]  # (frame, H×W×3 uint8 RGB crop)


@dataclass
class AuditThumbnails:
    """Crops of the faces the report lists apart, each (frame, RGB crop), bounded in number.

    leaks: the leaked face (original crop); suspects: original and output side by side, so the
    reader sees whether the claimed cover holds a face; not_judgeable: the original faces left
    out of re-ID (too dark or flat to carry an identity).
    """

    leaks: list[Thumb] = field(default_factory=list)
    suspects: list[Thumb] = field(default_factory=list)
    not_judgeable: list[Thumb] = field(default_factory=list)
