"""Calibrates the identity thresholds of an embedder on ../shared/data/faces and writes
benchmarks/results/identity_calibration.{json,md}.

    python benchmarks/identity_calibration.py [--embedder dlib] [--model ONNX]

Pairs: every two faces of the single-face photos in identities/ (labelled by person) and
sources/ (labelled by identity). Reports the same-person and different-person cosine
distributions, the threshold with the fewest errors, the lowest threshold with no false
match on this set, and what the shipped `same_person` / `margin` give. The set is small
(tens of faces): the numbers show the separation, they do not certify a false-match rate.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys

import numpy as np

from common import ROOT, RESULTS, machine

FACES = ROOT.parent / "shared" / "data" / "faces"


def load_faces(embedder, detector):
    import cv2

    items = []
    for sub, label_col in (("identities", "person"), ("sources", "identity")):
        with open(FACES / sub / f"{sub}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                if sub == "identities" and row["faces_in_image"] != "1":
                    continue
                img = cv2.cvtColor(cv2.imread(str(FACES / sub / row["file"])), cv2.COLOR_BGR2RGB)
                det = detector.detect([img])[0]
                if not len(det):
                    continue
                k = int(np.argmax(det.scores))
                items.append((f"{sub}/{row['file']}", f"{sub}:{row[label_col]}", embedder.embed(img, det.landmarks[k : k + 1])[0]))
    return items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--embedder", default="dlib")
    p.add_argument("--model", help="ONNX file for arcface-r50 / perface")
    args = p.parse_args(argv)
    if not FACES.is_dir():
        print(f"needs {FACES} (the shared test data)", file=sys.stderr)
        return 2
    from engines.embedders import calibration, load_embedder
    from pipeline.detect.retinaface import RetinaFaceDetector

    items = load_faces(load_embedder(args.embedder, args.model), RetinaFaceDetector())
    same, diff, hardest = [], [], []
    for (fa, la, va), (fb, lb, vb) in itertools.combinations(items, 2):
        s = float(va @ vb)
        (same if la == lb else diff).append(s)
        if la != lb:
            hardest.append((s, fa, fb))
    same, diff = np.array(same), np.array(diff)
    grid = np.round(np.arange(0.5, 1.0, 0.0025), 4)
    errors = [int((same < t).sum() + (diff >= t).sum()) for t in grid]
    best = float(grid[int(np.argmin(errors))])
    same_person, margin = calibration(args.embedder)
    result = {
        "embedder": args.embedder,
        "faces": len(items),
        "same_pairs": len(same),
        "different_pairs": len(diff),
        "same": {"min": round(same.min(), 4), "median": round(float(np.median(same)), 4), "max": round(same.max(), 4)},
        "different": {"min": round(diff.min(), 4), "median": round(float(np.median(diff)), 4), "max": round(diff.max(), 4)},
        "fewest_errors_threshold": best,
        "fewest_errors": int(min(errors)),
        "zero_false_match_threshold": round(float(diff.max()) + 0.0025, 4),
        "shipped": {
            "same_person": same_person,
            "false_matches": int((diff >= same_person).sum()),
            "missed_matches": int((same < same_person).sum()),
            "margin": margin,
            "different_pairs_above_margin": int((np.abs(diff) >= margin).sum()),
        },
        "hardest_different_pairs": [(round(s, 4), a, b) for s, a, b in sorted(hardest, reverse=True)[:5]],
        "machine": machine(),
        "command": "python benchmarks/identity_calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"identity_calibration_{args.embedder}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    sh = result["shipped"]
    md = [
        f"# Identity calibration: {args.embedder}", "",
        f"`{result['command']}` on {len(items)} faces of ../shared/data/faces ({len(same)} same-person pairs, {len(diff)} different).", "",
        "| pairs | min | median | max |", "|---|---|---|---|",
        f"| same person | {result['same']['min']} | {result['same']['median']} | {result['same']['max']} |",
        f"| different | {result['different']['min']} | {result['different']['median']} | {result['different']['max']} |", "",
        f"Fewest errors at cos ≥ {best} ({result['fewest_errors']} errors); no false match at ≥ {result['zero_false_match_threshold']}.",
        f"Shipped `same_person` = {sh['same_person']}: {sh['false_matches']} false and {sh['missed_matches']} missed matches on this set; "
        f"`margin` = {sh['margin']}: {sh['different_pairs_above_margin']} different-person pairs at or above it.", "",
        "Hardest different-person pairs: " + "; ".join(f"{a} vs {b} ({s})" for s, a, b in result["hardest_different_pairs"]),
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
