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
    swap: SwapConfig = field(default_factory=SwapConfig)
    # --parsing-mask: SimSwap's --use_mask (keep the swap to the inner face; BiSeNet 79999_iter.pth)
    parsing_mask: bool = False
    parsing_model: str | None = None
    swap_backend: str = "onnxruntime"  # the simswap entries' backends (engines.models); 33% faster than torch on CPU (benchmarks)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.parsing_mask and self.mode not in ("auto", "swap"):
            raise ValueError(f"--parsing-mask shapes the swap; it does nothing with --mode {self.mode}")
        if (self.identity.scope == "fleet") != bool(self.person_registry):
            raise ValueError("--identity-scope fleet and --person-registry FILE go together (the registry holds biometric data: it is never written otherwise)")


def input_files(config: RunConfig) -> list[str]:
    """The files a run reads besides the video: no output may land on one of them."""
    parser = config.parsing_model if config.parsing_mask else None
    return [p for p in (config.gallery, config.generator, config.arcface, config.embedder_model, parser) if p]


def swap_missing(config: RunConfig) -> list[str]:
    """What swap mode still needs; empty when it can run."""
    missing = []
    needed = [("--generator", config.generator), ("--arcface", config.arcface), ("--gallery", config.gallery)]
    if config.parsing_mask:
        needed.append(("--parsing-model", config.parsing_model))
    for flag, path in needed:
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
            parser = " (and, with --parsing-mask, the face parser: python run_pipeline.py models fetch face-parsing)" if config.parsing_mask else ""
            raise InvalidInputError(f"--mode swap needs a SimSwap generator, its ArcFace and a gallery{parser}; missing: {', '.join(missing)}")
        return "swap", None
    if config.mode != "auto":
        return config.mode, None
    missing = swap_missing(config)
    if not missing:
        return "swap", "mode auto: swap (SimSwap generator, ArcFace and gallery found)"
    return "blur", f"mode auto: blur (swap needs {', '.join(missing)}; see: python run_pipeline.py models list)"
