"""Recall and speed per detector setting, and deface's, in one run: the table the defaults
(`--detector`, `--recall`) are chosen from.

    python benchmarks/recall.py [--every N] [--no-shared] [--settings retinaface:fast,...]

Cases, each through the real pipeline (PyAV decode and encode, the tracker, blur mode):
- synthetic clips with ground truth (pipeline.synthetic.make_case_video): a face cut by each
  of the four borders, a dark face (mean luminance ~20), a 16 px face in 1080p, a
  profile-like astronaut, and profile-like crops of the identity photos in ../shared;
  a frame counts as covered when >= 90% of the true face box lies inside what the anonymizer
  really changes (the feathered ellipse around each cover, alpha >= 0.5);
- the shared clip (../shared), every `--every`-th frame, against a pseudo ground truth: the
  faces at least two of three reference detectors agree on (IoU >= 0.4): RetinaFace at twice
  the clip's size with its mirror image, CenterFace likewise, and dlib's CNN face detector
  (mmod, from face_recognition_models). recall = share of those faces covered as above.
deface is measured on the same frames: its own CenterFace at its defaults (threshold 0.2,
native size), its ellipse at mask scale 1.3. Speed: anonswap's pipeline fps (the report's,
model loading excluded); deface: detection time alone (its full command line is timed by
benchmarks/throughput.py).
Writes benchmarks/results/recall.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from common import SHARED_CLIP, machine, viewed_frames, write

SETTINGS = ("retinaface:plain", "retinaface:fast", "retinaface:full", "centerface:fast", "ensemble:fast", "ensemble:full",
            "retinaface:max")
IDENTITY_PHOTOS = SHARED_CLIP.parents[1] / "faces" / "identities"
PROFILE_PHOTOS = ("obama.jpg", "biden.jpg", "rose_leslie1.jpg")
COVERED = 0.9


def anonymized_fraction(covers, truth, shape, scale: float = 1.3) -> float:
    from pipeline.anonymize.cover import face_region

    mask = np.zeros(shape, bool)
    for cover in covers:
        r = face_region(np.asarray(cover, np.float32), shape, scale=scale)
        if r is not None:
            mask[r.y0:r.y1, r.x0:r.x1] |= r.alpha >= 0.5
    x1, y1, x2, y2 = (int(round(v)) for v in truth)
    box = mask[max(0, y1):y2, max(0, x1):x2]
    return float(box.mean()) if box.size else 1.0


def frames_of(path: str, every: int = 1) -> list[np.ndarray]:
    return [img for _, img in viewed_frames(path, every)]


def run_anonswap(path: str, work: Path, detector: str, recall: str) -> tuple[list[dict], dict]:
    from pipeline import RunConfig, anonymize_video

    out, boxes = work / "out.mp4", work / "boxes.jsonl"
    report = anonymize_video(path, str(out), RunConfig(mode="blur", detector=detector, recall=recall), boxes_path=str(boxes),
                             progress=False, log=lambda m: None)
    return [json.loads(line) for line in boxes.read_text().splitlines()], report


class Deface:
    """deface's detector as its command line runs it (threshold 0.2, the frame's own size)."""

    def __init__(self):
        from deface.centerface import CenterFace

        self.cls = CenterFace
        self.nets: dict = {}

    def covers(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if (w, h) not in self.nets:
            self.nets[(w, h)] = self.cls(in_shape=(w, h), backend="onnxrt")
        dets, _ = self.nets[(w, h)](frame, threshold=0.2)
        return np.asarray(dets, np.float32).reshape(-1, 5)[:, :4]


def profile_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, head-and-shoulders crop, face box in it) from the identity photos."""
    from pipeline.detect.retinaface import RetinaFaceDetector

    det, out = RetinaFaceDetector(), []
    for name in PROFILE_PHOTOS:
        path = IDENTITY_PHOTOS / name
        if not path.exists():
            continue
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        d = det.detect([img])[0]
        if not len(d):
            continue
        x1, y1, x2, y2 = d.boxes[d.largest()]
        fw, fh = x2 - x1, y2 - y1
        cx1, cy1 = int(max(0, x1 - 0.5 * fw)), int(max(0, y1 - 0.35 * fh))
        cx2, cy2 = int(min(img.shape[1], x2 + 0.5 * fw)), int(min(img.shape[0], y2 + 0.6 * fh))
        out.append((Path(name).stem, img[cy1:cy2, cx1:cx2], np.array([x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1], np.float32)))
    return out


def synthetic_cases(work: Path) -> list:
    from pipeline.synthetic import CASES, make_case_video

    videos = [(c, make_case_video(str(work / f"{c}.mp4"), c)) for c in CASES]
    for name, face, box in profile_faces():
        videos.append((f"profile-{name}", make_case_video(str(work / f"profile-{name}.mp4"), "profile", face=face, face_box=box)))
    return videos


def reference_faces(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Per frame, the faces >= 2 of the 3 reference detectors agree on (their mean box)."""
    import dlib
    import face_recognition_models

    from engines.centerface import CenterFace
    from pipeline.detect.recall import fuse, iou, unflip
    from pipeline.detect.retinaface import RetinaFaceDetector

    rf, cf = RetinaFaceDetector(detect_size=2 * max(frames[0].shape[:2])), CenterFace(threshold=0.5)
    mmod = dlib.cnn_face_detection_model_v1(os.path.join(os.path.dirname(face_recognition_models.__file__), "models", "mmod_human_face_detector.dat"))
    out = []
    for img in frames:
        h, w = img.shape[:2]
        mirror = np.ascontiguousarray(img[:, ::-1])
        a = fuse([rf.detect([img])[0], unflip(rf.detect([mirror])[0], w)]).boxes
        big = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        b = fuse([cf.detect(big), unflip(cf.detect(np.ascontiguousarray(big[:, ::-1])), 2 * w)]).boxes / 2
        c = np.array([[r.rect.left(), r.rect.top(), r.rect.right(), r.rect.bottom()] for r in mmod(img, 0)], np.float32).reshape(-1, 4)
        sets = [x for x in (a, b, c)]
        faces = []
        for k, boxes in enumerate(sets):
            for box in boxes:
                votes = 1 + sum(bool(len(o)) and iou(box[None], o).max() >= 0.4 for j, o in enumerate(sets) if j != k)
                if votes >= 2 and not any(iou(box[None], np.array([f]))[0, 0] >= 0.4 for f in faces):
                    faces.append(box)
        out.append(np.array(faces, np.float32).reshape(-1, 4))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--every", type=int, default=5, help="shared clip: score every N-th frame (default 5)")
    p.add_argument("--no-shared", action="store_true")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--cases", default="", help="comma-separated subset of the synthetic cases")
    args = p.parse_args()
    settings = [tuple(s.split(":")) for s in args.settings.split(",")]
    deface = Deface()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = synthetic_cases(work)
        if args.cases:
            cases = [c for c in cases if c[0] in args.cases.split(",")]
        for name, video in cases:
            shape = (video.height, video.width)
            images = frames_of(video.path)
            t = time.perf_counter()
            d_cov = sum(anonymized_fraction(deface.covers(im), truth, shape) >= COVERED for im, truth in zip(images, video.face_boxes))
            rows.append({"case": name, "setting": "deface", "covered": d_cov, "of": video.frames,
                         "fps": round(video.frames / (time.perf_counter() - t), 2), "fps_what": "detection only"})
            for detector, recall in settings:
                if recall == "max" and name != "small-1080p" and detector != "retinaface":
                    continue
                sub = work / f"{name}_{detector}_{recall}"
                sub.mkdir()
                boxes, report = run_anonswap(video.path, sub, detector, recall)
                cov = sum(anonymized_fraction([f["cover"] for f in r["faces"]], truth, shape) >= COVERED
                          for r, truth in zip(boxes, video.face_boxes))
                rows.append({"case": name, "setting": f"{detector}:{recall}", "covered": cov, "of": video.frames,
                             "fps": report["timing"]["fps"], "fps_what": "pipeline"})
                print(rows[-1], flush=True)
        if not args.no_shared and SHARED_CLIP.exists():
            images = frames_of(str(SHARED_CLIP), args.every)
            truth = reference_faces(images)
            total = int(sum(len(t) for t in truth))
            shape = images[0].shape[:2]
            t = time.perf_counter()
            d_cov = sum(anonymized_fraction(deface.covers(im), f, shape) >= COVERED for im, faces in zip(images, truth) for f in faces)
            rows.append({"case": "shared clip", "setting": "deface", "covered": int(d_cov), "of": total,
                         "fps": round(len(images) / (time.perf_counter() - t), 2), "fps_what": "detection only"})
            for detector, recall in settings:
                if recall == "max":
                    continue
                sub = work / f"shared_{detector}_{recall}"
                sub.mkdir()
                boxes, report = run_anonswap(str(SHARED_CLIP), sub, detector, recall)
                picked = boxes[::args.every]
                cov = sum(anonymized_fraction([f["cover"] for f in r["faces"]], f, shape) >= COVERED
                          for r, faces in zip(picked, truth) for f in faces)
                rows.append({"case": "shared clip", "setting": f"{detector}:{recall}", "covered": int(cov), "of": total,
                             "fps": report["timing"]["fps"], "fps_what": "pipeline", "faces_anonymized": report["faces"]["anonymized"]})
                print(rows[-1], flush=True)
    for r in rows:
        r["recall"] = round(r["covered"] / max(1, r["of"]), 3)
    result = {"command": "python benchmarks/recall.py " + " ".join(f"--every {args.every}".split() if args.every != 5 else []),
              "machine": machine(), "rows": rows}
    md = ["# Recall per detector setting, and deface's", "",
          f"Command: `{result['command'].strip()}`  ", f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores", "",
          "covered = frames (synthetic) or pseudo-ground-truth faces (shared clip) with >= 90% of the face box inside "
          "the anonymized region. fps: anonswap's pipeline (blur mode, decode to encode); deface: its detector alone.", "",
          "| case | setting | covered | recall | fps |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['case']} | {r['setting']} | {r['covered']}/{r['of']} | {r['recall']} | {r['fps']} |" for r in rows]
    write("recall", result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
