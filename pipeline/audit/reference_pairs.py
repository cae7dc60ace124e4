"""Genuine and impostor score pairs the audit's threshold and EER are read from.

Two sources, both real faces scored by the audit's own recognizer:
- the original video: two tracks on screen on the same frame are two different people
  (impostor pairs, certain without any labels); samples of one track are one person
  (genuine pairs). "Different tracks" alone would not do: the same person comes back as a
  new track after a cut or an exit.
- optionally a folder of photos of known, different people (`--impostors DIR`, e.g.
  ../shared's identities), labelled by a CSV (`file` plus `person` or `identity`; rows with
  `faces_in_image` other than 1 are skipped) or else one person per photo.
Pairs are capped per track pair with a fixed seed, so a long shared shot does not drown
every other pair and the audit is reproducible.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.core.errors import InputNotFoundError, InvalidInputError

PAIRS_PER_GROUP = 256
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _cap(scores: np.ndarray, rng: np.random.Generator, cap: int = PAIRS_PER_GROUP) -> np.ndarray:
    scores = np.asarray(scores, np.float64).ravel()
    return scores if len(scores) <= cap else rng.choice(scores, cap, replace=False)


@dataclass
class ReferencePairs:
    genuine: list[float] = field(default_factory=list)
    impostor: list[float] = field(default_factory=list)
    impostor_sources: dict[str, int] = field(default_factory=dict)  # where the impostor pairs came from

    def add_video(self, samples: dict[int, list[np.ndarray]], together: set[tuple[int, int]], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n0 = len(self.impostor)
        for a, b in sorted(together):
            if samples.get(a) and samples.get(b):
                self.impostor.extend(_cap(np.stack(samples[a]) @ np.stack(samples[b]).T, rng).tolist())
        self.impostor_sources["video: tracks on screen together"] = len(self.impostor) - n0
        for tid in sorted(samples):
            z = np.stack(samples[tid]) if samples[tid] else np.zeros((0, 1))
            if len(z) >= 2:
                iu = np.triu_indices(len(z), 1)
                self.genuine.extend(_cap((z @ z.T)[iu], rng).tolist())

    def add_photos(self, embeddings: np.ndarray, persons: list[str], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n0 = len(self.impostor)
        for i, j in itertools.combinations(range(len(persons)), 2):
            s = float(embeddings[i] @ embeddings[j])
            (self.genuine if persons[i] == persons[j] else self.impostor).append(s)
        self.impostor = self.impostor[:n0] + _cap(np.array(self.impostor[n0:]), rng, 100_000).tolist()
        self.impostor_sources["photos"] = len(self.impostor) - n0


def photo_embeddings(folder: str, labels: str | None, detector, embedder) -> tuple[np.ndarray, list[str]]:
    """One embedding per usable photo (its largest face) and the person it shows."""
    if not os.path.isdir(folder):
        raise InputNotFoundError(f"impostor photo folder not found: {folder}")
    if labels:
        try:
            with open(labels, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as e:
            raise InvalidInputError(f"impostor labels unreadable: {labels}: {e}") from e
        key = "person" if rows and "person" in rows[0] else "identity"
        if not rows or "file" not in rows[0] or key not in rows[0]:
            raise InvalidInputError(f"impostor labels need columns file and person (or identity): {labels}")
        items = [(r["file"], r[key]) for r in rows if str(r.get("faces_in_image", "1")).strip() == "1"]
    else:
        items = [(f, f) for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTS)]
    vectors, persons = [], []
    for name, person in items:
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        det = detector.detect([rgb])[0]
        if not len(det):
            continue
        vectors.append(embedder.embed(rgb, det.landmarks[det.largest()][None])[0])
        persons.append(person)
    if len(set(persons)) < 2:
        raise InvalidInputError(f"impostor photos must show at least 2 different people with a detectable face: {folder}")
    return np.stack(vectors), persons
