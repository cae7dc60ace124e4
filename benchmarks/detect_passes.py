"""Where the detect stage's time goes: each recall pass, timed alone, on the clips the speed targets name.

    python benchmarks/detect_passes.py [CLIP ...] [--frames N] [--repeat N]

The host path of `MultiPassDetector` (RetinaFace on ONNX Runtime, batches of `--batch-size`'s
default), one clip at a time, frames decoded first so only detection is timed. Each look is
timed by wrapping the pass plan's pixel and detector calls (`_HostPixels`), so the numbers are
those of the code the run executes: per look, ms per frame of the clip (a look that runs on
some frames only, the dark one, is divided by all frames); `pixels` is the padding, brightening,
luminance and frame copies together. Peers in the same run: what issue 30 changed, as it
was before (`time_changes`). Best of `--repeat` per row.
End-to-end stage times, with the decoder and encoder: benchmarks/throughput.py.
Writes benchmarks/results/detect_passes.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections import defaultdict

import cv2
import numpy as np

from common import clips, machine, viewed_frames, write

from pipeline.detect.recall import SETTINGS, MultiPassDetector, _HostPixels, enhance, gamma_table, luma
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.run.config import RunConfig

BATCH = RunConfig().batch_size


class TimedPixels(_HostPixels):
    """The run's host pixel ops, each call's time added to `ms` under its look's name."""

    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)

    def _timed(self, key, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.ms[key] += (time.perf_counter() - t) * 1000
        return out

    def dark(self, images, below):
        return self._timed("pixels", super().dark, images, below)

    def padded(self, images, plan):
        return self._timed("pixels", super().padded, images, plan)

    def flip(self, images):
        return self._timed("pixels", super().flip, images)

    def pick(self, images, picked):
        return self._timed("pixels", super().pick, images, picked)

    def brighten(self, images, kind, gamma):
        return self._timed("pixels", super().brighten, images, kind, gamma)

    def detect(self, det, images, long_side, look):
        return self._timed(look, super().detect, det, images, long_side, look)


def time_setting(frames, setting: str, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        detector = MultiPassDetector([RetinaFaceDetector()], SETTINGS[setting])
        px = TimedPixels()
        t = time.perf_counter()
        for i in range(0, len(frames), BATCH):
            detector._passes(px, frames[i:i + BATCH], weak=True)
        total = (time.perf_counter() - t) * 1000
        if best is None or total < best[0]:
            best = (total, dict(px.ms))
    n = len(frames)
    return {"total": round(best[0] / n, 2), **{k: round(v / n, 2) for k, v in sorted(best[1].items())}}


def time_changes(frames, repeat: int) -> list[dict]:
    """What issue 30 changed, before and now in the same run: the padded look (the full frame
    padded, then shrunk by the detector; now shrunk, then padded), the mirrored copy (NumPy's
    copy of a reversed view; now cv2.flip) and the gamma copy (NumPy indexing; now cv2.LUT)."""
    det = MultiPassDetector([RetinaFaceDetector()], SETTINGS["full"])
    rf, p = det.detectors[0], det.passes
    h, w = frames[0].shape[:2]
    pad = int(round(p.pad * max(h, w)))
    old_size = max(32, int(round(rf.long_side(h, w) * (max(h, w) + 2 * pad) / max(h, w) * p.pad_scale)))
    plan, px, table = det._pad_plan(rf, h, w), _HostPixels(), gamma_table(p.gamma)
    ops = {
        "padded look": (lambda b: rf.detect([cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)) for im in b],
                                            long_side=old_size),
                        lambda b: rf.detect(px.padded(b, plan), long_side=plan.long_side)),
        "mirrored copy": (lambda b: [np.ascontiguousarray(im[:, ::-1]) for im in b], px.flip),
        "gamma copy": (lambda b: [table[im] for im in b], lambda b: [enhance(im, "gamma", p.gamma) for im in b]),
    }
    rows = []
    for op, fns in ops.items():
        row = {"op": op}
        for when, fn in zip(("before_ms", "now_ms"), fns):
            best = None
            for _ in range(repeat):
                t = time.perf_counter()
                for i in range(0, len(frames), BATCH):
                    fn(frames[i:i + BATCH])
                ms = (time.perf_counter() - t) * 1000 / len(frames)
                best = ms if best is None else min(best, ms)
            row[when] = round(best, 2)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--frames", type=int, default=120, help="frames per clip (default 120)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    out = []
    for clip in clips(args.clips):
        frames = [img for i, img in viewed_frames(clip) if i < args.frames]
        h, w = frames[0].shape[:2]
        dark = sum(luma(im) < SETTINGS["fast"].dark_luma for im in frames)
        row = {"clip": clip.name, "frames": len(frames), "size": f"{w}x{h}", "dark_frames": dark,
               "settings": {s: time_setting(frames, s, args.repeat) for s in ("plain", "fast", "full")},
               "changed_by_issue_30": time_changes(frames, args.repeat)}
        out.append(row)
        print(row, flush=True)
    data = {"command": "python benchmarks/detect_passes.py" + (f" --frames {args.frames}" if args.frames != 120 else ""),
            "date": datetime.date.today().isoformat(), "machine": machine(), "batch": BATCH, "rows": out}
    write("detect_passes", data, markdown(data))
    return 0


def markdown(data: dict) -> str:
    md = ["# The detect stage per recall pass", "", f"Command: `{data['command']}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; {data['date']}", "",
          f"Host path (RetinaFace mnet0.25, ONNX Runtime), batches of {data['batch']}, decoded frames in memory; ms per frame, "
          "best of the repeats. A look on some frames only (dark, on frames below the dark threshold) is divided by all frames. "
          "`pixels`: padding, brightening, luminance and frame copies together.", ""]
    for r in data["rows"]:
        md += [f"## {r['clip']} ({r['size']}, {r['frames']} frames, {r['dark_frames']} dark)", "",
               "| setting | total | per look |", "| --- | --- | --- |"]
        for s, t in r["settings"].items():
            looks = ", ".join(f"{k} {v}" for k, v in t.items() if k != "total")
            md.append(f"| {s} | {t['total']} | {looks} |")
        md += ["", "What issue 30 changed, ms per frame before and now, same run: " + "; ".join(
            f"{c['op']} {c['before_ms']} → {c['now_ms']}" for c in r["changed_by_issue_30"]) + ".", ""]
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
