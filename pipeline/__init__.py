"""anonswap pipeline: streaming video face anonymization.

    from pipeline import RunConfig, anonymize_video
    report = anonymize_video("in.mp4", "out.mp4", RunConfig(mode="blur"))

The subpackages follow the data flow, one stage per module:

    io.video_reader → detect → track (shot cuts + trackers.FaceTracker) → identity
        → anonymize (cover | swap) → io.video_writer

`core` holds the typed records, errors and the stage threads they all share; `run` wires the
stages for one video, `live` for a stream, `fleet` for many videos on Ray; `audit` measures a
result; `cli` is the command line. Names below are imported on first use, so `import pipeline`
(and `import trackers` / `import engines`, which need `pipeline.core`) load nothing else.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AnonswapError": "pipeline.core.errors",
    "InputNotFoundError": "pipeline.core.errors",
    "InvalidInputError": "pipeline.core.errors",
    "OutputError": "pipeline.core.errors",
    "Detections": "pipeline.core.records",
    "Face": "pipeline.core.records",
    "Frame": "pipeline.core.records",
    "TrackedFrame": "pipeline.core.records",
    "VideoInfo": "pipeline.core.records",
    "RunConfig": "pipeline.run.config",
    "anonymize_video": "pipeline.run.file",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
