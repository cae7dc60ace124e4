"""The gallery of fake identities: who may be swapped in, with what attributes and vectors.

`python run_pipeline.py gallery build DIR --labels sources.csv -o gallery.npz` detects the
face in every photo, groups photos by the `identity` column (several crops of one person
become one entry, vectors averaged) and stores, per identity:
- attributes `gender` (male/female) and `age_group` (young/older), for PerFace's step 1;
- one selection embedding per embedder (dlib, arcface-r50, perface), for step 2 and the
  z / −z margins;
- the SimSwap latents, one per generator size, when SimSwap's ArcFace was given (else they
  are computed at run time from the stored crops);
- the aligned crops the latents come from: 224 (SimSwap's pose templates) and 512 (its FFHQ
  template). The swap needs only the latent; the crops let a later run compute latents and
  let reviewers see who the fake identities are.

Why a latent per size: SimSwap's inference takes the source's identity from a crop aligned
like the target's, resized to 112 by nearest — the 224 pose-template crop for the 224 model,
the FFHQ 512 crop for the 512 model. The two framings differ (eye distance 0.29 vs 0.246 of
the crop), so the ArcFace gives two different vectors, and the 512 generator must get its own.

Reference persons (optional, `--reference-photos DIR --reference-labels CSV`): labelled photos
of people who are never swapped in, only to fit the attribute estimate
(pipeline.identity.attributes) beyond the gallery's own identities, e.g. when the gallery holds
few women. Only their vectors and labels are kept, no pixels.

File format (`.npz`, read with `allow_pickle=False`, so loading runs no code):
- `meta`: UTF-8 JSON as a uint8 array: {"format": "anonswap-gallery", "version": 1,
  "identities": [{"id", "gender", "age_group", "files", "label_conflicts"}],
  "embedders": [names], "latent": "simswap-arcface" | null, "latent_512": "simswap-arcface" | null,
  "references" (optional): [{"id", "gender", "age_group", "files"}]};
- `crops`: (N, 224, 224, 3) uint8 RGB, SimSwap's 224 alignment;
- `crops_512` (optional; galleries built before it lack it): (N, 512, 512, 3) uint8 RGB, FFHQ alignment;
- `emb_<embedder>`: (N, D) float32 unit vectors, row i = identities[i];
- `latent`, `latent_512` (optional): (N, 512) float32 unit vectors for the 224 and 512 generators;
- `ref_emb_<embedder>` (with references): (R, D) float32 unit vectors, row i = references[i].
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from engines.embedders.base import normalize

from pipeline.core.alignment import align
from pipeline.core.errors import InputNotFoundError, InvalidInputError
from pipeline.io.npz_file import Checker, read_npz, write_npz

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
GENDERS = ("male", "female")
AGE_GROUPS = ("young", "older")
FORMAT = "anonswap-gallery"
VERSION = 1


LATENT_SIZES = (224, 512)


@dataclass
class Source:
    """One fake identity. `members` names the identities averaged into a synthetic one.

    `latent` is the one the swap uses: the latent for the gallery's swap size (`latents[size]`,
    see SourceGallery.use_size), or, for a synthetic identity, the mean of its members'.
    """

    id: str
    gender: str | None
    age_group: str | None
    embeddings: dict[str, np.ndarray]
    latent: np.ndarray | None = None
    members: tuple[str, ...] = ()
    files: list[str] = field(default_factory=list)
    label_conflicts: list[str] = field(default_factory=list)
    latents: dict[int, np.ndarray] = field(default_factory=dict)  # crop size (224, 512) → SimSwap latent

    @property
    def synthetic(self) -> bool:
        return bool(self.members)


@dataclass
class SourceGallery:
    """`size`: the swap size (generator crop) whose latents the sources' `latent` holds."""

    sources: list[Source]
    crops: np.ndarray  # (N, 224, 224, 3) uint8, row i = sources[i]
    latent_model: str | None = None
    references: list[Source] = field(default_factory=list)  # labelled persons never swapped in
    crops_512: np.ndarray | None = None  # (N, 512, 512, 3) uint8 FFHQ-aligned; None in galleries built before it
    size: int = 224

    def __post_init__(self) -> None:
        if self.size not in LATENT_SIZES:
            raise ValueError(f"a gallery serves swap sizes {LATENT_SIZES}, got {self.size}")
        for s in self.sources:  # a latent given alone belongs to the gallery's size
            if s.latent is not None and self.size not in s.latents:
                s.latents[self.size] = s.latent

    def crops_for(self, size: int) -> np.ndarray:
        """The crops SimSwap's inference takes a `size` generator's source latent from."""
        if size == 224:
            return self.crops
        if size == 512 and self.crops_512 is not None:
            return self.crops_512
        raise InvalidInputError(
            f"this gallery has no {size} crops (built before they were stored), so the {size} generator's "
            f"source latents cannot be computed as SimSwap does (from the FFHQ-aligned 512 crop); rebuild it with: "
            f"python run_pipeline.py gallery build DIR --labels CSV -o GALLERY"
        )

    def use_size(self, size: int) -> "SourceGallery":
        """Makes every source's `latent` the one for a `size` generator (None where not computed yet)."""
        if size not in LATENT_SIZES:
            raise ValueError(f"a gallery serves swap sizes {LATENT_SIZES}, got {size}")
        self.size = size
        for s in self.sources:
            s.latent = s.latents.get(size)
        return self

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.sources]

    @property
    def embedders(self) -> list[str]:
        return sorted(set.intersection(*(set(s.embeddings) for s in self.sources))) if self.sources else []

    def matrix(self, embedder: str) -> np.ndarray:
        if embedder not in self.embedders:
            raise InvalidInputError(
                f"gallery has no {embedder!r} embeddings (it has: {', '.join(self.embedders) or 'none'}); "
                f"rebuild it with: python run_pipeline.py gallery build DIR --labels CSV --embedder {embedder} -o GALLERY"
            )
        return np.stack([s.embeddings[embedder] for s in self.sources])

    def labelled(self, embedder: str) -> tuple[np.ndarray, list[dict]]:
        """One vector and its labels per person (identities, then references with that
        embedder's vectors): what the attribute estimate is fitted on."""
        persons = self.sources + [r for r in self.references if embedder in r.embeddings]
        vectors = np.stack([p.embeddings[embedder] for p in persons]) if persons else np.zeros((0, 1), np.float32)
        return vectors, [{"gender": p.gender, "age_group": p.age_group} for p in persons]

    @property
    def has_latents(self) -> bool:
        return all(s.latent is not None for s in self.sources)

    def fill_latents(self, latent_fn, model: str = "simswap-arcface", sizes: tuple[int, ...] | None = None) -> None:
        """Computes SimSwap latents from the stored crops (a gallery built without the ArcFace),
        for `sizes` (default: the gallery's swap size); `latent_fn(crops) -> (N, 512)`."""
        for size in sizes or (self.size,):
            latents = np.asarray(latent_fn(self.crops_for(size)), np.float32)
            for s, v in zip(self.sources, latents):
                s.latents[size] = v
        for s in self.sources:
            s.latent = s.latents.get(self.size)
        self.latent_model = model

    def latents_for(self, size: int) -> np.ndarray | None:
        """(N, 512) latents for a `size` generator, or None when not every source has one."""
        if all(size in s.latents for s in self.sources) and self.sources:
            return np.stack([s.latents[size] for s in self.sources]).astype(np.float32)
        return None

    def fingerprint(self) -> str:
        """Changes when identities or their vectors change: a fleet registry checks it."""
        h = hashlib.sha256()
        for s in self.sources:
            h.update(s.id.encode())
            for name in sorted(s.embeddings):
                h.update(np.ascontiguousarray(s.embeddings[name], np.float32).tobytes())
        return h.hexdigest()[:16]

    # ---- build -------------------------------------------------------------------------
    @classmethod
    def build(cls, folder: str, detector, embedders: list, *, labels: str | None = None, latent_fn=None) -> "SourceGallery":
        """Photos in `folder` (+ optional labels CSV: file, identity, gender, age_group)."""
        if not os.path.isdir(folder):
            raise InputNotFoundError(f"gallery folder not found: {folder}")
        rows = read_labels(labels, folder) if labels else [
            {"file": n, "identity": os.path.splitext(n)[0], "gender": None, "age_group": None}
            for n in sorted(os.listdir(folder)) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
        by_id: dict[str, list[dict]] = {}
        crops, crops_512, vectors = {}, {}, {}
        seen_pixels: dict[str, str] = {}
        for row in rows:
            path = os.path.join(folder, row["file"])
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                log.warning("gallery: cannot read %s, skipped", row["file"])
                continue
            digest = hashlib.sha256(img.tobytes()).hexdigest()
            if digest in seen_pixels:  # the same photo twice adds nothing but weight
                log.warning("gallery: %s is a copy of %s, skipped", row["file"], seen_pixels[digest])
                continue
            seen_pixels[digest] = row["file"]
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            dets = detector.detect([img])[0]
            if not len(dets):
                log.warning("gallery: no face in %s, skipped", row["file"])
                continue
            k = dets.largest()
            lm = dets.landmarks[k : k + 1]
            by_id.setdefault(row["identity"], []).append(row)
            if row["identity"] not in crops:
                crops[row["identity"]] = align([img], [lm], 224).crops[0]
                crops_512[row["identity"]] = align([img], [lm], 512).crops[0]
            for e in embedders:
                vectors.setdefault((row["identity"], e.name), []).append(e.embed(img, lm)[0])
        if not by_id:
            raise InvalidInputError(f"gallery folder has no image with a detectable face: {folder}")
        sources = []
        for ident, members in by_id.items():
            gender, g_conflict = _vote([m["gender"] for m in members])
            age, a_conflict = _vote([m["age_group"] for m in members])
            if g_conflict or a_conflict:
                log.warning("gallery: %s has conflicting labels (%s); kept the majority, ties to the first row",
                            ident, "; ".join(c for c in (g_conflict, a_conflict) if c))
            embs = {e.name: normalize(np.mean(vectors[(ident, e.name)], axis=0)) for e in embedders}
            sources.append(Source(ident, gender, age, embs, files=[m["file"] for m in members],
                                  label_conflicts=[c for c in (g_conflict, a_conflict) if c]))
        gallery = cls(sources, np.stack([crops[s.id] for s in sources]), crops_512=np.stack([crops_512[s.id] for s in sources]))
        if latent_fn is not None:
            gallery.fill_latents(latent_fn, sizes=LATENT_SIZES)
        return gallery

    # ---- file --------------------------------------------------------------------------
    def save(self, path: str) -> None:
        meta = {
            "identities": [
                {"id": s.id, "gender": s.gender, "age_group": s.age_group, "files": s.files,
                 "label_conflicts": s.label_conflicts}
                for s in self.sources
            ],
            "embedders": self.embedders,
            "latent": self.latent_model if self.latents_for(224) is not None else None,
            "latent_512": self.latent_model if self.latents_for(512) is not None else None,
        }
        arrays = {"crops": self.crops}
        if self.crops_512 is not None:
            arrays["crops_512"] = self.crops_512
        for name in self.embedders:
            arrays[f"emb_{name}"] = self.matrix(name).astype(np.float32)
        if self.references:
            meta["references"] = [{"id": r.id, "gender": r.gender, "age_group": r.age_group, "files": r.files}
                                  for r in self.references]
            for name in sorted(set.intersection(*(set(r.embeddings) for r in self.references))):
                arrays[f"ref_emb_{name}"] = np.stack([r.embeddings[name] for r in self.references]).astype(np.float32)
        for size, key in ((224, "latent"), (512, "latent_512")):
            latents = self.latents_for(size)
            if latents is not None:
                arrays[key] = latents
        write_npz(path, FORMAT, VERSION, meta, arrays, compressed=True)

    @classmethod
    def load(cls, path: str) -> "SourceGallery":
        if not os.path.isfile(path):
            raise InputNotFoundError(f"gallery file not found: {path}")
        meta, arrays = read_npz(path, FORMAT, VERSION, "anonswap gallery")
        _check(Checker(path, "gallery", meta, arrays))
        sources = []
        for i, m in enumerate(meta["identities"]):
            embs = {name: arrays[f"emb_{name}"][i] for name in meta["embedders"]}
            latents = {size: arrays[key][i] for size, key in ((224, "latent"), (512, "latent_512")) if key in arrays}
            sources.append(Source(m["id"], m["gender"], m["age_group"], embs, latent=latents.get(224), latents=latents,
                                  files=m.get("files", []), label_conflicts=m.get("label_conflicts", [])))
        ref_names = [k[len("ref_emb_"):] for k in arrays if k.startswith("ref_emb_")]
        references = [Source(m["id"], m["gender"], m["age_group"], {name: arrays[f"ref_emb_{name}"][i] for name in ref_names},
                             files=m.get("files", []))
                      for i, m in enumerate(meta.get("references", []))]
        return cls(sources, arrays["crops"], meta.get("latent") or meta.get("latent_512"), references, crops_512=arrays.get("crops_512"))

    @classmethod
    def open(cls, path: str, detector, embedders: list) -> "SourceGallery":
        """`--gallery` takes a built file or, for quick use, a folder of photos (built in memory;
        labels from `sources.csv` in that folder when present)."""
        if os.path.isdir(path):
            labels = os.path.join(path, "sources.csv")
            return cls.build(path, detector, embedders, labels=labels if os.path.isfile(labels) else None)
        gallery = cls.load(path)
        for e in embedders:  # vectors of another size (another model under the same name) never reach a run
            dims = {len(p.embeddings[e.name]) for p in gallery.sources + gallery.references if e.name in p.embeddings}
            if dims - {e.dim}:
                raise InvalidInputError(f"gallery {path}: its {e.name} vectors have {dims.pop()} values, the "
                                        f"{e.name} embedder gives {e.dim}; rebuild it with this model")
        return gallery


def _check(c: Checker) -> None:
    """The whole file, before anything reads it (the format is in the module docstring)."""
    label = (str, type(None))
    ids = c.records("identities", {"id": str, "gender": label, "age_group": label})
    refs = c.records("references", {"id": str, "gender": label, "age_group": label}, optional=True)
    if not ids:
        c.fail("it has no identities")
    for rows, what in ((ids, "identities"), (refs, "references")):
        for m in rows:
            if m["gender"] not in (None, *GENDERS) or m["age_group"] not in (None, *AGE_GROUPS):
                c.fail(f"{what} {m['id']!r} has gender {m['gender']!r}, age_group {m['age_group']!r}")
    for name in c.field("embedders", list):
        if not isinstance(name, str):
            c.fail(f"embedder name {name!r} is not a string")
        c.array(f"emb_{name}", (len(ids), None), "f")
    c.field("latent", label, optional=True)
    c.field("latent_512", label, optional=True)
    c.array("crops", (len(ids), 224, 224, 3), "u")
    c.array("crops_512", (len(ids), 512, 512, 3), "u", optional=True)
    for key in ("latent", "latent_512"):
        c.array(key, (len(ids), 512), "f", optional=True)
    for key in c.arrays:
        if key.startswith("ref_emb_"):
            c.array(key, (len(refs), None), "f")


def read_labels(path: str, folder: str) -> list[dict]:
    if not os.path.isfile(path):
        raise InputNotFoundError(f"labels file not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"file", "identity", "gender", "age_group"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise InvalidInputError(f"labels CSV needs columns {', '.join(sorted(need))}; found {reader.fieldnames}: {path}")
        rows = []
        for line, row in enumerate(reader, start=2):
            gender = (row["gender"] or "").strip().lower() or None
            age = (row["age_group"] or "").strip().lower() or None
            if gender not in (None, *GENDERS) or age not in (None, *AGE_GROUPS):
                raise InvalidInputError(
                    f"{path} line {line}: gender must be {'/'.join(GENDERS)} and age_group {'/'.join(AGE_GROUPS)} "
                    f"(or empty); found {row['gender']!r}, {row['age_group']!r}"
                )
            if not row["file"] or not row["identity"]:
                raise InvalidInputError(f"{path} line {line}: file and identity are required")
            if not os.path.isfile(os.path.join(folder, row["file"])):
                raise InputNotFoundError(f"{path} line {line}: {row['file']} not found in {folder}")
            rows.append({"file": row["file"], "identity": row["identity"].strip(), "gender": gender, "age_group": age})
    if not rows:
        raise InvalidInputError(f"labels CSV has no rows: {path}")
    return rows


def _vote(values: list) -> tuple[str | None, str | None]:
    """Majority label; ties go to the first row. Returns (label, conflict description or None)."""
    known = [v for v in values if v]
    if not known:
        return None, None
    counts = Counter(known)
    best = max(counts.values())
    winner = next(v for v in known if counts[v] == best)
    conflict = f"{dict(counts)} → {winner}" if len(counts) > 1 else None
    return winner, conflict

