"""Command line: `python run_pipeline.py INPUT -o OUTPUT [options]`.

Bad input or output prints one line, `error: …`, and exits with status 2; nothing is left
at the output path. Later commands (`models`, `gallery`, `audit`) hang off `COMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .detector import AUTO_MAX_SIZE, AUTO_MIN_SIZE, DEFAULT_DETECT_SIZE, DEFAULT_THRESHOLD
from .errors import AnonswapError
from .run import MODES, RunConfig, anonymize_video
from .swapper import SwapConfig


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _probability(text: str) -> float:
    v = float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Anonymize every face in a video (streaming; output keeps size, frames, timestamps and audio).",
        epilog="Models: python run_pipeline.py models list | fetch NAME | verify",
    )
    p.add_argument("input", help="input video file (mp4, mov, mkv, ts, …)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov, .mkv, .ts, .m4v)")
    p.add_argument("--mode", choices=MODES, default="auto", help="anonymization (default auto: swap when available, else blur)")
    p.add_argument("--report", metavar="R.json", help="write a JSON run report")
    p.add_argument("--boxes", metavar="B.jsonl", help="write every anonymized face per frame (JSON Lines)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--detect-size", type=_positive_int, default=DEFAULT_DETECT_SIZE, metavar="N", help=f"detector working size, long side in pixels (default: the video's, clamped to {AUTO_MIN_SIZE}..{AUTO_MAX_SIZE})")
    p.add_argument("--threshold", type=_probability, default=DEFAULT_THRESHOLD, metavar="T", help=f"face score threshold (default {DEFAULT_THRESHOLD})")
    p.add_argument("--batch-size", type=_positive_int, default=4, metavar="N", help="frames per detector batch (default 4)")
    p.add_argument("--crf", type=int, default=20, help="x264 constant rate factor (default 20; lower is better quality)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    swap = p.add_argument_group("swap mode (SimSwap; official weights are CC BY-NC-SA 4.0, non-commercial)")
    swap.add_argument("--generator", metavar="PATH", help="SimSwap generator checkpoint (default: the fetched simswap-224 / simswap-512)")
    swap.add_argument("--arcface", metavar="PATH", help="SimSwap's arcface_checkpoint.tar, loaded without running pickled code (default: the fetched simswap-arcface)")
    swap.add_argument("--gallery", metavar="DIR", help="folder of source face photos: the fake identities")
    swap.add_argument("--swap-backend", choices=("onnxruntime", "torch"), default="onnxruntime", help="generator runtime (default onnxruntime, faster on CPU; it exports the checkpoint to ONNX once, into the cache)")
    swap.add_argument("--swap-size", type=int, choices=(224, 512), default=224, help="generator crop size (default 224)")
    swap.add_argument("--min-swap-face", type=float, default=SwapConfig.min_face, metavar="PX", help=f"faces narrower than this are blurred instead (default {SwapConfig.min_face:g})")
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
            print("warning: SimSwap's weights are CC BY-NC-SA 4.0: non-commercial use only.")
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


def _default_model(name: str) -> str | None:
    from engines import model_store

    path = model_store.model_path(name)
    return str(path) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "models":
        return models_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.detect_size is not None and args.detect_size < 32:
        print(f"error: --detect-size must be at least 32, got {args.detect_size}", file=sys.stderr)
        return 2
    config = RunConfig(
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
        swap=SwapConfig(size=args.swap_size, min_face=args.min_swap_face),
        swap_backend=args.swap_backend,
    )
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    # SIGTERM unwinds like Ctrl-C, so the temp output is removed instead of left behind.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = anonymize_video(
            args.input, args.output, config, report_path=args.report, boxes_path=args.boxes, progress=not args.quiet, log=log
        )
    except AnonswapError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return 130
    if not args.quiet:
        v, f, t = report["video"], report["faces"], report["timing"]
        swapped = f" ({f['swapped']} swapped, {sum(f['fallback'].values())} blurred instead)" if report["mode"] == "swap" else ""
        log(
            f"wrote {report['output']}: {v['frames_out']} frames, {f['anonymized']} faces anonymized{swapped} "
            f"({f['predicted']} predicted), {len(report['tracks'])} tracks, {t['fps']} fps"
        )
    return 0
