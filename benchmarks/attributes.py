"""Does a person's fake identity share their gender and age group? PerFace's step 1, measured.

    python benchmarks/attributes.py [--seeds 20] [--no-clip]

Writes benchmarks/results/attributes.{json,md}; `--check` compares with the checked-in gate
benchmarks/attributes_baseline.json and exits 1 when a number got worse. Needs
../shared/data/faces (and dlib, the offline embedder).

Three sets of queries, each answered by the real SourceAssigner (steps 1 and 2, `--seeds`
draws per query) after the attribute estimate of pipeline.identity.attributes:
- gallery leave-one-out: every photo of ../shared/data/faces/sources as a query against a
  gallery of the other identities (its own identity's photos all left out), labelled by its
  own row of sources.csv;
- identity photos: every face of ../shared/data/faces/identities, labelled by us in
  benchmarks/identity_photo_labels.csv (faces counted left to right; an age we could not
  tell is left empty and not scored), against the whole shared gallery; once with the
  gallery alone and once with the other identity persons as reference photos (what a user's
  own labelled photos add);
- the synthetic astronaut clip (a woman; age not scored): `--seeds` scenes of different
  size, position and mirroring, each through the whole pipeline (blur mode, `--seed` = the
  scene's), with the shared gallery.

Estimators compared on the first two sets (same calibration for the two classifiers):
- `group-distance`: what step 1 did before: the closest group by the upper 95% Student-t
  bound of the query's cosine distances to the group's members, widened when empty;
- `centroid`: the group distances recalibrated: nearest class mean (LDA with shrinkage 1),
  calibrated on held-out persons like the shipped estimator;
- `lda` (shipped): shrinkage LDA with the model table's settings.

Per set and estimator: how often the estimate is right, how often it is confident (and right
then), the share left unsure, and the agreement of the chosen source with the person's label
(all draws, and where the estimate was confident), with confusion tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from dataclasses import replace

import numpy as np

from common import ROOT, machine, write

FACES = ROOT.parent / "shared" / "data" / "faces"
LABELS = ROOT / "benchmarks" / "identity_photo_labels.csv"
BASELINE = ROOT / "benchmarks" / "attributes_baseline.json"
ATTRS = ("gender", "age_group")


# ---- data -------------------------------------------------------------------------------------

def embed_photos(detector, embedder) -> tuple[list[dict], list[dict]]:
    """(source photos, identity-photo faces): one dict per face with its vector and labels."""
    import cv2

    def faces(path):
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        det = detector.detect([img])[0]
        return img, det

    sources = []
    with open(FACES / "sources" / "sources.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            img, det = faces(FACES / "sources" / row["file"])
            k = det.largest()  # as `gallery build` does
            sources.append({"file": row["file"], "person": row["identity"], "gender": row["gender"] or None,
                            "age_group": row["age_group"] or None, "z": embedder.embed(img, det.landmarks[k : k + 1])[0]})
    photos = []
    by_file: dict[str, list[dict]] = {}
    with open(LABELS, newline="") as fh:
        for row in csv.DictReader(fh):
            by_file.setdefault(row["file"], []).append(row)
    for name, rows in sorted(by_file.items()):
        img, det = faces(FACES / "identities" / name)
        order = np.argsort(det.boxes[:, 0])  # left to right
        for row in rows:
            k = int(order[int(row["face"])])
            photos.append({"file": f"{name}#{row['face']}", "person": row["person"], "gender": row["gender"] or None,
                           "age_group": row["age_group"] or None, "z": embedder.embed(img, det.landmarks[k : k + 1])[0]})
    return sources, photos


def gallery_of(items: list[dict], embedder: str):
    """A SourceGallery of these labelled faces, one identity per person (as `gallery build`)."""
    from engines.embedders.base import normalize

    from pipeline.identity.gallery import Source, SourceGallery, _vote

    by: dict[str, list[dict]] = {}
    for it in items:
        by.setdefault(it["person"], []).append(it)
    sources = [Source(p, _vote([m["gender"] for m in ms])[0], _vote([m["age_group"] for m in ms])[0],
                      {embedder: normalize(np.mean([m["z"] for m in ms], axis=0))}) for p, ms in by.items()]
    return SourceGallery(sources, np.zeros((len(sources), 1, 1, 3), np.uint8))


# ---- estimators -------------------------------------------------------------------------------

def old_step1(assigner, z):
    """Step 1 as it was: the closest group by the upper 95% t bound of its distances, taken as
    an unsure preference (the old code widened to mixed groups when a group ran out)."""
    from scipy import stats

    from pipeline.identity.assignment import GROUPS
    from pipeline.identity.attributes import Estimate, PersonAttributes

    d = 1.0 - assigner.E @ z
    best, best_d = (None, None), np.inf
    for g in GROUPS:
        idx = assigner._members(g)
        if not len(idx):
            continue
        x = d[idx]
        bound = float(x[0]) if len(x) == 1 else float(x.mean() + stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
        if bound < best_d:
            best, best_d = g, bound
    return PersonAttributes(Estimate(best[0]), Estimate(best[1]), "embedding")


def make_assigner(gallery, embedder: str, method: str, references=(), seed: int = 0):
    from engines.embedders import attribute_settings, calibration

    from pipeline.identity.assignment import AssignConfig, SourceAssigner
    from pipeline.identity.attributes import AttributeConfig, AttributeModel

    shipped = AttributeConfig(**attribute_settings(embedder))
    cfg = replace(shipped, shrinkage=1.0) if method == "centroid" else shipped
    vectors, labels = gallery.labelled(embedder)
    if references:
        vectors = np.vstack([vectors, [r["z"] for r in references]])
        labels = labels + [{a: r[a] for a in ATTRS} for r in references]
    model = AttributeModel.fit(vectors, labels, cfg)
    return SourceAssigner(gallery, embedder, AssignConfig(margin=calibration(embedder)[1], seed=seed, attributes=cfg), attributes=model)


def answer(assigner, method: str, z, seeds: int) -> tuple[object, list]:
    """(attributes step 1 used, the chosen source per draw; None = no source: blurred)."""
    attrs = old_step1(assigner, z) if method == "group-distance" else assigner.estimate(z)
    picks = []
    for key in range(seeds):
        a = assigner.assign(z, key=key, attributes=attrs)
        picks.append(None if a is None else a.source)
    return attrs, picks


# ---- scoring ----------------------------------------------------------------------------------

class Tally:
    """Counts for one set × estimator."""

    def __init__(self):
        self.queries = 0
        self.c = {a: Counter() for a in ATTRS}
        self.confusion = {a: Counter() for a in ATTRS}  # (label, chosen source's value) over draws

    def add(self, label: dict, attrs, picks: list) -> None:
        self.queries += 1
        for a in ATTRS:
            truth, est = label[a], getattr(attrs, a)
            if truth is None:
                continue
            c = self.c[a]
            c["labelled"] += 1
            c["estimate_right"] += est.value == truth
            c["confident"] += est.confident
            c["confident_right"] += est.confident and est.value == truth
            for src in picks:
                got = None if src is None else getattr(src, a)
                self.confusion[a][(truth, got or ("no_source" if src is None else "mixed"))] += 1
                c["draws"] += 1
                c["agree"] += got == truth
                if est.confident:
                    c["draws_confident"] += 1
                    c["agree_confident"] += got == truth

    def summary(self) -> dict:
        out = {"queries": self.queries}
        for a in ATTRS:
            c = self.c[a]
            n = c["labelled"]
            out[a] = {
                "labelled": n,
                "estimate_accuracy": _rate(c["estimate_right"], n),
                "confident": c["confident"],
                "unsure_share": _rate(n - c["confident"], n),
                "confident_accuracy": _rate(c["confident_right"], c["confident"]),
                "confident_errors": c["confident"] - c["confident_right"],
                "source_agreement": _rate(c["agree"], c["draws"]),
                "source_agreement_confident": _rate(c["agree_confident"], c["draws_confident"]),
                "confusion": {f"{t}->{g}": k for (t, g), k in sorted(self.confusion[a].items())},
            }
        return out


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


# ---- the three sets ---------------------------------------------------------------------------

METHODS = ("group-distance", "centroid", "lda")


def gallery_loo(sources: list[dict], embedder: str, seeds: int) -> dict:
    out = {}
    for method in METHODS:
        t = Tally()
        for q in sources:
            rest = gallery_of([s for s in sources if s["person"] != q["person"]], embedder)
            attrs, picks = answer(make_assigner(rest, embedder, method), method, q["z"], seeds)
            t.add(q, attrs, picks)
        out[method] = t.summary()
    return out


def identity_photos(sources: list[dict], photos: list[dict], embedder: str, seeds: int) -> dict:
    gallery = gallery_of(sources, embedder)
    out = {}
    for method in METHODS:
        t = Tally()
        assigner = make_assigner(gallery, embedder, method)
        for q in photos:
            t.add(q, *answer(assigner, method, q["z"], seeds))
        out[method] = t.summary()
    t = Tally()  # the shipped estimator, with the other identity persons as the user's labelled photos
    for q in photos:
        refs = [p for p in photos if p["person"] != q["person"]]
        t.add(q, *answer(make_assigner(gallery, embedder, "lda", references=refs), "lda", q["z"], seeds))
    out["lda+references"] = t.summary()
    return out


def astronaut_scene(path: str, seed: int) -> None:
    """One scene of the self-made clip: the astronaut at a seed-drawn size and path, maybe mirrored."""
    from pipeline.synthetic import Actor, make_scene_video

    rng = np.random.default_rng(seed)
    h, x, y = float(rng.uniform(100, 200)), float(rng.uniform(0, 80)), float(rng.uniform(0, 30))
    make_scene_video(path, [Actor(lambda i: (x + 2 * i, y, h), mirror=bool(seed % 2))], frames=10, seed=seed)


def astronaut_clip(gallery_path: str, workdir, seeds: int) -> dict:
    from pipeline import RunConfig, anonymize_video
    from pipeline.identity.attributes import Estimate, PersonAttributes
    from pipeline.identity.gallery import SourceGallery
    from pipeline.identity.stage import IdentityConfig
    from pipeline.run.build import ModelCache

    from pipeline.identity.assignment import SourceAssigner

    sources = SourceAssigner(SourceGallery.load(gallery_path), "dlib")  # finds mixes by id too
    models, t, rows = ModelCache(), Tally(), []
    for seed in range(seeds):
        clip = str(workdir / f"astronaut_{seed}.mp4")
        astronaut_scene(clip, seed)
        cfg = RunConfig(mode="blur", gallery=gallery_path, identity=IdentityConfig(seed=seed))
        report = anonymize_video(clip, str(workdir / "out.mp4"), cfg, progress=False, log=lambda m: None, models=models)
        for p in report["persons"]:
            a = p["attributes"]
            attrs = PersonAttributes(*(Estimate(a[k]["value"], a[k]["p"], a[k]["confident"]) for k in ATTRS), a["basis"])
            src = sources.source(p["source_id"]) if p["source_id"] else None
            t.add({"gender": "female", "age_group": None}, attrs, [src])
            rows.append({"seed": seed, "source_id": p["source_id"], "group": p["group"], "attributes": a})
    return {"lda": t.summary(), "runs": rows}


# ---- gate -------------------------------------------------------------------------------------

def check(result: dict, baseline: dict) -> list[str]:
    """What got worse than the checked-in baseline (rates may not fall, unsure shares may not
    rise, confident gender errors stay at 0); empty when the gate passes."""
    problems = []
    for path, want in _leaves(baseline["gates"]):
        got = _get(result, path)
        name = ".".join(path)
        if got is None:
            problems.append(f"{name}: missing (baseline {want})")
        elif path[-1].startswith(("unsure_share", "confident_errors")):
            if got > want + 1e-9:
                problems.append(f"{name}: {got} > baseline {want}")
        elif got < want - 1e-9:
            problems.append(f"{name}: {got} < baseline {want}")
    return problems


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def measure(seeds: int = 20, clip: bool = True, workdir=None, embedder_name: str = "dlib") -> dict:
    from engines.embedders import attribute_settings, load_embedder

    from pipeline.detect.retinaface import RetinaFaceDetector

    embedder = load_embedder(embedder_name)
    sources, photos = embed_photos(RetinaFaceDetector(), embedder)
    result = {
        "embedder": embedder_name,
        "settings": attribute_settings(embedder_name),
        "seeds": seeds,
        "gallery_loo": gallery_loo(sources, embedder_name, seeds),
        "identity_photos": identity_photos(sources, photos, embedder_name, seeds),
    }
    if clip:
        import tempfile
        from pathlib import Path

        from pipeline.identity.gallery import SourceGallery

        with tempfile.TemporaryDirectory() as tmp:
            work = Path(workdir or tmp)
            gpath = str(work / "shared_gallery.npz")
            SourceGallery.build(str(FACES / "sources"), RetinaFaceDetector(), [embedder], labels=str(FACES / "sources" / "sources.csv")).save(gpath)
            result["astronaut_clip"] = astronaut_clip(gpath, work, seeds)
    return result


def markdown(r: dict) -> str:
    lines = [f"# Attribute-consistent sources ({r['embedder']})", "",
             f"`{r['command']}`; estimator settings {r['settings']}; {r['seeds']} draws (seeds) per query.", "",
             "Agreement = the chosen source has the person's label (over all draws; `conf.`: where the estimate was "
             "confident). Unsure = the estimate was not confident, so step 1 only preferred its likelier value.", "",
             "Estimators: `group-distance` = the old step 1 (closest group by the upper 95% t bound of the distances "
             "to its members, widened when a group runs out); `centroid` = those distances recalibrated (nearest class "
             "mean, held-out calibration); `lda` = shipped (shrinkage LDA, held-out calibration); `lda+references` = "
             "shipped, with the other identity persons as labelled reference photos.", ""]
    sets = [("gallery_loo", "Gallery leave-one-out (24 source photos, own identity left out)"),
            ("identity_photos", "Shared identity photos (our labels) vs the shared gallery"),
            ("astronaut_clip", "Synthetic astronaut clip, whole pipeline")]
    for key, title in sets:
        if key not in r:
            continue
        lines += [f"## {title}", "",
                  "| estimator | attribute | labelled | estimate right | confident (right) | unsure | source agreement | agreement, conf. |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, s in r[key].items():
            if method == "runs":
                continue
            for a in ATTRS:
                x = s[a]
                if not x["labelled"]:
                    continue
                lines.append(f"| {method} | {a} | {x['labelled']} | {_pct(x['estimate_accuracy'])} | {x['confident']} "
                             f"({x['confident'] - x['confident_errors']}) | {_pct(x['unsure_share'])} | "
                             f"{_pct(x['source_agreement'])} | {_pct(x['source_agreement_confident'])} |")
        lines.append("")
        for method in ("lda", "group-distance"):
            if method not in r[key]:
                continue
            for a in ATTRS:
                conf = r[key][method][a]["confusion"]
                if conf:
                    lines.append(f"Confusion, {method}{' (shipped)' if method == 'lda' else ''}, {a} "
                                 "(label → chosen source's, over draws): " + ", ".join(f"{k}: {v}" for k, v in conf.items()) + "  ")
        lines.append("")
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="draws per query, and astronaut scenes (default 20)")
    p.add_argument("--no-clip", action="store_true", help="skip the synthetic clip (the slow part)")
    p.add_argument("--check", action="store_true", help=f"compare with {BASELINE.name}; exit 1 when worse")
    args = p.parse_args(argv)
    if not FACES.is_dir():
        print(f"needs {FACES} (the shared test data)", file=sys.stderr)
        return 2
    result = measure(args.seeds, clip=not args.no_clip)
    result["machine"] = machine()
    result["command"] = "python benchmarks/attributes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.check:
        problems = check(result, json.loads(BASELINE.read_text()))
        print("\n".join(problems) or "attributes: no number worse than the baseline")
        return 1 if problems else 0
    write("attributes", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
