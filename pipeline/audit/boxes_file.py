"""Reads the run's boxes export (`--boxes B.jsonl`, written by pipeline.io.report.BoxesWriter).

The audit takes from it what the pipeline claims it anonymized on each frame (the cover
boxes) and, when it is given, the original faces with the pipeline's own track ids, so the
audit and the run talk about the same tracks. A malformed file is an input error, never a
silently shorter claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import InputNotFoundError, InvalidInputError


@dataclass(frozen=True)
class ClaimedFace:
    track_id: int | None
    box: np.ndarray  # (4,)
    cover: np.ndarray  # (4,) the region the anonymizer was asked to cover
    landmarks: np.ndarray  # (5, 2)
    predicted: bool
    outcome: str | None


def read_boxes(path: str) -> dict[int, list[ClaimedFace]]:
    """Frame index → the faces the run anonymized on it."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError as e:
        raise InputNotFoundError(f"boxes file not found: {path}") from e
    except OSError as e:
        raise InvalidInputError(f"boxes file unreadable ({e.strerror}): {path}") from e
    frames: dict[int, list[ClaimedFace]] = {}
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                faces = [
                    ClaimedFace(
                        track_id=None if f.get("track_id") is None else int(f["track_id"]),
                        box=np.array(f["box"], np.float32).reshape(4),
                        cover=np.array(f.get("cover", f["box"]), np.float32).reshape(4),
                        landmarks=np.array(f["landmarks"], np.float32).reshape(5, 2),
                        predicted=bool(f.get("predicted", False)),
                        outcome=f.get("anonymized_by"),
                    )
                    for f in row["faces"]
                ]
                frames[int(row["frame"])] = faces
            except (ValueError, KeyError, TypeError) as e:
                raise InvalidInputError(f"boxes file line {n} is not a boxes record ({type(e).__name__}: {e}): {path}") from e
    return frames
