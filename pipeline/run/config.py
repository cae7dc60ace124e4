"""What one run is asked to do: the mode and every stage's settings, validated when built."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipeline.anonymize.swap import SwapConfig
from pipeline.core.errors import InvalidInputError
from pipeline.detect.retinaface import DEFAULT_DETECT_SIZE, DEFAULT_THRESHOLD
from pipeline.identity.stage import IdentityConfig
from trackers import TrackerConfig

MODES = ("auto", "swap", "blur", "pixelate", "mask")


@dataclass
class RunConfig:
    mode: str = "auto"
    detect_size: int | None = DEFAULT_DETECT_SIZE  # None: the video's long side, clamped (detector.py)
    threshold: float = DEFAULT_THRESHOLD
    batch_size: int = 4
    max_frames: int | None = None
    keep_metadata: bool = False
    crf: int = 20
    preset: str = "veryfast"
    queue_size: int = 8
    region_scale: float = 1.3
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # Swap mode: SimSwap generator checkpoint, SimSwap ArcFace (arcface_checkpoint.tar), gallery
    # (a file from `gallery build`, or a folder of photos built in memory).
    generator: str | None = None
    arcface: str | None = None
    gallery: str | None = None
    # Identity: which embedder links tracks to persons and picks sources; where a fleet's
    # person registry lives (only with identity.scope == "fleet").
    embedder: str = "dlib"
    embedder_model: str | None = None
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    person_registry: str | None = None
    person_attributes: str | None = None  # --person-attributes: JSON of known genders / age groups
    swap: SwapConfig = field(default_factory=SwapConfig)
    swap_backend: str = "onnxruntime"  # the simswap entries' backends (engines.models); 33% faster than torch on CPU (benchmarks)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if (self.identity.scope == "fleet") != bool(self.person_registry):
            raise ValueError("--identity-scope fleet and --person-registry FILE go together (the registry holds biometric data: it is never written otherwise)")
        if self.person_attributes and not self.gallery:
            raise ValueError("--person-attributes needs --gallery (it steers which fake identity a person gets)")


def input_files(config: RunConfig) -> list[str]:
    """The files a run reads besides the video: no output may land on one of them."""
    return [p for p in (config.gallery, config.generator, config.arcface, config.embedder_model, config.person_attributes) if p]


def swap_missing(config: RunConfig) -> list[str]:
    """What swap mode still needs; empty when it can run."""
    missing = []
    for flag, path in (("--generator", config.generator), ("--arcface", config.arcface), ("--gallery", config.gallery)):
        if not path:
            missing.append(f"{flag} (not given)")
        elif not os.path.exists(path):
            missing.append(f"{flag} ({path} not found)")
    return missing


def resolve_mode(config: RunConfig) -> tuple[str, str | None]:
    """`auto` is swap when a generator, its ArcFace and a gallery are all there, else blur."""
    if config.mode == "swap":
        missing = swap_missing(config)
        if missing:
            raise InvalidInputError(f"--mode swap needs a SimSwap generator, its ArcFace and a gallery; missing: {', '.join(missing)}")
        return "swap", None
    if config.mode != "auto":
        return config.mode, None
    missing = swap_missing(config)
    if not missing:
        return "swap", "mode auto: swap (SimSwap generator, ArcFace and gallery found)"
    return "blur", f"mode auto: blur (swap needs {', '.join(missing)}; see: python run_pipeline.py models list)"
