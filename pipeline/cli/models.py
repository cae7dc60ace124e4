"""`models list | fetch NAME [--url URL] | verify`: the model table from the command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
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


def installed_path(name: str) -> str | None:
    from engines import model_store

    path = model_store.model_path(name)
    return str(path) if path.exists() else None
