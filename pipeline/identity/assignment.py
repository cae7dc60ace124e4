"""Which fake identity a real person gets: PerFace's two steps under FIVA's constraints.

STEP 1 (PerFace §3.3) — attribute group. The gallery splits into 8 groups: male, female,
young, older and the four intersections. A person's gender and age group are estimated with a
calibrated confidence (pipeline.identity.attributes), or given (--person-attributes, a fleet
registry). A confident attribute binds: only groups of that gender (female, female-young,
female-older) or age are candidates, and when none of them has a usable source (a gallery
identity, else a synthetic mix of the same group) the person gets none and is blurred
(`no_source`): gender is never crossed silently. An unsure attribute is only a preference:
its likelier value first, then the mixed group, and the assignment lists it as `unsure`.

STEP 2 — inside the group, candidates are ranked by similarity to z and one is drawn
(deterministically from the seed and the person's key) among the least similar `pool`
fraction: perceptually far from the person, yet of their gender and age group. FIVA's
constraint removes any candidate whose |cos| to z exceeds the embedder's margin (far from z
and from −z, which a reconstruction attack could otherwise invert), in the selection space
and, when both latents exist, in SimSwap's latent space too.

When no gallery identity of a group passes (small gallery, everyone already in use), a
synthetic identity is made: the L2-normalised mean of k ≥ 2 identities of that group (k-Same
style: a face that belongs to no one), under the same constraints. Sources in `exclude`
(persons alive at the same time) are never returned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from engines.embedders.base import normalize

from pipeline.identity.attributes import AttributeConfig, AttributeModel, Group, PersonAttributes
from pipeline.identity.gallery import AGE_GROUPS, GENDERS, Source, SourceGallery

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
    attributes: AttributeConfig = field(default_factory=AttributeConfig)  # the embedder's entry in the model table


@dataclass(frozen=True)
class Assignment:
    source: Source
    group: str  # the group the source came from
    basis: str  # "embedding", "attributes" (given) or "none" (no usable face sample: drawn at random)
    similarity: float | None  # cos(source, z) in the selection space
    attributes: PersonAttributes = PersonAttributes()

    @property
    def unsure(self) -> list[str]:
        """Attributes step 1 did not hold the source to (estimated without confidence)."""
        return self.attributes.unsure


class SourceAssigner:
    """`assign(z, key=…) -> Assignment | None`. The attribute estimate is fitted on the
    gallery's labelled identities and references unless `attributes` is given."""

    def __init__(self, gallery: SourceGallery, embedder: str, config: AssignConfig = AssignConfig(),
                 attributes: AttributeModel | None = None):
        self.gallery = gallery
        self.embedder = embedder
        self.config = config
        self.E = gallery.matrix(embedder)  # first: a gallery without this embedder's vectors is refused here
        self.attributes = attributes or AttributeModel.fit(*gallery.labelled(embedder), config.attributes)
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

    def estimate(self, z: np.ndarray | None) -> PersonAttributes:
        return self.attributes.estimate(z)

    def assign(self, z: np.ndarray | None, *, key: int, exclude: set[str] = frozenset(),
               attributes: PersonAttributes | None = None, z_latent: np.ndarray | None = None) -> Assignment | None:
        """A source for one person, or None when no group their confident attributes allow
        has one that satisfies the constraints. `attributes`: default, estimated from z."""
        attributes = attributes if attributes is not None else self.estimate(z)
        rng = np.random.default_rng([self.config.seed, key])
        for g in attributes.candidate_groups():  # widens only what is unsure
            members = self._members(g)
            if not len(members):
                continue
            pick = self._pick(members, z, z_latent, exclude, rng) or self._mix(members, z, z_latent, exclude, g)
            if pick is not None:
                sim = None if z is None else float(pick.embeddings[self.embedder] @ z)
                return Assignment(pick, group_name(g), attributes.basis, sim, attributes)
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

