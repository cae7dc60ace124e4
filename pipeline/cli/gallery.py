"""`gallery build DIR --labels CSV -o GALLERY` | `gallery show GALLERY`: the fake identities."""

from __future__ import annotations

import logging
import sys

from engines.embedders import embedder_names
from pipeline.cli.args import OneLineParser, interrupted_status, stop_on_signals
from pipeline.cli.models import installed_path
from pipeline.core.errors import AnonswapError, InvalidInputError, fail
from pipeline.io.paths import check_outputs
from pipeline.run.build import load_simswap_arcface


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="run_pipeline.py gallery", description="The fake identities to swap in.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="detect, embed and store the identities of a folder of photos")
    b.add_argument("folder", help="folder of source face photos (consented or synthetic faces)")
    b.add_argument("--labels", help="CSV: file, identity, gender (male/female), age_group (young/older); default: one identity per photo, no attributes")
    b.add_argument("-o", "--output", required=True, help="gallery file to write (.npz)")
    b.add_argument("--embedder", action="append", choices=embedder_names(), help="selection embeddings to store (repeatable; default dlib)")
    b.add_argument("--embedder-model", action="append", default=[], metavar="NAME=ONNX", help="ONNX for an embedder, e.g. perface=out/perface.onnx")
    b.add_argument("--arcface", metavar="PATH", help="SimSwap's arcface_checkpoint.tar: store the swap latents (default: the fetched one, if any)")
    b.add_argument("--reference-photos", metavar="DIR", help="labelled photos of people never swapped in, only to fit the gender / age-group "
                   "estimate (e.g. when the gallery holds few women); only their vectors and labels are stored")
    b.add_argument("--reference-labels", metavar="CSV", help="labels for --reference-photos (the --labels columns)")
    s = sub.add_parser("show", help="list a gallery's identities")
    s.add_argument("gallery")
    return p


def main(argv: list[str]) -> int:
    """`gallery build DIR --labels CSV -o GALLERY` | `gallery show GALLERY`."""
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from pipeline.identity.gallery import LATENT_SIZES, SourceGallery

    stop_on_signals()
    try:
        if args.cmd == "show":
            g = SourceGallery.load(args.gallery)
            sizes = [str(size) for size in LATENT_SIZES if g.latents_for(size) is not None]
            print(f"{args.gallery}: {len(g.sources)} identities; embedders {', '.join(g.embedders)}; "
                  f"latents {'for ' + ' and '.join(sizes) if sizes else 'no'}"
                  + ("" if g.crops_512 is not None else "; no 512 crops (rebuild it to swap at 512)")
                  + (f"; {len(g.references)} reference persons (attribute estimate only)" if g.references else ""))
            for src in g.sources:
                print(f"  {src.id}: {src.gender or '?'}, {src.age_group or '?'}; {len(src.files)} photo(s)" +
                      (f"; label conflicts: {'; '.join(src.label_conflicts)}" if src.label_conflicts else ""))
            return 0
        from engines.embedders import load_embedder
        from engines.extras import missing, require, require_embedder

        from pipeline.detect.retinaface import RetinaFaceDetector
        for name in args.embedder or ["dlib"]:
            require_embedder(name, "gallery build")
        if args.arcface:
            require("swap", "gallery build --arcface (SimSwap's ArcFace runs in torch)", ("torch",))
        if bool(args.reference_photos) != bool(args.reference_labels):
            raise InvalidInputError("--reference-photos DIR and --reference-labels CSV go together (unlabelled references teach nothing)")
        paths = dict(kv.split("=", 1) for kv in args.embedder_model if "=" in kv)
        # every photo in the folders, not only the folders: `-o photos/p_3.jpg` is a photo
        check_outputs([args.folder, args.labels, args.reference_photos, args.reference_labels, args.arcface, *paths.values()],
                      {"-o": args.output})
        try:
            embedders = [load_embedder(name, paths.get(name)) for name in (args.embedder or ["dlib"])]
        except (ValueError, OSError) as e:
            raise InvalidInputError(f"embedder unusable: {e}") from e
        latent_fn = None
        # a fetched ArcFace without torch: no latents here, the run computes them from the crops
        arc_path = args.arcface or (installed_path("simswap-arcface") if "torch" not in missing("swap") else None)
        if arc_path:
            from engines.simswap import latent_from_crops

            arc = load_simswap_arcface(arc_path)
            latent_fn = lambda crops: latent_from_crops(arc, crops)  # noqa: E731
        detector = RetinaFaceDetector()
        g = SourceGallery.build(args.folder, detector, embedders, labels=args.labels, latent_fn=latent_fn)
        if args.reference_photos:
            g.references = SourceGallery.build(args.reference_photos, detector, embedders, labels=args.reference_labels).sources
        g.save(args.output)
    except AnonswapError as e:
        return fail(e)
    except KeyboardInterrupt as e:
        print("error: interrupted; no gallery written", file=sys.stderr)
        return interrupted_status(e)
    print(f"wrote {args.output}: {len(g.sources)} identities" + (f" and {len(g.references)} reference persons" if g.references else "")
          + f", embedders {', '.join(g.embedders)}, "
          f"latents {'224 and 512' if g.has_latents else 'no (computed at run time from the stored crops)'}")
    return 0
