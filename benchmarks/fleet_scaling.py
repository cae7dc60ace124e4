"""Fleet scaling on this machine: 1 vs 2 Ray workers, against a plain shell loop, same run.

    python benchmarks/fleet_scaling.py [--videos N] [--clip CLIP]

The same N copies of a clip (default: the shared 360p clip, else a synthetic 360p clip) go
through (a) a shell-style loop, one `run_pipeline.py` process per video (models load every
time), (b) the fleet with 1 worker of 2 cores, (c) the fleet with 2 workers of 1 core each.
Wall time includes Ray's start-up; `processing` is the fleet's own time from the first video
handed to a worker to the last result (the report's processing_s). Scaling efficiency is
fps(2 workers) / (2 × fps(1 worker)): 1.0 would be linear. Blur mode (no user weights needed).
Writes benchmarks/results/fleet_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SHARED_CLIP, machine, write


def _clip(arg: str | None, work: Path) -> Path:
    if arg:
        return Path(arg)
    if SHARED_CLIP.exists():
        return SHARED_CLIP
    from pipeline.synthetic import make_video

    path = work / "synthetic_360p.mp4"
    make_video(str(path), width=640, height=360, frames=275, face_height=0.35)
    return path


def _cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *map(str, args)], capture_output=True, text=True)
    return time.perf_counter() - t, res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--clip")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="anonswap-fleet-bench-"))
    try:
        clip = _clip(args.clip, work)
        src = work / "in"
        src.mkdir()
        for i in range(args.videos):
            os.link(clip, src / f"v{i:02d}{clip.suffix}") if _same_fs(clip, src) else shutil.copy(clip, src / f"v{i:02d}{clip.suffix}")
        rows = []

        t = time.perf_counter()
        frames = 0
        for v in sorted(src.iterdir()):
            wall, res = _cli(v, "-o", work / f"loop_{v.name}", "--mode", "blur", "--report", work / "loop.json", "-q")
            if res.returncode != 0:
                raise RuntimeError(res.stderr)
            frames += json.loads((work / "loop.json").read_text())["video"]["frames_out"]
        wall = time.perf_counter() - t
        rows.append({"setup": "shell loop, 1 process per video", "workers": 1, "wall_s": round(wall, 2),
                     "processing_s": None, "frames": frames, "fps_wall": round(frames / wall, 2), "fps_processing": None})

        for workers, cpus in ((1, 2), (2, 1)):
            out = work / f"fleet{workers}"
            wall, res = _cli(src, "-o", out, "--mode", "blur", "--workers", workers, "--worker-cpus", cpus, "-q")
            if res.returncode != 0:
                raise RuntimeError(res.stderr)
            f = json.loads((out / "fleet_report.json").read_text())["fleet"]
            rows.append({"setup": f"fleet, {workers} worker{'s' * (workers > 1)} × {cpus} core{'s' * (cpus > 1)}",
                         "workers": workers, "wall_s": round(wall, 2), "processing_s": f["processing_s"], "startup_s": f["startup_s"],
                         "frames": f["frames"], "fps_wall": round(f["frames"] / wall, 2), "fps_processing": f["processing_fps"]})
        one, two = rows[1], rows[2]
        eff = {
            "processing": round(two["fps_processing"] / (2 * one["fps_processing"]), 3),
            "wall": round(two["fps_wall"] / (2 * one["fps_wall"]), 3),
        }
        data = {"machine": machine(), "clip": str(clip), "videos": args.videos, "rows": rows, "scaling_efficiency_2_vs_1": eff,
                "command": "python benchmarks/fleet_scaling.py " + " ".join(argv or sys.argv[1:])}
        md = [f"# Fleet scaling ({args.videos} × {clip.name}, blur mode)", "",
              f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores. Command: `{data['command'].strip()}`", "",
              "| setup | wall s | processing s | frames | fps (wall) | fps (processing) |", "|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['setup']} | {r['wall_s']} | {r['processing_s'] if r['processing_s'] is not None else '–'} | {r['frames']} | "
                      f"{r['fps_wall']} | {r['fps_processing'] if r['fps_processing'] is not None else '–'} |")
        md += ["", f"Scaling efficiency, 2 workers vs 1 (fps₂ / 2·fps₁): processing {eff['processing']}, wall {eff['wall']}.", ""]
        write("fleet_scaling", data, "\n".join(md))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


if __name__ == "__main__":
    sys.exit(main())
