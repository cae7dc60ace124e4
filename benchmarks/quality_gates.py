"""Privacy gates: the audit's numbers per clip, compared with the checked-in baseline.

    python benchmarks/quality_gates.py                    # measure, compare, exit 1 if any got worse
    python benchmarks/quality_gates.py --write-baselines  # after an improvement: this run becomes the baseline
    python benchmarks/quality_gates.py --only scene_3faces_blur   # some cases (compared, not written)

norfair asserts its tracker's MOTA against a checked-in number; this is the same habit for
privacy. Each case anonymizes one clip with the real pipeline and audits the output against
the original (`pipeline.audit`, the code behind `run_pipeline.py audit`), with the run's
boxes file, so leaks (faces the audit's leak detector finds that nothing covered and that
did not change)
and suspects (claimed covered, pixels unchanged) are both counted. A change may only keep or
lower leaks, suspects, re-ID and ¬ID; the audit must keep seeing at least as many faces, or a
lower leak count could come from an audit gone blind rather than a better pipeline.

Everything is fixed so that the numbers repeat on the CI machine (2 CPU cores): the clips
are made from fixed seeds and sizes (`pipeline.synthetic`) or are the shared clip; the
recognizer is dlib, not `auto` (which would take ArcFace R50 from whoever's model cache); the
leak detector is the audit's own choice for the run (`auto`: CenterFace, which sees dark and
edge-cut faces, unless the run used it, then MTCNN; a change of the default detector
changes that choice, and the test of the baselines asks for a refresh); the
model cache is a fresh temporary folder; swap mode uses the tests' random-weight SimSwap kit,
so it measures what the swap path covers (its re-ID says nothing about real SimSwap).
Cases whose clip is absent (the shared clip without ../shared) are skipped, and a skipped
case is not a failure here; the tests say so as a skip with the reason.

A refresh never loosens a gate by accident: `--write-baselines` refuses when a number got
worse than the baseline it replaces, unless `--allow-worse` says that was meant (the audit
itself or a case changed; the commit says why).

The tests (`tests/test_quality_gates.py`, through conftest's `quality_gate`) call `run_case`
and `worse_than_baseline` from here, so the tests and this command compute the same numbers
the same way. Writes benchmarks/results/quality_gates.{json,md}, and for each case with
suspects or faces not judgeable a contact strip of them beside it
(quality_gates_<case>_suspects.png: original left, anonymized right;
quality_gates_<case>_not_judgeable.png), so a reader can check that none holds a visible
face (git ignores the shared clip's: crops of ../shared, which the project never commits); `--write-baselines` also benchmarks/baselines.json. A gate the baseline has no number
for yet (a new one) is not compared until the baseline is refreshed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import RESULTS, ROOT, SHARED_CLIP, machine, write

BASELINES = ROOT / "benchmarks" / "baselines.json"
COMMAND = "python benchmarks/quality_gates.py"


@dataclass(frozen=True)
class Gate:
    metric: str
    better: str  # "lower" or "higher"
    why: str


GATES = (
    Gate("leaks", "lower", "faces the leak detector finds in the original that no claimed region covers and that did not change"),
    Gate("suspects", "lower", "faces the boxes file claims covered whose pixels did not change"),
    Gate("reid_rate", "lower", "share of original faces the recognizer still matches in the output at τ (FAR 0.001)"),
    Gate("negated_reid_rate", "lower", "the same against −z (FIVA: an anonymization towards −z is easy to reverse)"),
    Gate("detector_faces", "higher", "faces the audit's own detector sees in the original: fewer would make leaks fall by blindness"),
    Gate("faces", "higher", "original faces the audit embeds"),
    Gate("judgeable", "higher", "original faces the recognizer can tell from a heavy blur of themselves: re-ID and ¬ID are measured over these"),
)


@dataclass(frozen=True)
class Case:
    """One clip through one mode.

    `every`: identity metrics on every N-th frame. Leaks and suspects are counted on every
    frame whatever N is. Re-ID is a rate over the embedded faces: every 3rd frame costs a
    third (dlib embeds each face three times) and reads about the same on the shared clip as every
    frame (benchmarks/results/notes.md), and the baseline is taken at the same N.
    `in_tests`: False where tests/test_quality_gates.py leaves the case to this command, with
    the reason there.
    """

    name: str
    clip: str
    mode: str
    every: int = 3
    in_tests: bool = True


CLIPS = {
    # the tests' own synthetic clip (conftest `synthetic`): one large face moving and growing
    "synthetic_320x240": dict(kind="video", width=320, height=240, frames=40, face_height=0.45, seed=0),
    # small faces (about 28 px high) at 360p, where a detector misses first
    "synthetic_640x360_small": dict(kind="video", width=640, height=360, frames=60, face_height=0.15, seed=1),
    # three faces: two crossing (one hides the other), both entering and leaving through the
    # frame's edges, and a small one cut by the top edge
    "scene_3faces": dict(kind="scene", width=480, height=270, frames=90, seed=2),
    "shared_hamilton": dict(kind="shared"),
}

CASES = (
    Case("shared_hamilton_blur", "shared_hamilton", "blur"),
    Case("synthetic_320x240_blur", "synthetic_320x240", "blur"),
    # Random SimSwap weights: the swap path's cover (aligned crop, mask, paste-back) and its
    # blur fallbacks, not the quality of a real swap. Left out of the tests: about a minute on
    # 2 cores (ONNX export + swap), while tests/test_swap_mode.py already fails when a swapped
    # face's core is left unchanged.
    Case("synthetic_320x240_swap", "synthetic_320x240", "swap", in_tests=False),
    Case("synthetic_640x360_small_blur", "synthetic_640x360_small", "blur"),
    Case("scene_3faces_blur", "scene_3faces", "blur"),
)


def case(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"unknown case {name!r}; valid: {', '.join(c.name for c in CASES)}")


def _scene_actors():
    from pipeline.synthetic import Actor

    return [
        Actor(lambda i: (-40 + 5 * i, 30, 120)),
        Actor(lambda i: (380 - 4 * i, 80, 100), mirror=True),
        Actor(lambda i: (400, -10, 50) if 20 <= i < 70 else None),
    ]


def clip_missing(clip: str) -> str | None:
    """Why the clip cannot be had here, or None."""
    if CLIPS[clip]["kind"] == "shared" and not SHARED_CLIP.exists():
        return f"needs ../shared test data ({SHARED_CLIP} not found; it is not shipped with the project)"
    return None


def make_clip(clip: str, folder: Path) -> Path:
    """The clip's path; synthetic clips are written into `folder` (a few seconds at most)."""
    from pipeline.synthetic import make_scene_video, make_video

    spec = dict(CLIPS[clip])
    kind = spec.pop("kind")
    if kind == "shared":
        return SHARED_CLIP
    path = folder / f"{clip}.mp4"
    if not path.exists():
        if kind == "video":
            make_video(str(path), **spec)
        else:
            make_scene_video(str(path), _scene_actors(), **spec)
    return path


def _swap_kit(folder: Path) -> dict:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from simswap_kit import make_swap_kit

    kit = folder / "swap_kit"
    kit.mkdir(exist_ok=True)
    gen, arc, gallery = make_swap_kit(kit, seed=0)
    return dict(generator=str(gen), arcface=str(arc), gallery=str(gallery))


LEAK_DETECTOR = "auto"  # the audit's rule: CenterFace unless the run used it, then MTCNN


def audit_config(c: Case, run_settings: dict | None = None):
    from pipeline.audit.leak_detector import run_detectors_of
    from pipeline.audit.measure import AuditConfig

    return AuditConfig(recognizer="dlib", every=c.every, leak_detector=LEAK_DETECTOR,
                       run_detectors=None if run_settings is None else run_detectors_of(run_settings))


def run_case(c: Case, folder: Path) -> tuple[dict, dict, object]:
    """Anonymize the case's clip and audit the result: (the gates' numbers, the whole audit,
    its `AuditThumbnails`).

    Runs in this process (the same functions the command line calls); `folder` receives the
    clips, the outputs and, for swap, the random-weight kit. The model cache must hold no
    fetched model (`fresh_model_cache`; the tests' cache is already empty), so that nothing
    a user fetched changes what runs.
    """
    from pipeline import RunConfig, anonymize_video
    from pipeline.audit.measure import audit_videos

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(c.clip, folder)
    extra = _swap_kit(folder) if c.mode == "swap" else {}
    out, boxes = folder / f"{c.name}.mp4", folder / f"{c.name}.boxes.jsonl"
    quiet = lambda m: None  # noqa: E731
    t0 = time.perf_counter()
    report = anonymize_video(str(clip), str(out), RunConfig(mode=c.mode, **extra), boxes_path=str(boxes), progress=False, log=quiet)
    t1 = time.perf_counter()
    config = audit_config(c, report["settings"])
    a, _, thumbs = audit_videos(str(clip), str(out), boxes=str(boxes), config=config, progress=False, log=quiet)
    t2 = time.perf_counter()
    lk = a["leaks"]
    numbers = {
        "case": c.name, "clip": c.clip, "mode": report["mode"], "frames": a["frames"],
        "size": [report["video"]["width"], report["video"]["height"]],
        "settings": {"every": config.every, "recognizer": a["recognizer"], "far": config.far,
                     "change_threshold": config.change_threshold, "leak_detector": lk["detector"], "leak_every": lk["every"]},
        "leaks": lk["count"], "suspects": len(lk["suspect"]), "detector_faces": lk["detector_faces"],
        "faces": a["faces"], "judgeable": a["judgeable"]["faces"], "not_judgeable": a["judgeable"]["not_judgeable"],
        "reid_rate": a["reid"]["rate"], "reid_matches": a["reid"]["matches"],
        "negated_reid_rate": a["negated_reid"]["rate"],
        "detection_rate": a["detection"]["rate"],
        "threshold": a["threshold"]["value"], "threshold_source": a["threshold"]["source"],
        "impostor_pairs": a["threshold"]["impostor_pairs"],
        "leak_frames": lk["frames"], "suspect_frames": sorted({s["frame"] for s in lk["suspect"]}),
        "anonymized": report["faces"]["anonymized"], "swapped": report["faces"].get("swapped"),
        "seconds": {"run": round(t1 - t0, 1), "audit": round(t2 - t1, 1)},
    }
    return numbers, a, thumbs


STRIPS = ("suspects", "not_judgeable")  # AuditThumbnails fields drawn as a contact strip per case


def write_strips(name: str, thumbs, folder: Path = RESULTS) -> dict[str, str]:
    """Write the case's suspects and faces not judgeable as PNG strips: {list: file name}.

    A list that is empty now removes the strip an earlier run left, so no picture outlives
    the numbers it illustrates.
    """
    from pipeline.audit.pictures import thumbnail_strip_png

    written = {}
    for field in STRIPS:
        path = Path(folder) / f"quality_gates_{name}_{field}.png"
        png = thumbnail_strip_png(getattr(thumbs, field), height=64)
        if png:
            path.write_bytes(png)
            written[field] = path.name
        else:
            path.unlink(missing_ok=True)
    return written


def fresh_model_cache(folder: Path) -> None:
    """An empty model cache for this process: a user's fetched ArcFace, or an earlier export,
    must not change which models run."""
    os.environ["ANONSWAP_HOME"] = str(Path(folder) / "anonswap_home")
    os.environ["ANONSWAP_LOCK"] = str(Path(folder) / "anonswap_home" / "models.lock.json")


def load_baselines(path: Path = BASELINES) -> dict:
    return json.loads(Path(path).read_text())


def worse_than_baseline(current: dict, baseline: dict) -> list[str]:
    """One line per gated number that got worse; empty when the case passes.

    Exact comparisons: every input is fixed, so the same code gives the same numbers, and a
    single extra leak is a real face shown. Settings that differ make the numbers
    incomparable, which is a failure too (refresh the baseline with the new settings).
    """
    name = current["case"]
    if current["settings"] != baseline["settings"]:
        return [f"{name}: measured with {current['settings']}, baseline with {baseline['settings']}: "
                f"refresh it ({COMMAND} --write-baselines)"]
    worse = []
    for g in GATES:
        now, then = current.get(g.metric), baseline.get(g.metric)
        if then is None:  # not measured then, or a gate newer than the baseline: nothing to compare yet
            continue
        if now is None or (now > then if g.better == "lower" else now < then):
            worse.append(f"{name}: {g.metric} {now} is worse than the baseline {then} ({g.better} is better: {g.why})")
    return worse


def better_than_baseline(current: dict, baseline: dict) -> list[str]:
    """Numbers that improved: the baseline should be refreshed so the gate holds the gain."""
    out = []
    for g in GATES:
        now, then = current.get(g.metric), baseline.get(g.metric)
        if now is not None and then is not None and (now < then if g.better == "lower" else now > then):
            out.append(f"{current['case']}: {g.metric} {then} → {now}")
    return out


GATED_KEYS = ("case", "clip", "mode", "frames", "size", "settings", *(g.metric for g in GATES),
              "reid_matches", "detection_rate", "threshold", "leak_frames", "suspect_frames")


def baseline_entry(m: dict) -> dict:
    """What goes into baselines.json for a case: the gated numbers and what they came from
    (no timings: speed belongs to the benchmark results, not to a gate)."""
    return {k: m[k] for k in GATED_KEYS}


def _markdown(data: dict) -> str:
    md = ["# Privacy quality gates", "", f"Command: `{data['command']}`  ",
          f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; {data['date']}", "",
          "Each case: the pipeline on the clip, then the audit of its output with the run's boxes file "
          "(dlib recognizer, FAR 0.001, change threshold 0.08; leaks by the audit's own choice of a detector the run did not use: CenterFace on every frame for these RetinaFace runs). Gated against `benchmarks/baselines.json`: "
          + "; ".join(f"{g.metric} ({g.better} is better)" for g in GATES) + ".", "",
          "judgeable: embedded faces the recognizer tells from a heavy blur of themselves; re-ID and ¬ID are over these "
          "(the others are too dark or flat to carry an identity: docs/audit.md).", "",
          "| case | frames | leaks | suspects | leak detector faces | faces embedded (every) | judgeable | re-ID | ¬ID | τ | detected in output | run s | audit s | gate |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    pictures = []
    for r in data["results"]:
        if "skipped" in r:
            md.append(f"| {r['case']} | – | – | – | – | – | – | – | – | – | – | – | – | skipped: {r['skipped']} |")
            continue
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        md.append(f"| {r['case']} | {r['frames']} | {r['leaks']} | {r['suspects']} | {r['detector_faces']} | "
                  f"{r['faces']} ({r['settings']['every']}) | {r['judgeable']} | {pct(r['reid_rate'])} ({r['reid_matches']}) | "
                  f"{pct(r['negated_reid_rate'])} | {r['threshold']} | {pct(r['detection_rate'])} | "
                  f"{r['seconds']['run']} | {r['seconds']['audit']} | {r['gate']} |")
        links = [f"[{field.replace('_', ' ')} ({r[field]})]({png})" for field, png in r.get("pictures", {}).items()]
        if links:
            pictures.append(f"- {r['case']}: " + ", ".join(links))
    if pictures:
        from pipeline.audit.measure import MAX_SUSPECT_THUMBS, MAX_THUMBS

        md += ["", f"Suspects (original left, anonymized right) and faces not judgeable, to check by eye that none "
               f"holds a visible face (the first {MAX_SUSPECT_THUMBS} suspects at most, and the {MAX_THUMBS} faces nearest their blur; "
               "written by the command beside this file, those of the shared clip never committed: they are crops of ../shared):", ""] + pictures
    if data["worse"]:
        md += ["", "Worse than the baseline:", ""] + [f"- {w}" for w in data["worse"]]
    if data["better"]:
        md += ["", f"Better than the baseline (refresh it: `{COMMAND} --write-baselines`):", ""] + [f"- {b}" for b in data["better"]]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write-baselines", action="store_true",
                   help=f"write this run's numbers to {BASELINES.relative_to(ROOT)} (refused when one got worse, see --allow-worse)")
    p.add_argument("--allow-worse", action="store_true",
                   help="with --write-baselines: write even numbers worse than the old baseline (the audit or a case changed; say why in the commit)")
    p.add_argument("--only", nargs="+", metavar="CASE", choices=[c.name for c in CASES], help="these cases only: %(choices)s")
    p.add_argument("--baselines", type=Path, default=BASELINES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write_baselines and args.only:
        p.error("--write-baselines measures every case (a partial baseline would drop the others' gates)")
    todo = [case(n) for n in args.only] if args.only else list(CASES)
    skipped = {c.name: clip_missing(c.clip) for c in todo if clip_missing(c.clip)}
    if args.write_baselines and skipped:
        print(f"error: the baseline must hold every case; {', '.join(f'{k}: {v}' for k, v in skipped.items())}", file=sys.stderr)
        return 2
    baselines = load_baselines(args.baselines)["cases"] if args.baselines.exists() else {}
    if not baselines and not args.write_baselines:
        print(f"error: no baseline at {args.baselines}; write one: {COMMAND} --write-baselines", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results, worse, better = [], [], []
    with tempfile.TemporaryDirectory(prefix="quality_gates_") as tmp:
        fresh_model_cache(Path(tmp))
        for c in todo:
            if c.name in skipped:
                results.append({"case": c.name, "skipped": skipped[c.name]})
                print(f"{c.name}: skipped ({skipped[c.name]})", file=sys.stderr)
                continue
            m, _, thumbs = run_case(c, Path(tmp) / c.name)
            m["pictures"] = write_strips(c.name, thumbs)
            if c.name not in baselines:
                m["gate"] = "no baseline"
                if not args.write_baselines:
                    worse.append(f"{c.name}: no baseline ({COMMAND} --write-baselines)")
            else:
                w = worse_than_baseline(m, baselines[c.name])
                worse += w
                better += better_than_baseline(m, baselines[c.name])
                m["gate"] = "WORSE" if w else "ok"
            results.append(m)
            print(f"{c.name}: leaks {m['leaks']}, suspects {m['suspects']}, re-ID {m['reid_rate']}, "
                  f"{m['seconds']['run'] + m['seconds']['audit']:.0f} s: {m['gate']}", file=sys.stderr)
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    data = {"command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
            "wall_s": round(time.perf_counter() - started, 1), "gates": [asdict(g) for g in GATES],
            "results": results, "worse": worse, "better": better}
    write("quality_gates", data, _markdown(data))
    for w in worse:
        print(f"WORSE: {w}", file=sys.stderr)
    if args.write_baselines:
        if worse and not args.allow_worse:
            print("error: baseline not written: a gate is never loosened by a refresh (--allow-worse when the audit "
                  "itself or a case changed; say why in the commit)", file=sys.stderr)
            return 1
        args.baselines.write_text(json.dumps({
            "command": data["command"], "date": data["date"], "machine": data["machine"],
            "refresh": f"{COMMAND} --write-baselines (after a change that improves these numbers; review the diff)",
            "gates": data["gates"], "cases": {r["case"]: baseline_entry(r) for r in results},
        }, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.baselines}" + (f": {len(better)} number(s) improved" if better else ""), file=sys.stderr)
        return 0
    for b in better:
        print(f"better: {b} (refresh the baseline so the gate keeps the gain: {COMMAND} --write-baselines)", file=sys.stderr)
    return 1 if worse else 0


if __name__ == "__main__":
    raise SystemExit(main())
