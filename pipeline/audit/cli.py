"""`run_pipeline.py audit ORIGINAL ANONYMIZED [--boxes B.jsonl] -o AUDIT.json [--html REPORT.html]`.

Exit status: 0 when the audit ran (whatever it found), 1 with `--fail-on-leak` when a leak
was found, a (judgeable) face was re-identified or a claimed face is a suspect (for data
pipelines that gate on it), 2 on bad input. A suspect fails the gate too: the boxes file
says the face was anonymized, the pixels say it was not, and a gate cannot look at the
contact sheet to tell a dark blurred face from one the anonymizer never touched.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline.core.errors import AnonswapError, fail
from pipeline.audit.leak_detector import LEAK_DETECTORS, run_detectors_from_report
from pipeline.audit.measure import RECOGNIZERS, AuditConfig, audit_videos


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.cli.args import positive_int

    p.add_argument("--far", type=float, default=AuditConfig.far, help=f"target false acceptance rate for the re-ID threshold (default {AuditConfig.far})")
    p.add_argument("--recognizer", choices=RECOGNIZERS, default="auto", help="face recognizer for re-ID (default auto: ArcFace R50 when fetched, else dlib)")
    p.add_argument("--recognizer-model", metavar="ONNX", help="ONNX for arcface-r50 / perface")
    p.add_argument("--impostors", metavar="DIR", help="photos of different known people: more impostor pairs for the threshold")
    p.add_argument("--impostor-labels", metavar="CSV", help="labels for --impostors: file, person (or identity)[, faces_in_image]")
    p.add_argument("--every", type=positive_int, default=1, metavar="N", help="identity metrics on every N-th frame (leaks: every frame; default 1)")
    p.add_argument("--leak-detector", choices=LEAK_DETECTORS, default=AuditConfig.leak_detector,
                   help="detector for the leak check; refused when the run used it (default auto: centerface, which also sees "
                   "dark and edge-cut faces, unless the run used it, then mtcnn, which is blind to those)")
    p.add_argument("--leak-every", type=positive_int, metavar="N", help="leak check on every N-th frame (default: the detector's, dlib-mmod 5, centerface and mtcnn 1)")
    p.add_argument("--allow-dependent-leak-detector", action="store_true",
                   help="audit with a leak detector the run used (it cannot see what the run missed; the JSON says so)")
    p.add_argument("--change-threshold", type=float, default=AuditConfig.change_threshold, metavar="T", help=f"1-SSIM below which a face counts as unchanged (default {AuditConfig.change_threshold})")


def config_from(args, **extra) -> AuditConfig:
    return AuditConfig(far=args.far, recognizer=args.recognizer, recognizer_model=args.recognizer_model, impostors=args.impostors,
                       impostor_labels=args.impostor_labels, every=args.every, change_threshold=args.change_threshold,
                       leak_detector=args.leak_detector, leak_every=args.leak_every, allow_dependent=args.allow_dependent_leak_detector,
                       allow_unrelated=args.allow_unrelated, **extra)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli.args import OneLineParser, positive_int

    p = OneLineParser(prog="run_pipeline.py audit", description="Measure how well a video is anonymized (re-ID, ¬ID, M_tc, detection rate, leaks).")
    p.add_argument("original")
    p.add_argument("anonymized")
    p.add_argument("--boxes", metavar="B.jsonl", help="the run's boxes export: its tracks and what it claims it covered")
    p.add_argument("--report", metavar="R.json", help="the run's report: which detector(s) it used, so the leak detector is another one")
    p.add_argument("-o", "--output", required=True, metavar="AUDIT.json", help="every number, as JSON")
    p.add_argument("--html", metavar="REPORT.html", help="one self-contained page with the pictures (contains original faces)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="audit the first N frames only")
    p.add_argument("--fail-on-leak", action="store_true", help="exit 1 when a leak is found, a face is re-identified or a claimed face is unchanged (suspect)")
    p.add_argument("--allow-unrelated", action="store_true",
                   help="audit even when the anonymized video does not look like a copy of the original, or the boxes not like its run's")
    p.add_argument("-q", "--quiet", action="store_true")
    add_arguments(p)
    return p


def audit_paths(output: str) -> tuple[str, str]:
    """Where `--audit` with no value writes: next to the video, OUT.audit.json / .html."""
    stem = os.path.splitext(output)[0]
    return stem + ".audit.json", stem + ".audit.html"


def run_audit(original: str, anonymized: str, json_path: str, html_path: str | None, config: AuditConfig, *,
              boxes: str | None = None, report: str | None = None, progress: bool = True,
              log=lambda m: print(m, file=sys.stderr)) -> dict:
    from pipeline.io.atomic import write_json_atomic
    from pipeline.io.paths import check_outputs

    check_outputs([original, anonymized, boxes, report, config.impostors, config.impostor_labels, config.recognizer_model],
                  {"audit -o": json_path, "audit --html": html_path})
    result, sheets, thumbs = audit_videos(original, anonymized, boxes=boxes, config=config, progress=progress, log=log)
    write_json_atomic(json_path, result)
    if html_path:
        from pipeline.audit.html_report import render_html

        render_html(result, sheets, thumbs, html_path)
    return result


def summary_line(result: dict) -> str:
    r, n, lk, t = result["reid"], result["negated_reid"], result["leaks"], result["threshold"]
    tc = result["temporal_consistency"]["output"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    return (f"audit: {result['faces']} faces in {result['frames']} frames; re-ID {pct(r['rate'])} and ¬ID {pct(n['rate'])} "
            f"at τ={t['value']} ({result['recognizer']}, FAR {t['far_target']}) over {r['faces']} judgeable faces, "
            f"{result['judgeable']['not_judgeable']} not judgeable (too dark or flat); "
            f"detected in output {pct(result['detection']['rate'])}; M_tc {tc['mean']}; leaks {lk['count']} on {len(lk['frames'])} frames; "
            f"suspects {len(lk['suspect'])} ({lk.get('detector', 'centerface')}, every {lk.get('every', 1)} frames)")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s: %(message)s")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        from engines.extras import require

        require("audit", "audit")
        run_detectors = run_detectors_from_report(args.report) if args.report else None
        config = config_from(args, max_frames=args.max_frames, run_detectors=run_detectors)
    except AnonswapError as e:
        return fail(e)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipeline.cli.args import interrupted_status, stop_on_signals

    stop_on_signals()
    try:
        result = run_audit(args.original, args.anonymized, args.output, args.html, config, boxes=args.boxes, report=args.report,
                           progress=not args.quiet, log=log)
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt as e:
        print("error: interrupted; no audit written", file=sys.stderr)
        return interrupted_status(e)
    log(summary_line(result))
    if args.fail_on_leak and (result["leaks"]["count"] or result["leaks"]["suspect"] or result["reid"]["matches"]):
        return 1
    return 0
