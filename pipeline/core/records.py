"""Typed records that flow one way through the pipeline.

Each stage takes one of these and returns the next, so no stage needs to know how the
one before it works: frames → detections → tracked faces → anonymized frames.
Arrays are per field (supervision's layout) so a frame with no face has fixed empty shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One decoded picture with its exact timing.

    `pts` is in units of `time_base` (a Fraction), as in the container: VFR survives only
    if nobody rounds through a float fps. `audio` holds the audio packets the demuxer read
    since the previous frame, so they travel in order to the muxer without a second read.
    """

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray  # H×W×3 uint8, RGB
    audio: list = field(default_factory=list)
    # Per-stage extras (as supervision's `Detections.data`): "captured", the time.monotonic()
    # when a live source delivered it (the run loop's latency).
    data: dict = field(default_factory=dict)
    # On the device path (--device), the same pixels as an (H, W, 3) uint8 torch tensor on the
    # device: set once by the detect stage (its upload), read by identity, edited and written
    # back into `image` by the anonymize stage, and dropped by `FaceOps.editing` only. None on the host path.
    tensor: Any = None

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


@dataclass
class Detections:
    """Faces found in one frame, in full-resolution pixel coordinates of the picture as
    displayed (see `VideoInfo`: a rotated clip's frames are turned upright before detection)."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32: right eye, left eye, nose, mouth right, mouth left
    # Per-face extras, one (N, …) array each, kept through `subset` (supervision's
    # `Detections.data`): "weak", see `weak`.
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.landmarks.shape != (n, 5, 2):
            raise ValueError(
                "Detections expects boxes (N, 4), scores (N,), landmarks (N, 5, 2); got "
                f"{self.boxes.shape}, {self.scores.shape}, {self.landmarks.shape}"
            )
        for key, values in self.data.items():
            if len(values) != n:
                raise ValueError(f"Detections.data[{key!r}] must have one entry per face (N = {n}), got {len(values)}")

    @property
    def weak(self) -> np.ndarray | None:
        """(N,) bool: scored below the detector's threshold, given only so that a face a live
        track follows is not lost (pipeline.detect.recall, `track_score`); the tracker keeps
        those that continue a confirmed track and drops the rest. None: every face is a detection."""
        return self.data.get("weak")

    def subset(self, keep: np.ndarray) -> "Detections":
        """The faces `keep` (a bool mask or indices) selects, their extras included."""
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep], {k: v[keep] for k, v in self.data.items()})

    @classmethod
    def empty(cls) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def largest(self) -> int:
        """Index of the biggest face: the subject of a portrait photo (galleries, training sets)."""
        if not len(self):
            raise ValueError("no face to choose from")
        return int(np.argmax((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])))


@dataclass
class Face:
    """A face to anonymize on one frame: a detection, a live track's prediction, or both.

    `track_id` is None while the tracker has not confirmed the track yet (hysteresis);
    the face is anonymized all the same. `predicted` means the detector missed it on this
    frame and the box is the tracker's estimate.
    """

    box: np.ndarray  # (4,) x1, y1, x2, y2, smoothed
    landmarks: np.ndarray  # (5, 2): the detector's when detected on this frame, else the tracker's estimate
    score: float
    track_id: int | None
    predicted: bool
    cover: np.ndarray  # (4,) the box the anonymizer must cover (raw ∪ smoothed, grown when predicted)
    missed_frames: int = 0
    candidate_id: int | None = None  # the tracker's id for the track while it is unconfirmed
    person_id: int | None = None
    source_id: str | None = None
    source_latent: np.ndarray | None = None  # the fake identity's SimSwap latent (swap mode)
    # What was done to it: "blur" / "pixelate" / "mask" / "swap", or "blur:<reason>" when a
    # swap was wanted but could not run (too_small, profile, unconfirmed, engine_error, …);
    # a stronger cover than the run's where its own was too weak for a dim face ("mask", "mask:<reason>").
    outcome: str | None = None
    detection: int | None = None  # index of this frame's detection it came from; None when predicted
    data: dict = field(default_factory=dict)  # per-stage extras, e.g. "repaired": why its numbers were fixed


@dataclass
class TrackedFrame:
    """A frame with the faces that must be anonymized on it."""

    frame: Frame
    faces: list[Face]
    detections: int  # raw detector hits on this frame, for the report
    shot_cut: bool = False  # this frame starts a new shot: every earlier track ended
    repairs: dict = field(default_factory=dict)  # reason → count of bad numbers repaired (pipeline.track.guard)


@dataclass
class VideoInfo:
    """What the decoder learned about the input, used by the encoder and the report.

    Two orientations: `width`/`height` are the *stored* pixels (what the encoder must get back,
    so the output keeps the input's stored orientation), while every `Frame.image` between
    reader and writer is the *displayed* picture, `display_width`×`display_height`: the
    stored pixels turned by the display matrix, as a viewer (ffplay, VLC, a browser) sees
    them. Detection, tracking, anonymization, boxes and the audit all work on that picture,
    because a face must be found the way a viewer would see it, not lying on its side.
    """

    path: str
    width: int  # stored, as encoded
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    frames_hint: int  # container's frame count, 0 when unknown
    duration_s: float | None
    codec: str
    pix_fmt: str | None
    audio_streams: int
    format_name: str
    # The display matrix (pipeline.io.orientation.read_orientation): the quarter turn a viewer
    # sees, in degrees counterclockwise (an iPhone portrait clip: -90), whether the turned
    # picture is then mirrored left-right (front cameras, editors), and the matrix's 9 numbers,
    # written back unchanged so that the output displays as the input did.
    rotation: int = 0
    mirror: bool = False
    display_matrix: tuple[int, ...] | None = None
    # Written back unchanged: pixel shape (anamorphic DV/broadcast, 4:3 stored as 480x360 of
    # non-square pixels) and the colour tags, as FFmpeg's numbers (primaries, transfer,
    # matrix, range; 2/2/2/0 = unspecified). The RGB frames are decoded with the input's
    # matrix and range and encoded back with them, so the colours round-trip.
    sample_aspect_ratio: Fraction | None = None
    color: tuple[int, int, int, int] = (2, 2, 2, 0)

    @property
    def turns(self) -> int:
        """Quarter turns counterclockwise (np.rot90's k, 0..3) from stored to displayed.

        A rotation that is not a multiple of 90 (rare) is rounded to the nearest quarter turn;
        the reader warns about it. A face tilted by at most 45° is still far closer to what the
        detector knows than one turned by 90°.
        """
        return round(self.rotation / 90) % 4

    @property
    def display_width(self) -> int:
        return self.height if self.turns % 2 else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.turns % 2 else self.height
