"""Human similarity triplets (SimCelebA-style annotations) for PerFace training and evaluation.

File format: a CSV with the header `reference,a,b,votes_a,votes_b` (extra columns are
ignored), one triplet per row:

    reference,a,b,votes_a,votes_b
    img/000123.jpg,img/004512.jpg,img/010777.jpg,5,1

- `reference`, `a`, `b`: image paths, relative to the CSV's folder, or to `images` when it
  is given (absolute paths are used as they are).
- `votes_a` (`votes_b`): how many annotators judged A (B) more similar to the reference;
  non-negative integers.

The majority image is the positive, the other the negative; ties carry no preference and are
dropped. `agreement` is the majority's share of the votes. `unanimous=True` keeps only the
triplets where the minority got no vote (the paper's D2 subset).

`triplets_from_identities` derives triplets from identity labels (reference and positive
of one identity, negative of another, with synthetic 3–0 votes) for tests and bootstrapping;
`write_triplets_csv` writes any triplets in the same format.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("reference", "a", "b", "votes_a", "votes_b")
SYNTHETIC_VOTES = (3, 0)


@dataclass(frozen=True)
class Triplet:
    """`reference` is more like `positive` than `negative`, by `agreement` of the annotators."""

    reference: str
    positive: str
    negative: str
    agreement: float = 1.0
    votes: tuple[int, int] | None = None  # (positive, negative) when read from annotations

    @property
    def unanimous(self) -> bool:
        return self.agreement >= 1.0


def _votes(text: str, column: str, where: str) -> int:
    try:
        value = int(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{where}: {column} must be a whole number of votes, found {text!r}") from None
    if value < 0:
        raise ValueError(f"{where}: {column} must not be negative, found {value}")
    return value


def load_triplets(
    path: str | os.PathLike, *, images: str | os.PathLike | None = None, unanimous: bool = False, check_files: bool = True
) -> list[Triplet]:
    """Reads a triplet CSV (format in the module docstring); ValueError names the line of a bad row."""
    path = Path(path)
    root = Path(images) if images is not None else path.parent
    if images is not None and not root.is_dir():
        raise ValueError(f"images folder {root} not found (it is where the paths in {path} are looked up)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if header is None:
            raise ValueError(f"{path} is empty; expected the header {','.join(COLUMNS)}")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}:1: missing column(s) {', '.join(missing)}; expected the header {','.join(COLUMNS)}, found {','.join(header)}"
            )
        out = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in COLUMNS):
                raise ValueError(f"{where}: expected {len(header)} fields, found a row of a different length")
            va, vb = _votes(row["votes_a"], "votes_a", where), _votes(row["votes_b"], "votes_b", where)
            files = {}
            for c in ("reference", "a", "b"):
                name = row[c].strip()
                if not name:
                    raise ValueError(f"{where}: empty {c} path")
                full = root / name
                if check_files and not full.is_file():
                    raise ValueError(f"{where}: {c} image {name} not found (looked for {full}; pass --images DIR if the paths are relative to another folder)")
                files[c] = str(full)
            if va == vb:
                continue  # a tie (or no votes): no preference to learn
            pos, neg, hi, lo = ("a", "b", va, vb) if va > vb else ("b", "a", vb, va)
            if unanimous and lo > 0:
                continue
            out.append(Triplet(files["reference"], files[pos], files[neg], hi / (hi + lo), (hi, lo)))
    return out


def triplets_from_identities(rows, rng: np.random.Generator, n: int) -> list[Triplet]:
    """Up to `n` distinct triplets from (file, identity) rows, with synthetic 3–0 votes.

    Reference and positive are two files of one identity, the negative a file of another.
    (ref, pos, neg) and (pos, ref, neg) count as the same triplet (cosine is symmetric), so
    fewer than `n` come back when the labels do not allow more.
    """
    by_id: dict[str, list[str]] = {}
    for file, identity in rows:
        by_id.setdefault(str(identity), [])
        if str(file) not in by_id[str(identity)]:
            by_id[str(identity)].append(str(file))
    anchors = [k for k, files in by_id.items() if len(files) >= 2]
    if not anchors or len(by_id) < 2:
        raise ValueError(
            f"triplets need an identity with at least 2 files and at least 2 identities; "
            f"found {len(by_id)} identities, {len(anchors)} with 2+ files"
        )
    files_total = sum(len(fs) for fs in by_id.values())
    # (identity, number of (pair, negative) combinations it anchors), to sample uniformly
    weights = {k: len(by_id[k]) * (len(by_id[k]) - 1) // 2 * (files_total - len(by_id[k])) for k in anchors}
    total = sum(weights.values())
    if total <= max(4 * n, 100_000):
        candidates = []
        for k in anchors:
            files = by_id[k]
            negatives = [f for other, fs in by_id.items() if other != k for f in fs]
            for i in range(len(files)):
                for j in range(i + 1, len(files)):
                    candidates.extend((files[i], files[j], neg) for neg in negatives)
        chosen = [candidates[i] for i in rng.permutation(len(candidates))[:n]]
    else:  # large label sets: draw at random, skipping repeats
        keys = list(weights)
        p = np.array([weights[k] for k in keys], np.float64) / total
        others = {k: [f for other, fs in by_id.items() if other != k for f in fs] for k in keys}
        seen: set = set()
        chosen = []
        while len(chosen) < n:
            k = keys[rng.choice(len(keys), p=p)]
            i, j = sorted(rng.choice(len(by_id[k]), size=2, replace=False))
            cand = (by_id[k][i], by_id[k][j], others[k][rng.integers(len(others[k]))])
            if cand not in seen:
                seen.add(cand)
                chosen.append(cand)
    out = []
    for a, b, neg in chosen:
        ref, pos = (a, b) if rng.random() < 0.5 else (b, a)
        out.append(Triplet(ref, pos, neg, 1.0, SYNTHETIC_VOTES))
    return out


def write_triplets_csv(triplets: list[Triplet], path: str | os.PathLike, *, images: str | os.PathLike | None = None) -> str:
    """Writes `triplets` in the annotation format, positive as A; paths relative to `images` or the CSV's folder."""
    path = Path(path)
    root = os.path.abspath(images if images is not None else path.parent)

    def rel(p: str) -> str:
        return os.path.relpath(os.path.abspath(p), root)

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for t in triplets:
            pos, neg = _votes_of(t)
            w.writerow([rel(t.reference), rel(t.positive), rel(t.negative), pos, neg])
    return str(path)


def _votes_of(t: Triplet) -> tuple[int, int]:
    if t.votes is not None:
        return t.votes
    if t.agreement >= 1.0:
        return SYNTHETIC_VOTES
    pos = round(100 * t.agreement)
    return pos, 100 - pos
