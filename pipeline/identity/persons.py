"""Real persons seen so far, each with the one fake identity they keep.

A new track is linked to a known person when their embeddings match (cosine at or above the
embedder's calibrated `same_person`) and that person was not on screen at the same time as
the track (one person cannot be two tracks at once). Otherwise it is a new person.

Persistence is opt-in (`--identity-scope fleet`): the file keeps, per person, only what the
linking needs — the mean embedding of the embedder that made it, the fake identity's id and
the attribute group — no images, boxes, times or video names. It is biometric data all the
same: store it like the raw footage, and delete it to make every person new again.

Format (`.npz`, loaded with `allow_pickle=False`): `meta` (UTF-8 JSON as uint8: format,
version, embedder, gallery fingerprint, persons [{id, source_id, group, weight}]) and
`embeddings` (P, D) float32.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field

import numpy as np

from engines.embedders.base import normalize

from pipeline.core.errors import InvalidInputError
from pipeline.io.npz_file import Checker, read_npz, write_npz

FORMAT = "anonswap-person-registry"
VERSION = 1


@dataclass
class Person:
    """One real person: small (one embedding sum), kept for the whole run, never pruned.

    Recognising someone who comes back, so that they keep their fake identity and nobody else
    is given it while they may return, depends on every person seen so far; the identity
    stage forgets tracks, not persons. `tracks` and `track_similarity` grow by one entry per
    track of this person, for the report.
    """

    id: int
    embedding_sum: np.ndarray | None  # weighted sum of unit vectors; None until a usable sample
    weight: float = 0.0
    source_id: str | None = None
    group: str | None = None
    first_frame: int = -1
    last_frame: int = -1
    tracks: list[int] = field(default_factory=list)
    from_registry: bool = False  # known from an earlier video (fleet scope)
    loaded_sum: np.ndarray | None = None  # as read from the registry: what this run added is the rest
    loaded_weight: float = 0.0
    # track id -> cosine to the best earlier person when the track was decided (None: no usable
    # sample or nobody to compare with); linked when >= same_person. Lives here, not per track in
    # the stage, because the stage forgets tracks and the report needs this for every track.
    track_similarity: dict[int, float | None] = field(default_factory=dict)

    @property
    def embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None or self.weight <= 0:
            return None
        return normalize(self.embedding_sum)

    def add(self, vector: np.ndarray, weight: float) -> None:
        self.embedding_sum = vector * weight if self.embedding_sum is None else self.embedding_sum + vector * weight
        self.weight += weight


class PersonRegistry:
    def __init__(self, embedder: str, same_person: float):
        self.embedder = embedder
        self.same_person = same_person
        self.persons: list[Person] = []

    def match(self, z: np.ndarray | None, first_frame: int) -> tuple[Person | None, float | None]:
        """The best known person for a track starting at `first_frame`, and the similarity."""
        if z is None:
            return None, None
        best, best_sim = None, -2.0
        for p in self.persons:
            e = p.embedding
            if e is None or p.last_frame >= first_frame:  # on screen together: not the same person
                continue
            sim = float(e @ z)
            if sim > best_sim:
                best, best_sim = p, sim
        if best is not None and best_sim >= self.same_person:
            return best, best_sim
        return None, (best_sim if best is not None else None)

    def new(self, frame: int) -> Person:
        p = Person(max((q.id for q in self.persons), default=0) + 1, None, first_frame=frame, last_frame=frame)
        self.persons.append(p)
        return p

    # ---- fleet persistence -------------------------------------------------------------
    def save(self, path: str, gallery_fingerprint: str) -> None:
        """Merges this run into the file under an exclusive lock, then replaces the file.

        Fleet workers run videos side by side, each from the registry as it was when its
        video started; writing our copy back would drop the persons others added meanwhile.
        So the file is re-read under the lock and only this run's additions go in: samples
        of persons it read from the file, and new persons, each merged into a person another
        video added meanwhile when their embeddings match (that person keeps the fake identity
        the file has; this video used its own, recorded in its report).
        """
        with _locked(path + ".lock"):
            current = PersonRegistry.load(path, self.embedder, self.same_person, gallery_fingerprint)
            current._merge(self)
            current._write(path, gallery_fingerprint)

    def _merge(self, run: "PersonRegistry") -> None:
        by_id = {p.id: p for p in self.persons}
        for p in run.persons:
            if p.embedding_sum is None or p.weight <= 0 or not p.source_id:
                continue
            if p.from_registry and p.id in by_id:
                added = p.weight - p.loaded_weight
                if added > 0:
                    base = by_id[p.id]
                    base.embedding_sum = base.embedding_sum + (p.embedding_sum - p.loaded_sum)
                    base.weight += added
                continue
            match, _ = self.match(p.embedding, first_frame=0)
            if match is not None:
                match.add(p.embedding, p.weight)
            else:
                q = self.new(-1)
                q.embedding_sum, q.weight, q.source_id, q.group = p.embedding_sum.copy(), p.weight, p.source_id, p.group
                q.from_registry = True

    def _write(self, path: str, gallery_fingerprint: str) -> None:
        keep = [p for p in self.persons if p.embedding is not None and p.source_id]
        meta = {
            "embedder": self.embedder, "gallery": gallery_fingerprint,
            "persons": [{"id": p.id, "source_id": p.source_id, "group": p.group, "weight": round(p.weight, 4)} for p in keep],
        }
        emb = np.stack([p.embedding for p in keep]).astype(np.float32) if keep else np.zeros((0, 1), np.float32)
        write_npz(path, FORMAT, VERSION, meta, {"embeddings": emb})

    @classmethod
    def load(cls, path: str, embedder: str, same_person: float, gallery_fingerprint: str, dim: int | None = None) -> "PersonRegistry":
        """`dim`: the embedder's vector size, checked against the file's."""
        reg = cls(embedder, same_person)
        if not os.path.exists(path):
            return reg  # the first video of a fleet starts it
        meta, arrays = read_npz(path, FORMAT, VERSION, "anonswap person registry")
        c = Checker(path, "person registry", meta, arrays)
        c.field("embedder", str)
        c.field("gallery", str)
        rows = c.records("persons", {"id": int, "source_id": str, "group": (str, type(None)), "weight": (int, float)})
        emb = c.array("embeddings", (len(rows), None), "f")
        if rows and dim is not None and emb.shape[1] != dim:
            c.fail(f"its vectors have {emb.shape[1]} values, the {embedder} embedder gives {dim}")
        if meta["embedder"] != embedder:
            raise InvalidInputError(f"person registry {path} was made with embedder {meta['embedder']!r}, not {embedder!r}; use the same --embedder or a new registry file")
        if meta["gallery"] != gallery_fingerprint:
            raise InvalidInputError(f"person registry {path} belongs to another gallery (fingerprint {meta['gallery']}); use the gallery it was made with or a new registry file")
        for row, vec in zip(meta["persons"], emb):
            total = vec.astype(np.float32) * row["weight"]
            reg.persons.append(Person(row["id"], total, row["weight"], row["source_id"], row["group"], -1, -1, [], True,
                                      total.copy(), row["weight"]))
        return reg


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive advisory lock (flock) on a file beside the registry, held while merging,
    and removed after: the holder unlinks it before unlocking, so a process that locked the
    old file checks that its file is still the one at `path` and otherwise tries again."""
    while True:
        fh = open(path, "a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield
    finally:
        os.unlink(path)
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
