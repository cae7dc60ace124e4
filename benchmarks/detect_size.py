"""Detector working size (long side): speed vs recall, to choose the default.

    python benchmarks/detect_size.py [CLIP ...] [--sizes 320 480 640 800 960 1280]

Recall, on every frame, is measured against ground truth for synthetic clips (their boxes
are saved beside them) and, for real clips, against the faces that at least half of the
sizes agree on (IoU >= 0.4) — no size is favoured as the reference.
Writes benchmarks/results/detect_size.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from common import clips, ground_truth_path, machine, synthetic, viewed_frames, write

from pipeline.detect.retinaface import RetinaFaceDetector
from trackers.norfair_tracker import boxes_iou


def _consensus(per_size: list[list]) -> list[np.ndarray]:
    """Per frame, boxes found (IoU >= 0.4) by at least half of the sizes."""
    out = []
    for dets in zip(*per_size):
        pool = [b for d in dets for b in d.boxes]
        kept = []
        for b in pool:
            votes = sum(bool(len(d) and (boxes_iou(b[None], d.boxes) >= 0.4).any()) for d in dets)
            if votes * 2 >= len(dets) and not any(boxes_iou(b[None], k[None])[0, 0] >= 0.4 for k in kept):
                kept.append(b)
        out.append(np.array(kept, np.float32).reshape(-1, 4))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="*")
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 480, 640, 800, 960, 1280])
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    sizes = sorted(args.sizes)
    rows = []
    # Small faces at low resolution too: the case a lower working size would lose first.
    todo = clips(args.clips) + ([] if args.clips else [synthetic(640, 360, 0.15, "small_faces")])
    for clip in todo:
        frames = [img for _, img in viewed_frames(clip)]
        per_size = {}
        for size in sizes:
            det = RetinaFaceDetector(detect_size=size)
            det.detect(frames[: args.batch])  # warm-up
            t = time.perf_counter()
            found = []
            for i in range(0, len(frames), args.batch):
                found += det.detect(frames[i : i + args.batch])
            per_size[size] = (time.perf_counter() - t, found)
        gt = ground_truth_path(clip)
        if gt.exists():
            ref, reference = [b[None, :] for b in np.load(gt)], "ground truth"
        else:
            ref, reference = _consensus([per_size[s][1] for s in sizes]), "consensus of sizes"
        n_ref = sum(len(r) for r in ref)
        for size in sizes:
            dt, found = per_size[size]
            hit = sum(int((boxes_iou(r, f.boxes).max(axis=1) >= 0.4).sum()) if len(r) and len(f) else 0 for r, f in zip(ref, found))
            rows.append({"clip": clip.name, "size": size, "ms_per_frame": round(1000 * dt / len(frames), 2),
                         "faces": sum(len(f) for f in found), "reference": reference, "reference_faces": n_ref,
                         "recall": round(hit / max(1, n_ref), 3)})
    data = {"command": "python benchmarks/detect_size.py " + " ".join(sys.argv[1:]), "machine": machine(), "results": rows}
    md = ["# Detector working size", "", f"Command: `{data['command'].strip()}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores", "",
          "Threshold 0.5; a face counts as found at IoU >= 0.4 with the reference.", "",
          "| clip | long side | ms / frame (batch of 4) | faces found | reference (faces) | recall |", "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['clip']} | {r['size']} | {r['ms_per_frame']} | {r['faces']} | {r['reference']} ({r['reference_faces']}) | {r['recall']} |" for r in rows]
    write("detect_size", data, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
