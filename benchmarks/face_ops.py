"""Pixel work around the generator, host OpenCV path vs the torch data path, same frames, same run.

    python benchmarks/face_ops.py [--size 1080] [--faces 4] [--frames 8] [--repeat 5]

Per batch of `--frames` frames with `--faces` faces each: crops of every face (224), paste-back
of every face, blur of every face; the torch path also pays its one upload and one download
per batch. The generator is left out (benchmarks/swap_throughput.py measures it), so this is
the overhead the data path adds per frame. Here both run on this machine's CPU: what it says is
what the torch path costs where there is no GPU, and it is the harness the GPU work extends.
Writes benchmarks/results/face_ops.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, write


def frames_and_faces(height: int, n_frames: int, n_faces: int):
    import cv2
    from skimage import data

    from pipeline.core.alignment import POSE_TEMPLATES_112, fit_all

    width = height * 16 // 9
    base = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    lms, covers = [], []
    for _ in range(n_frames):
        per = []
        for k in range(n_faces):
            scale = height / 1080 * rng.uniform(1.2, 2.5)  # faces ~130-270 px wide at 1080p
            x = (k + 0.5) * width / n_faces - 56 * scale + rng.uniform(-20, 20)
            y = height / 2 - 56 * scale + rng.uniform(-50, 50)
            per.append(POSE_TEMPLATES_112[2] * scale + [x, y])
        lms.append(np.array(per, np.float32))
        covers.append([np.array([p[:, 0].min() - 20, p[:, 1].min() - 30, p[:, 0].max() + 20, p[:, 1].max() + 20], np.float32) for p in per])
    frames = [np.ascontiguousarray(np.roll(base, 7 * i, axis=1)) for i in range(n_frames)]
    return frames, fit_all(lms, 224), covers


def time_path(ops, frames, fits, covers, repeat: int) -> dict:
    from pipeline.anonymize.cover import FaceCover
    from pipeline.core.records import Frame

    keep = np.arange(len(fits.ok))
    blur = FaceCover("blur")
    items = [(fi, box) for fi, per in enumerate(covers) for box in per]
    steps = {"upload": [], "crops": [], "paste": [], "blur": [], "download": []}
    for r in range(repeat + 1):  # the first round warms up (allocations, kernels) and is not counted
        batch = [Frame(i, i, 1, f.copy()) for i, f in enumerate(frames)]
        t = {}
        t0 = time.perf_counter()
        pixels = ops.load(batch)
        t["upload"] = time.perf_counter()
        crops = ops.crops(pixels, fits, keep, 224)
        t["crops"] = time.perf_counter()
        ops.paste(pixels, crops, fits.frame_index, fits.matrices)
        t["paste"] = time.perf_counter()
        ops.cover(pixels, items, blur)
        t["blur"] = time.perf_counter()
        ops.store(pixels, batch)
        t["download"] = time.perf_counter()
        if r:
            prev = t0
            for k in steps:
                steps[k].append(t[k] - prev)
                prev = t[k]
    ms = {k: round(1000 * float(np.median(v)), 2) for k, v in steps.items()}
    total = sum(ms.values())
    return {"ms_per_batch": ms, "total_ms_per_batch": round(total, 2), "ms_per_frame": round(total / len(frames), 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1080, help="frame height; width is 16:9")
    p.add_argument("--faces", type=int, default=4)
    p.add_argument("--frames", type=int, default=8, help="frames per batch")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import torch

    from pipeline.anonymize.face_ops import HostFaceOps, TorchFaceOps

    frames, fits, covers = frames_and_faces(args.size, args.frames, args.faces)
    results = {
        "host (OpenCV)": time_path(HostFaceOps(), frames, fits, covers, args.repeat),
        "torch (cpu)": time_path(TorchFaceOps("cpu"), frames, fits, covers, args.repeat),
    }
    data = {"command": f"python benchmarks/face_ops.py --size {args.size} --faces {args.faces} --frames {args.frames} --repeat {args.repeat}",
            "machine": {**machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
            "frame": [args.size * 16 // 9, args.size], "faces_per_frame": args.faces, "frames_per_batch": args.frames,
            "results": results}
    steps = list(next(iter(results.values()))["ms_per_batch"])
    lines = [f"# Face pixel ops: {args.size}p, {args.faces} faces/frame, {args.frames} frames/batch (median of {args.repeat})", "",
             f"`{data['command']}` on {data['machine']['cpu']} ({data['machine']['cores']} cores), torch {torch.__version__}.", "",
             "| path | " + " | ".join(f"{s} ms" for s in steps) + " | total ms/batch | ms/frame |",
             "|---|" + "---:|" * (len(steps) + 2)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(str(r["ms_per_batch"][s]) for s in steps) + f" | {r['total_ms_per_batch']} | {r['ms_per_frame']} |")
    lines += ["", "The generator is not in these numbers. No GPU was measured: the torch path's CUDA numbers are issue 7's.", ""]
    write("face_ops", data, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
