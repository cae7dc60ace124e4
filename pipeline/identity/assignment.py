"""Which fake identity a real person gets: PerFace's two steps under FIVA's constraints.

STEP 1 (PerFace §3.3) — attribute group. The gallery splits into 8 groups: male, female,
young, older and the four intersections. The distance of the query z to a group is the upper
bound of the 95% confidence interval (Student t) of its cosine distances to the group's
members, so a group is "close" only when it is close reliably, not through one look-alike;
the closest group wins. Known attributes (a fleet registry entry, an operator's label) skip
this step.

STEP 2 — inside the group, candidates are ranked by similarity to z and one is drawn
(deterministically from the seed and the person's key) among the least similar `pool`
fraction: perceptually far from the person, yet of their gender and age group. FIVA's
constraint removes any candidate whose |cos| to z exceeds the embedder's margin (far from z
and from −z, which a reconstruction attack could otherwise invert), in the selection space
and, when both latents exist, in SimSwap's latent space too.

When no gallery identity passes (small gallery, everyone already in use), a synthetic
identity is made: the L2-normalised mean of k ≥ 2 same-group identities (k-Same style: a
face that belongs to no one), under the same constraints. Sources in `exclude` (persons
alive at the same time) are never returned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from engines.embedders.base import normalize

from pipeline.identity.gallery import AGE_GROUPS, GENDERS, Source, SourceGallery

Group = tuple[str | None, str | None]  # (gender, age_group); None = any
GROUPS: tuple[Group, ...] = (
    ("male", None), ("female", None), (None, "young"), (None, "older"),
    *((g, a) for g in GENDERS for a in AGE_GROUPS),
)


def group_name(group: Group) -> str:
    return "-".join(x for x in group if x) or "all"


@dataclass(frozen=True)
class AssignConfig:
    pool: float = 0.34  # draw among the least similar third of the group
    margin: float = 0.9  # |cos(source, z)| must stay below this (selection space)
    latent_margin: float = 0.3  # the same in SimSwap's latent space (ArcFace: strangers ≈ 0)
    mix_k: int = 2  # identities averaged into a synthetic one
    seed: int = 0


@dataclass(frozen=True)
class Assignment:
    source: Source
    group: str
    basis: str  # "embedding", "attributes" or "none" (no usable face sample: drawn at random)
    similarity: float | None  # cos(source, z) in the selection space


class SourceAssigner:
    def __init__(self, gallery: SourceGallery, embedder: str, config: AssignConfig = AssignConfig()):
        self.gallery = gallery
        self.embedder = embedder
        self.config = config
        self.E = gallery.matrix(embedder)
        self.L = np.stack([s.latent for s in gallery.sources]) if gallery.has_latents else None
        self._groups = {g: np.array([i for i, s in enumerate(gallery.sources) if _in_group(s, g)], int) for g in GROUPS}
        self.synthetic: dict[str, Source] = {}
        self._by_id = {s.id: s for s in gallery.sources}

    def source(self, source_id: str) -> Source | None:
        """A gallery identity or a synthetic one (rebuilt from its members' ids when needed)."""
        if source_id in self._by_id:
            return self._by_id[source_id]
        if source_id not in self.synthetic and source_id.startswith("mix:"):
            ids = tuple(source_id[4:].split("+"))
            if all(i in self._by_id for i in ids):
                idx = [self.gallery.sources.index(self._by_id[i]) for i in ids]
                self.synthetic[source_id] = self._make_mix(source_id, ids, idx, (None, None))
        return self.synthetic.get(source_id)

    def group_distances(self, z: np.ndarray) -> dict[Group, float]:
        """Upper 95% confidence bound of the cosine distance from z to each non-empty group."""
        d = 1.0 - self.E @ z
        out = {}
        for g, idx in self._groups.items():
            if len(idx) == 0:
                continue
            x = d[idx]
            if len(x) == 1:
                out[g] = float(x[0])  # one member: no interval, its distance is all we know
            else:
                out[g] = float(x.mean() + stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
        return out

    def choose_group(self, z: np.ndarray | None, attributes: Group | None = None) -> Group:
        if attributes and any(attributes):
            return attributes
        if z is None:
            return (None, None)
        dist = self.group_distances(z)
        return min(dist, key=dist.get) if dist else (None, None)

    def assign(self, z: np.ndarray | None, *, key: int, exclude: set[str] = frozenset(),
               attributes: Group | None = None, z_latent: np.ndarray | None = None) -> Assignment | None:
        """A source for one person, or None when nothing satisfies the constraints."""
        group = self.choose_group(z, attributes)
        basis = "attributes" if attributes and any(attributes) else ("embedding" if z is not None else "none")
        rng = np.random.default_rng([self.config.seed, key])
        for g in (group, (group[0], None), (None, group[1]), (None, None)):  # widen only when needed
            members = self._members(g)
            if not len(members):
                continue
            pick = self._pick(members, z, z_latent, exclude, rng) or self._mix(members, z, z_latent, exclude, g)
            if pick is not None:
                sim = None if z is None else float(pick.embeddings[self.embedder] @ z)
                return Assignment(pick, group_name(g), basis, sim)
        return None

    def _members(self, g: Group) -> np.ndarray:
        if g == (None, None):
            return np.arange(len(self.gallery.sources))
        return self._groups.get(g, np.zeros(0, int))

    def _ok(self, emb: np.ndarray, latent: np.ndarray | None, z, z_latent) -> bool:
        if z is not None and abs(float(emb @ z)) >= self.config.margin:
            return False
        if z_latent is not None and latent is not None and abs(float(latent @ z_latent)) >= self.config.latent_margin:
            return False
        return True

    def _pick(self, members, z, z_latent, exclude, rng) -> Source | None:
        sources = self.gallery.sources
        cand = [i for i in members if sources[i].id not in exclude
                and self._ok(self.E[i], None if self.L is None else self.L[i], z, z_latent)]
        if not cand:
            return None
        if z is not None:
            cand.sort(key=lambda i: (float(self.E[i] @ z), sources[i].id))  # least similar first
            cand = cand[: max(1, int(round(self.config.pool * len(cand))))]
        else:
            cand.sort(key=lambda i: sources[i].id)
        return sources[cand[int(rng.integers(len(cand)))]]

    def _mix(self, members, z, z_latent, exclude, g: Group) -> Source | None:
        """A synthetic identity from k same-group identities, least similar to z first."""
        k = self.config.mix_k
        if len(members) < k:
            return None
        order = sorted(members, key=lambda i: (float(self.E[i] @ z) if z is not None else 0.0, self.gallery.sources[i].id))
        for combo in itertools.combinations(order, k):
            ids = tuple(sorted(self.gallery.sources[i].id for i in combo))
            sid = "mix:" + "+".join(ids)
            if sid in exclude:
                continue
            src = self.synthetic.get(sid) or self._make_mix(sid, ids, list(combo), g)
            if self._ok(src.embeddings[self.embedder], src.latent, z, z_latent):
                self.synthetic[sid] = src
                return src
        return None

    def _make_mix(self, sid: str, ids: tuple[str, ...], idx: list[int], g: Group) -> Source:
        members = [self.gallery.sources[i] for i in idx]
        embs = {name: normalize(np.mean([m.embeddings[name] for m in members], axis=0)) for name in self.gallery.embedders}
        latent = normalize(np.mean([m.latent for m in members], axis=0)) if all(m.latent is not None for m in members) else None
        gender = members[0].gender if len({m.gender for m in members}) == 1 else None
        age = members[0].age_group if len({m.age_group for m in members}) == 1 else None
        return Source(sid, gender, age, embs, latent=latent, members=ids)


def _in_group(s: Source, g: Group) -> bool:
    return (g[0] is None or s.gender == g[0]) and (g[1] is None or s.age_group == g[1])

