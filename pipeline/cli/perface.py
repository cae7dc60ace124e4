"""`perface train | eval | make-triplets`: the PerFace recipe from the command line.

    perface make-triplets --labels labels.csv --images faces/ -n 500 -o triplets.csv
    perface train --triplets triplets.csv --init backbone.pth -o runs/perface
    perface eval --triplets val.csv --model runs/perface/perface.onnx

`main(argv)` parses and runs the words after `perface` (`run(args)` runs a parsed command).
Bad input (a missing file, a bad CSV, an image without a face) raises
`InvalidInputError` with a one-line message (exit status 2 from the CLI). Standalone:
`python -m pipeline.cli.perface train …`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from pipeline.cli.args import OneLineParser, interrupted_status, open_unit_interval, positive_int, stop_on_signals
from pipeline.core.errors import AnonswapError, InvalidInputError, fail
from pipeline.io.atomic import atomic_write, write_json_atomic
from pipeline.io.paths import check_outputs

PUBLIC_ARCHS = ("r50", "r18")
ARCH_CHOICES = (*PUBLIC_ARCHS, "tiny")  # tiny: the same layout at test size (not in --help)
MODEL_FILE, ONNX_FILE, METRICS_FILE = "perface.pth", "perface.onnx", "metrics.json"
NO_INIT_WARNING = (
    "warning: no --init: training starts from random weights. PerFace fine-tunes ArcFace R50; "
    "give insightface arcface_torch's backbone.pth (e.g. ms1mv3_arcface_r50) with --init"
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `perface` (with `train`, `eval`, `make-triplets`) on an argparse subparsers object."""
    p = subparsers.add_parser(
        "perface", help="PerFace: fine-tune ArcFace on human face-similarity triplets",
        description="PerFace (Kumagai et al., ICIP 2025): ArcFace IResNet fine-tuned with a cosine triplet loss on human similarity triplets.",
    )
    sub = p.add_subparsers(dest="perface_action", required=True, metavar="{train,eval,make-triplets}")
    arch_help = "backbone: r50 (PerFace, ArcFace R50; default) or r18"

    t = sub.add_parser("train", help="fine-tune on a triplet CSV; writes perface.pth, perface.onnx, metrics.json")
    t.add_argument("--triplets", required=True, metavar="CSV", help="annotations: reference,a,b,votes_a,votes_b")
    val = t.add_mutually_exclusive_group()
    val.add_argument("--val", metavar="CSV", help="validation triplets (default: hold out --val-fraction of --triplets)")
    val.add_argument("--val-fraction", type=open_unit_interval, default=0.2, metavar="F", help="share of triplets held out for validation when no --val (default 0.2)")
    t.add_argument("--images", metavar="DIR", help="folder the CSV's image paths are relative to (default: the CSV's folder)")
    t.add_argument("--init", metavar="BACKBONE.pth", help="arcface_torch backbone.pth to fine-tune (strongly recommended)")
    t.add_argument("--arch", choices=ARCH_CHOICES, default="r50", metavar="{r50,r18}", help=arch_help)
    t.add_argument("--epochs", type=positive_int, default=10, metavar="N", help="epochs (default 10)")
    t.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="triplets per batch (default 32)")
    t.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    t.add_argument("--margin", type=float, default=0.1, help="triplet margin on cosine similarity (default 0.1)")
    t.add_argument("--train-last", type=positive_int, metavar="N", help="fine-tune only the last N of the 6 stages (stem, layer1-4, head); default: the whole net")
    t.add_argument("--unanimous", action="store_true", help="keep only triplets without a dissenting vote (the paper's D2)")
    t.add_argument("--seed", type=int, default=0, help="seed for the split, shuffling and augmentation (default 0)")
    t.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for perface.pth, perface.onnx, metrics.json")
    t.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines")

    e = sub.add_parser("eval", help="triplet accuracy of a model (.onnx through ONNX Runtime, or a .pth state_dict)")
    e.add_argument("--triplets", required=True, metavar="CSV")
    e.add_argument("--model", required=True, metavar="FILE", help="perface.onnx, or a .pth state_dict (with --arch)")
    e.add_argument("--images", metavar="DIR", help="folder the CSV's image paths are relative to (default: the CSV's folder)")
    e.add_argument("--arch", choices=ARCH_CHOICES, default="r50", metavar="{r50,r18}", help=arch_help + "; for .pth only")
    e.add_argument("--unanimous", action="store_true", help="keep only triplets without a dissenting vote")

    m = sub.add_parser("make-triplets", help="derive triplets from identity labels (same person vs another), votes 3-0")
    m.add_argument("--labels", required=True, metavar="CSV", help="file,identity[,...] (a `person` column also works; rows with faces_in_image other than 1 are skipped)")
    m.add_argument("--images", required=True, metavar="DIR", help="folder the labels' files are in")
    m.add_argument("-n", type=positive_int, required=True, metavar="N", help="number of triplets (fewer when the labels allow fewer)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("-o", "--output", required=True, metavar="TRIPLETS.csv", help="written with paths relative to its own folder")
    return p


def _need_file(path: str | None, what: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise InvalidInputError(f"{what} {path} not found")


def _load(path: str, images: str | None, unanimous: bool) -> list:
    from engines.perface import load_triplets

    _need_file(path, "triplet file")
    try:
        return load_triplets(path, images=images, unanimous=unanimous)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise InvalidInputError(str(e).splitlines()[0]) from e


def _train(args, log) -> int:
    import numpy as np
    import torch

    from engines import iresnet
    from engines.perface import FaceCrops, train

    from pipeline.detect.retinaface import RetinaFaceDetector

    if Path(args.output).is_dir():  # a new folder holds no input; an existing one may
        check_outputs([args.triplets, args.val, args.images, args.init],
                      {f"-o {name}": str(Path(args.output) / name) for name in (MODEL_FILE, ONNX_FILE, METRICS_FILE)})
    triplets = _load(args.triplets, args.images, args.unanimous)
    if args.val:
        train_set, val_set = triplets, _load(args.val, args.images, args.unanimous)
    else:
        order = np.random.default_rng(args.seed).permutation(len(triplets))
        n_val = round(len(triplets) * args.val_fraction)
        val_set = [triplets[i] for i in order[:n_val]]
        train_set = [triplets[i] for i in order[n_val:]]
    if not train_set:
        raise InvalidInputError(f"{args.triplets} leaves no training triplets (after dropping ties{', keeping unanimous ones' if args.unanimous else ''} and the validation split)")
    _need_file(args.init, "--init backbone")
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"cannot create output folder {out}: {e.strerror}") from e

    torch.manual_seed(args.seed)
    model = iresnet.build(args.arch)
    if args.init:
        try:
            iresnet.load_backbone(model, args.init)
        except ValueError as e:
            raise InvalidInputError(str(e)) from e
    else:
        print(NO_INIT_WARNING, file=sys.stderr)
    log(f"{len(train_set)} training and {len(val_set)} validation triplets; aligning faces")
    try:
        faces = FaceCrops(RetinaFaceDetector())
        history = train(
            model, train_set, val_set, args.epochs, batch_size=args.batch_size, lr=args.lr, margin=args.margin,
            seed=args.seed, train_last=args.train_last, faces=faces, log=log,
        )
    except ValueError as e:  # an unreadable image or one without a face
        raise InvalidInputError(str(e).splitlines()[0]) from e

    with atomic_write(str(out / MODEL_FILE)) as f:
        torch.save(model.state_dict(), f.path)
    iresnet.export_onnx(model, out / ONNX_FILE)  # atomic too (engines.onnx_export)
    before, after = history[0], history[-1]
    metrics = {
        "recipe": "PerFace: cosine triplet loss, SGD momentum 0.9, weight decay 5e-4",
        "args": {k: v for k, v in vars(args).items() if not callable(v)},
        "triplets": {"train": len(train_set), "val": len(val_set)},
        "init": args.init or "random",
        "accuracy_before": before["val_accuracy"], "accuracy_after": after["val_accuracy"],
        "train_accuracy_before": before["train_accuracy"], "train_accuracy_after": after["train_accuracy"],
        "history": history,
    }
    write_json_atomic(str(out / METRICS_FILE), metrics)
    acc = (f"validation triplet accuracy {before['val_accuracy']:.3f} -> {after['val_accuracy']:.3f}"
           if after["val_accuracy"] is not None else f"training triplet accuracy {before['train_accuracy']:.3f} -> {after['train_accuracy']:.3f}")
    print(f"{acc}; wrote {out / MODEL_FILE}, {out / ONNX_FILE}, {out / METRICS_FILE}")
    return 0


def _onnx_embedder(path: str, arch: str):
    """An exported PerFace ONNX, loaded through the model table like `--embedder perface`."""
    from engines import load

    try:
        return load("perface", path=path).embed_crops
    except Exception as e:  # ORT raises its own types for a torn or foreign file
        raise InvalidInputError(f"{path} is not a PerFace/IResNet ONNX export ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def _torch_embedder(path: str, arch: str):
    from engines import iresnet
    from engines.perface import model_embedder

    try:
        model = iresnet.load_backbone(iresnet.build(arch), path)
    except ValueError as e:
        raise InvalidInputError(str(e)) from e
    return model_embedder(model)


# One loader per model file kind, chosen once: the ONNX export or the training checkpoint.
LOADERS = {".onnx": _onnx_embedder, ".pth": _torch_embedder, ".pt": _torch_embedder}


def _eval(args, log) -> int:
    from engines.perface import FaceCrops, triplet_accuracy

    from pipeline.detect.retinaface import RetinaFaceDetector

    _need_file(args.model, "model")
    kind = Path(args.model).suffix.lower()
    if kind not in LOADERS:
        raise InvalidInputError(f"model {args.model}: unknown kind {kind or '(no extension)'}; valid: {', '.join(LOADERS)}")
    triplets = _load(args.triplets, args.images, args.unanimous)
    if not triplets:
        raise InvalidInputError(f"{args.triplets} has no triplets to evaluate (all ties{' or not unanimous' if args.unanimous else ''})")
    embed = LOADERS[kind](args.model, args.arch)
    try:
        acc = triplet_accuracy(embed, triplets, FaceCrops(RetinaFaceDetector()))
    except ValueError as e:
        raise InvalidInputError(str(e).splitlines()[0]) from e
    print(f"triplet accuracy {acc:.4f} ({len(triplets)} triplets, {args.model})")
    return 0


def _read_labels(path: str, images: str) -> list[tuple[str, str]]:
    _need_file(path, "labels file")
    if not os.path.isdir(images):
        raise InvalidInputError(f"images folder {images} not found")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        id_col = "identity" if "identity" in header else "person" if "person" in header else None
        if "file" not in header or id_col is None:
            raise InvalidInputError(f"{path}:1: expected columns file,identity (or file,person), found {','.join(header) or 'nothing'}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            file, identity = (row.get("file") or "").strip(), (row.get(id_col) or "").strip()
            if not file or not identity:
                raise InvalidInputError(f"{where}: empty file or {id_col}")
            if "faces_in_image" in header and (row.get("faces_in_image") or "").strip() != "1":
                continue  # a group photo: which face is the identity is not known
            full = os.path.join(images, file)
            if not os.path.isfile(full):
                raise InvalidInputError(f"{where}: image {file} not found in {images}")
            rows.append((full, identity))
    return rows


def _make_triplets(args, log) -> int:
    import numpy as np

    from engines.perface import triplets_from_identities, write_triplets_csv

    check_outputs([args.labels, args.images], {"-o": args.output})  # the labels, and every photo under --images
    rows = _read_labels(args.labels, args.images)
    try:
        triplets = triplets_from_identities(rows, np.random.default_rng(args.seed), args.n)
    except ValueError as e:
        raise InvalidInputError(f"{args.labels}: {e}") from e
    out = Path(args.output)
    with atomic_write(str(out)) as f:
        write_triplets_csv(triplets, f.path, images=out.parent)  # paths relative to the final file's folder
    print(f"wrote {len(triplets)} triplets to {out}" + (f" (the labels allow only {len(triplets)})" if len(triplets) < args.n else ""))
    return 0


ACTIONS = {"train": _train, "eval": _eval, "make-triplets": _make_triplets}


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `perface` command; raises InvalidInputError (an AnonswapError) on bad input."""
    quiet = getattr(args, "quiet", False)
    log = (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr))
    return ACTIONS[args.perface_action](args, log)


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="run_pipeline.py")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    """`run_pipeline.py perface …` (argv is what follows `perface`): `error: …` and 2 on bad input."""
    import logging

    args = build_parser().parse_args(["perface", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    stop_on_signals()
    try:
        if args.perface_action == "train":
            from engines.extras import require

            require("swap", "perface train (it trains and exports in torch)")
        return run(args)
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt as e:
        print("error: interrupted; nothing written", file=sys.stderr)
        return interrupted_status(e)


if __name__ == "__main__":
    sys.exit(main())
