"""Live latency on CPU at 360p: capture → output, through a real RTSP server on loopback.

    python benchmarks/live_latency.py [--frames N] [--clip CLIP]

The clip (default: the shared 640×360 clip, else a synthetic 360p clip) is served in a loop
by GStreamer's RTSP server (tests/rtsp_server.py, Debian packages, see docs/live.md) at its own
frame rate. Measured in the same run:
- `passthrough`: our capture and encoder alone (LiveSource → FileSink, no detection): the
  floor of the I/O path on this machine;
- `anonswap blur`: the real command line, default settings (`--max-latency-ms 1000`);
- `anonswap blur, 200 ms budget`: the same with `--max-latency-ms 200`.
Latency is from the moment a frame is decoded off the network to the moment its encoded
packet is muxed (x264 tune=zerolatency); `added` is anonswap's p50 minus passthrough's.
Writes benchmarks/results/live_latency.{json,md}.
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

from common import ROOT, SHARED_CLIP, machine, write

sys.path.insert(0, str(ROOT / "tests"))


def _clip(arg, work: Path) -> Path:
    if arg:
        return Path(arg)
    if SHARED_CLIP.exists():
        return SHARED_CLIP
    from pipeline.synthetic import make_video

    path = work / "synthetic_360p.mp4"
    make_video(str(path), width=640, height=360, frames=275, face_height=0.35, audio=False)
    return path


def passthrough(url: str, out: Path, frames: int) -> dict:
    from pipeline.run.loop import LatencyStats
    from pipeline.live.sinks import FileSink
    from pipeline.live.source import LiveSource

    src = LiveSource(url).open()
    lat = LatencyStats()
    sink = FileSink(str(out), src.info, crf=20, preset="veryfast")
    try:
        for frame in src.frames():
            sink.write(frame)
            lat.add((time.monotonic() - frame.data["captured"]) * 1000)
            if sink.frames_written >= frames:
                break
        sink.close()
    finally:
        src.close()
    return {"latency_ms": lat.to_dict(), "frames_out": sink.frames_written, "dropped": src.dropped}


def anonswap(url: str, out: Path, frames: int, *extra) -> dict:
    rep = out.with_suffix(".json")
    t = time.perf_counter()
    res = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), url, "-o", str(out), "--mode", "blur",
                          "--max-frames", str(frames), "--report", str(rep), "-q", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    r = json.loads(rep.read_text())
    lv = r["live"]
    return {"latency_ms": lv["latency_ms"], "frames_out": lv["frames_out"], "dropped": lv["dropped"]["total"],
            "stages_ms_per_frame":
            {k: round(v / lv["frames_out"], 2) for k, v in r["timing"]["stages_ms"].items()}, "process_wall_s": round(wall, 2)}


def main(argv=None) -> int:
    from rtsp_harness import RtspServer, unavailable_reason

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--clip")
    args = p.parse_args(argv)
    if unavailable_reason():
        print(f"cannot run: {unavailable_reason()}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="anonswap-live-bench-"))
    try:
        clip = _clip(args.clip, work)
        import av

        with av.open(str(clip)) as c:
            vs = c.streams.video[0]
            size, rate = (vs.codec_context.width, vs.codec_context.height), float(vs.average_rate)
        rows = {}
        with RtspServer(clip, loop=True) as cam:
            rows["passthrough"] = passthrough(cam.url, work / "pass.mp4", args.frames)
            rows["anonswap blur"] = anonswap(cam.url, work / "blur.mp4", args.frames)
            rows["anonswap blur, 200 ms budget"] = anonswap(cam.url, work / "blur200.mp4", args.frames, "--max-latency-ms", "200")
        floor = rows["passthrough"]["latency_ms"]["p50"]
        for name, r in rows.items():
            r["added_p50_ms"] = None if name == "passthrough" else round(r["latency_ms"]["p50"] - floor, 1)
        data = {"machine": machine(), "clip": str(clip), "size": size, "stream_fps": rate, "frames": args.frames, "rows": rows,
                "command": "python benchmarks/live_latency.py " + " ".join(argv or sys.argv[1:])}
        md = [f"# Live latency, {size[0]}×{size[1]} at {rate:.2f} fps over RTSP on loopback ({clip.name}, CPU)", "",
              f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores. Command: `{data['command'].strip()}`", "",
              "| setup | p50 ms | p95 ms | p99 ms | max ms | added p50 ms | frames out | dropped |",
              "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lat = r["latency_ms"]
            md.append(f"| {name} | {lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} | {r['added_p50_ms'] if r['added_p50_ms'] is not None else '–'} | "
                      f"{r['frames_out']} | {r['dropped']} |")
        md += ["", "Per-frame stage busy time, anonswap blur (ms; capture is network-paced and not counted): "
               + ", ".join(f"{k} {v}" for k, v in rows["anonswap blur"]["stages_ms_per_frame"].items()), ""]
        write("live_latency", data, "\n".join(md))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
