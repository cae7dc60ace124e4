"""`models list | fetch NAME [--url URL] | verify`: the model table from the command line."""

from __future__ import annotations

import sys

from pipeline.cli.args import OneLineParser


def build_parser() -> OneLineParser:
    """`models fetch` writes only into the model cache, never to a path the user names."""
    from engines.model_store import fetchable as can_fetch
    from engines.models import MODELS

    fetchable = sorted(n for n, e in MODELS.items() if can_fetch(e))
    p = OneLineParser(prog="run_pipeline.py models", description="Every model anonswap runs (engines/models.py); "
                                "the ones you download are never fetched by tests.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every model: task, licence, where its file comes from, settings, backends, status")
    f = sub.add_parser("fetch", help="download (resumable), verify and pin a model")
    f.add_argument("name", choices=fetchable)
    f.add_argument("--url", help="fetch from this URL (a mirror) instead of the official one")
    f.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("verify", help="check installed models by structure and against their pinned hashes")
    return p


def main(argv: list[str]) -> int:
    from engines import model_store
    from engines.models import MODELS

    args = build_parser().parse_args(argv)
    if args.cmd == "list":
        for row in model_store.status():
            entry = MODELS[row["name"]]
            print(f"{entry.name} [{entry.task}]: {entry.description}; licence {entry.licence}")
            print(f"    from {row['where']}" + (f"; {row['size']}" if row["size"] else ""))
            print(f"    backends: {', '.join(f'{b} ({ref})' for b, ref in entry.backends.items())}")
            print(f"    settings: {', '.join(f'{k}={v}' for k, v in entry.settings.items())}")
            state = "installed" if row["installed"] else "not installed"
            print(f"    {state}" + (f": {row['path']}" if row["path"] else ""))
        if any(e.non_commercial for e in MODELS.values()):
            print("warning: SimSwap's weights (CC BY-NC-SA 4.0), insightface's ArcFace and the face parser's weights "
                  "(trained on CelebAMask-HQ) are for non-commercial use only.")
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
            print(f"{row['name']}: not installed ({row['path'] or row['where']})")
            continue
        ok = (row["structure"] == "ok" or row["structure"].startswith("not checked")) and row["hash"] != "MISMATCH"
        bad += not ok
        print(f"{row['name']}: structure {row['structure']}, hash {row['hash']} ({row['path']})")
    return 1 if bad else 0


def installed_path(name: str) -> str | None:
    from engines import model_store

    path = model_store.model_path(name)
    return str(path) if path.exists() else None
