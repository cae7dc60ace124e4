"""End-to-end throughput: anonswap (default blur mode) vs deface on the same clips, same run.

    python benchmarks/throughput.py [CLIP ...] [--repeat N] [--no-deface] [--recall NAME ...] [--openvino]

Both are run as their command lines, so wall time includes start-up and model loading for
both. anonswap runs once per `--recall` setting (default: the default setting and `plain`,
the named faster one), so the price of the recall passes is measured against deface in the
same run; `--openvino` adds the default setting on `--backend openvino`. anonswap's report
adds per-stage busy time. Output facts (frames, size, audio) are checked for both, since
speed means little if frames or audio are lost. The decode + encode floor (our reader and
writer alone, `floor`) is measured in the same run: what no detector setting can beat.
Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, clips, machine, video_facts, write

from pipeline.detect.recall import DEFAULT_SETTING, SETTINGS


def run_timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - t, res


def bench_anonswap(clip: Path, work: Path, repeat: int, recall: str, backend: str = "auto") -> dict:
    best = None
    for _ in range(repeat):
        out, rep = work / f"anonswap_{recall}_{backend}_{clip.stem}.mp4", work / f"anonswap_{recall}_{backend}_{clip.stem}.json"
        wall, res = run_timed([sys.executable, str(ROOT / "run_pipeline.py"), str(clip), "-o", str(out), "--mode", "blur",
                               "--recall", recall, "--backend", backend, "--report", str(rep), "-q"])
        if res.returncode != 0:
            raise RuntimeError(f"anonswap failed on {clip}: {res.stderr}")
        report = json.loads(rep.read_text())
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": round(wall, 2), "report": report, "out": out}
    facts = video_facts(best["out"])
    tool = f"anonswap --recall {recall}" + (f" --backend {backend}" if backend != "auto" else " (default)" if recall == DEFAULT_SETTING else "")
    key = recall if backend == "auto" else f"{recall} --backend {backend}"
    return {"tool": tool, "recall": key, "wall_s": best["wall_s"], "fps_wall": round(best["report"]["video"]["frames_in"] / best["wall_s"], 2),
            "fps_pipeline": best["report"]["timing"]["fps"], "stages_ms": best["report"]["timing"]["stages_ms"],
            "faces_anonymized": best["report"]["faces"]["anonymized"], **facts}


def bench_deface(clip: Path, work: Path, repeat: int, input_frames: int) -> dict | None:
    exe = shutil.which("deface")
    if exe is None:
        return None
    best = None
    for _ in range(repeat):
        out = work / f"deface_{clip.stem}.mp4"
        wall, res = run_timed([exe, str(clip), "-o", str(out)])
        if res.returncode != 0:
            raise RuntimeError(f"deface failed on {clip}: {res.stderr[-2000:]}")
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": round(wall, 2), "out": out}
    facts = video_facts(best["out"])
    # fps over the *input's* frames: deface may write more frames than it read.
    return {"tool": "deface (defaults)", "wall_s": best["wall_s"], "fps_wall": round(input_frames / best["wall_s"], 2), **facts}


def floor(clip: str, out: str) -> None:
    """The decode + encode floor: our reader and writer at the run's settings, no detection."""
    from pipeline.io.video_reader import VideoReader
    from pipeline.io.video_writer import VideoWriter

    with VideoReader(clip) as reader:
        writer = VideoWriter(out, reader.info, audio_streams=reader.audio_streams, metadata=reader.metadata)
        for frame in reader.frames():
            writer.write(frame)
        writer.close()


def bench_floor(clip: Path, work: Path, repeat: int, input_frames: int) -> dict:
    best = None
    for _ in range(repeat):
        out = work / f"floor_{clip.stem}.mp4"
        wall, res = run_timed([sys.executable, __file__, "--floor", str(clip), str(out)])
        if res.returncode != 0:
            raise RuntimeError(f"the floor run failed on {clip}: {res.stderr[-2000:]}")
        best = wall if best is None else min(best, wall)
    return {"tool": "decode + encode floor", "wall_s": round(best, 2), "fps_wall": round(input_frames / best, 2), **video_facts(out)}


def main() -> int:
    if sys.argv[1:2] == ["--floor"]:
        floor(*sys.argv[2:4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="*")
    p.add_argument("--repeat", type=int, default=2, help="runs per tool and clip; the fastest is kept")
    p.add_argument("--no-deface", action="store_true")
    p.add_argument("--recall", nargs="+", choices=sorted(SETTINGS), default=sorted({DEFAULT_SETTING, "plain"}, key=list(SETTINGS).index),
                   help="anonswap's recall settings to measure (default: the default one and plain)")
    p.add_argument("--openvino", action="store_true", help="also the default setting on --backend openvino")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for clip in clips(args.clips):
            src = video_facts(clip)
            ours = [bench_anonswap(clip, work, args.repeat, recall) for recall in args.recall]
            if args.openvino:
                ours.append(bench_anonswap(clip, work, args.repeat, DEFAULT_SETTING, "openvino"))
            theirs = None if args.no_deface else bench_deface(clip, work, args.repeat, src["frames"])
            base = bench_floor(clip, work, args.repeat, src["frames"])
            rows.append({"clip": clip.name, "input": src, "anonswap": ours, "deface": theirs, "floor": base,
                         "speedup": {o["recall"]: round(o["fps_wall"] / theirs["fps_wall"], 2) for o in ours} if theirs else None,
                         "floor_ratio": {o["recall"]: round(base["fps_wall"] / o["fps_wall"], 2) for o in ours}})
    data = {"command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]), "machine": machine(), "results": rows}
    md = ["# Throughput: anonswap vs deface", "", f"Command: `{data['command'].strip()}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, {data['machine']['memory_gib']} GiB; "
          f"versions {data['machine']['versions']}", "",
          "fps = input frames / wall time of the whole command (start-up and model loading included, best of the runs). "
          "Floor: PyAV decode → RGB → x264 through anonswap's own reader and writer at the run's settings, no detection "
          "(video only), run as a command the same way.", "",
          "| clip | input (frames, size, audio) | tool | fps | output frames | output size | audio streams |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        i = r["input"]
        for t in [*r["anonswap"], r["deface"], r["floor"]]:
            if t is None:
                continue
            md.append(f"| {r['clip']} | {i['frames']}, {i['width']}x{i['height']}, {i['audio_streams']} | {t['tool']} | "
                      f"{t['fps_wall']} | {t['frames']} | {t['width']}x{t['height']} | {t['audio_streams']} |")
    md += ["", "| clip | anonswap --recall | speedup (anonswap fps / deface fps) | floor fps / anonswap fps "
           "| anonswap stage busy time, ms (threads overlap) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        for o in r["anonswap"]:
            md.append(f"| {r['clip']} | {o['recall']} | {(r['speedup'] or {}).get(o['recall'])} | {r['floor_ratio'][o['recall']]} | {o['stages_ms']} |")
    write("throughput", data, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
