"""Identity stage: tracks → persons → one fake identity each, between tracking and anonymizing.

Per track it keeps a quality-weighted embedding built from a few good samples (detected, not
predicted; wide enough; near-frontal; sharp). A track is *decided* once it has
`decide_after` samples, or when its first frame is about to leave the stage: it is linked to
a known person (PersonRegistry) or becomes a new person, whose gender and age group are
estimated from that embedding (or given: `GivenAttributes`, --person-attributes) and who gets
a source from the SourceAssigner within them. That source never changes afterwards, whatever
later samples say.

The stage holds back `lookahead` frames, so the decision is made on samples from the track's
first frames *before* those frames are anonymized: the first frames of a track are swapped
with the same identity as the rest instead of blurred, and nobody flickers between faces.
The same look-ahead gives a track's unconfirmed first detections (`track_id` None, tracker
hysteresis) their track once the tracker confirms it within the window.

Memory stays bounded in runs of any length (a live camera for days): a decided track keeps
only what its later frames need (its person and sampling schedule; the 224 crop and the
pending samples go once its person is linked or created), and a track is forgotten once no
frame can name it again: idle for longer than the tracker can take to give its id back
(`max_id_gap`, norfair's ReID) plus the look-ahead (frames still waiting here). Persons are
kept: what stays consistent across re-appearances is in them.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import cv2
import numpy as np

from engines.embedders.base import normalize

from pipeline.core.alignment import ARCFACE_TEMPLATE_112, align, estimate, warp_to_template
from pipeline.identity.persons import Person, PersonRegistry
from pipeline.core.records import Face, TrackedFrame
from pipeline.identity.assignment import Assignment, SourceAssigner, group_name
from pipeline.identity.attributes import GivenAttributes, PersonAttributes

log = logging.getLogger(__name__)
SCOPES = ("video", "fleet", "random")
FRONTAL_POSES = {1, 2, 3}  # 224 pose templates that are not full profiles


@dataclass(frozen=True)
class IdentityConfig:
    lookahead: int = 8  # frames held back for the decision (latency, not throughput)
    sample_every: int = 3  # frames between two samples of one track
    max_samples: int = 8  # per track; more adds cost, not accuracy
    decide_after: int = 2  # samples before a track is linked / assigned
    min_face: float = 32.0  # px width of a usable sample (weighted by size above it)
    min_sharpness: float = 10.0  # Laplacian variance of the 112 crop
    scope: str = "video"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown identity scope {self.scope!r}; valid: {', '.join(SCOPES)}")


@dataclass
class _Track:
    first_frame: int
    last_frame: int
    last_tick: int  # the stage's own frame count when last seen (live runs drop frames: indices jump)
    last_sample: int = -(10**9)
    samples: int = 0
    vector_sum: np.ndarray | None = None
    weight: float = 0.0
    best_crop: np.ndarray | None = None  # SimSwap crop (swap size) of the best sample, for z's latent; until decided
    best_weight: float = 0.0
    person: Person | None = None
    pending: list = field(default_factory=list)  # samples taken before the decision

    @property
    def embedding(self) -> np.ndarray | None:
        if self.vector_sum is None:
            return None
        return normalize(self.vector_sum)


class IdentityStage:
    """`stage(tracked_frames) -> tracked_frames` with person_id / source_id set on tracked faces.

    `max_id_gap`: the most frames the tracker can leave between two outputs of one track id
    (`TrackerConfig.max_id_gap`). Tracks idle for longer than that plus the look-ahead are
    forgotten, so the stage's size follows the people on screen, not the length of the run;
    None keeps every track (for a tracker that may bring an id back at any time). Should an
    id come back after all, it is a new track to the stage: decided again and linked to its
    person by embedding like any returning face.

    The PersonRegistry is not pruned: a person is one embedding (and the ids of their tracks),
    and recognising someone who comes back, so that they keep their fake identity and nobody
    else gets it meanwhile, needs every person seen so far.
    """

    def __init__(self, embedder, registry: PersonRegistry, assigner: SourceAssigner | None = None,
                 config: IdentityConfig = IdentityConfig(), latent_fn=None, gallery_fingerprint: str | None = None,
                 max_id_gap: int | None = None, given: GivenAttributes | None = None, embed=None,
                 latent_size: int = 224):
        """`embed(frame, landmarks)`: how this run's data path embeds (default: the embedder on
        the host image; on the device path the frame's tensor, run/build.py chooses once)."""
        self.embedder = embedder
        self._embed = embed or (lambda frame, landmarks: embedder.embed(frame.image, landmarks))
        self.registry = registry
        self.assigner = assigner
        self.config = config
        self.latent_fn = latent_fn  # SimSwap ArcFace on aligned crops, for the latent-space margin
        # The margin compares a face's latent with the sources', so it is taken from the same
        # crop as theirs: the swap size's (224 pose templates, or FFHQ 512; gallery.py).
        self.latent_size = latent_size
        self.gallery_fingerprint = gallery_fingerprint  # a fleet registry is tied to its gallery
        self.seed = secrets.randbits(32) if config.scope == "random" else config.seed
        self.max_id_gap = max_id_gap
        self.tracks: dict[int, _Track] = {}  # live tracks only: see _forget_idle
        self.assignments: dict[int, Assignment | None] = {}  # person id -> how its source was chosen
        self.given = given  # --person-attributes
        self.person_attributes: dict[int, PersonAttributes] = {}  # person id -> what step 1 knew
        self.samples_taken = 0
        self._confirmed: dict[int, int] = {}  # tracker candidate id -> confirmed track id, for live tracks
        self._tick = -1  # frames observed; the tracker's clock (one update per frame that reaches us)

    def __call__(self, items: Iterable[TrackedFrame]) -> Iterator[TrackedFrame]:
        window: deque[TrackedFrame] = deque()
        for tf in items:
            self._observe(tf)
            window.append(tf)
            while len(window) > self.config.lookahead:
                yield self._emit(window.popleft())
        while window:
            yield self._emit(window.popleft())

    # ---- observing ---------------------------------------------------------------------
    def _observe(self, tf: TrackedFrame) -> None:
        idx = tf.frame.index
        self._tick += 1
        self._forget_idle()
        chosen: list[tuple[Face, _Track, float]] = []
        for face in tf.faces:
            if face.track_id is None:
                continue
            if face.candidate_id is not None:
                self._confirmed[face.candidate_id] = face.track_id
            tr = self.tracks.get(face.track_id)
            if tr is None:
                tr = self.tracks[face.track_id] = _Track(idx, idx, self._tick)
            tr.last_frame, tr.last_tick = idx, self._tick
            if tr.person is not None:
                tr.person.last_frame = max(tr.person.last_frame, idx)
            if tr.samples >= self.config.max_samples or idx - tr.last_sample < self.config.sample_every:
                continue
            w = self._quality(tf.frame.image, face)
            if w > 0:
                chosen.append((face, tr, w))
        if chosen:
            landmarks = np.stack([face.landmarks for face, _, _ in chosen])
            vecs = self._embed(tf.frame, landmarks)
            # the crop only serves a new person's source choice: none for decided tracks
            want_crops = self.latent_fn is not None and any(tr.person is None for _, tr, _ in chosen)
            crops = align([tf.frame.image], [landmarks], self.latent_size).crops if want_crops else None
            for k, ((_, tr, w), v) in enumerate(zip(chosen, vecs)):
                self.samples_taken += 1
                tr.samples += 1
                tr.last_sample = idx
                if tr.person is not None:
                    tr.person.add(v, w)
                    continue
                tr.vector_sum = v * w if tr.vector_sum is None else tr.vector_sum + v * w
                tr.weight += w
                tr.pending.append((v, w))
                if crops is not None and w > tr.best_weight:
                    tr.best_crop, tr.best_weight = crops[k], w
        for face, tr, _ in chosen:  # only tracks that just got a sample can have become ready
            if tr.person is None and tr.samples >= self.config.decide_after:
                self._decide(face.track_id, tr)

    def _forget_idle(self) -> None:
        """Drops the tracks no frame can name any more.

        A frame in the look-ahead window was observed at most `lookahead` ticks ago, and the
        tracker outputs a track on every frame while it lives (predicted frames included), then
        can give its id to a new track up to `max_id_gap` frames later (ReID). A track idle for
        longer than both together is neither in the window nor coming back. Its unconfirmed
        first detections came before it, so their candidate ids go with it.
        """
        if self.max_id_gap is None:
            return
        horizon = self._tick - self.config.lookahead - self.max_id_gap
        gone = [tid for tid, tr in self.tracks.items() if tr.last_tick < horizon]
        if not gone:
            return
        for tid in gone:
            del self.tracks[tid]
        dropped = set(gone)
        self._confirmed = {c: t for c, t in self._confirmed.items() if t not in dropped}

    def state_size(self) -> dict[str, int]:
        """What the stage holds per track, to check it stays bounded in long (live) runs."""
        undecided = [tr for tr in self.tracks.values() if tr.person is None]
        return {
            "tracks": len(self.tracks),
            "undecided": len(undecided),
            "crops": sum(tr.best_crop is not None for tr in self.tracks.values()),
            "pending_samples": sum(len(tr.pending) for tr in self.tracks.values()),
            "confirmed": len(self._confirmed),
            "persons": len(self.registry.persons),
        }

    def _quality(self, image: np.ndarray, face: Face) -> float:
        """0 for a sample not worth embedding, else a weight in (0, 1]."""
        if face.predicted:
            return 0.0
        width = float(face.box[2] - face.box[0])
        if width < self.config.min_face:
            return 0.0
        try:
            _, pose = estimate(face.landmarks, 224)
        except ValueError:
            return 0.0
        if pose not in FRONTAL_POSES:
            return 0.0
        crop = warp_to_template(image, face.landmarks[None], ARCFACE_TEMPLATE_112, 112)[0]
        sharp = float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())
        if sharp < self.config.min_sharpness:
            return 0.0
        return max(1e-3, min(1.0, face.score)) * min(1.0, width / 112.0) * min(1.0, sharp / 100.0) * (1.0 if pose == 2 else 0.7)

    # ---- deciding ----------------------------------------------------------------------
    def _decide(self, tid: int, tr: _Track) -> None:
        z = tr.embedding
        person, sim = self.registry.match(z, tr.first_frame)
        if person is None:
            person = self.registry.new(tr.first_frame)
            self._assign(person, z, tr, tid)
        elif self.given and tid in self.given.tracks and tid not in person.track_similarity:
            # a person's source never changes: what this track was given came too late for it
            log.warning("--person-attributes: track %d is person %d again, whose fake identity was chosen with "
                        "their first track; give the attributes to person %d instead", tid, person.id, person.id)
        if tid not in person.track_similarity:  # an id forgotten and given back is still one track
            person.tracks.append(tid)
            person.track_similarity[tid] = sim
        person.first_frame = tr.first_frame if person.first_frame < 0 else min(person.first_frame, tr.first_frame)
        person.last_frame = max(person.last_frame, tr.last_frame)
        for v, w in tr.pending:
            person.add(v, w)
        tr.pending.clear()
        tr.best_crop = None  # the source (and its latent) is chosen: later frames only need the person
        tr.person = person

    def _assign(self, person: Person, z: np.ndarray | None, tr: _Track, tid: int) -> None:
        if self.assigner is None:
            return
        attributes = self.assigner.estimate(z)
        given = self.given.for_person(person.id, tid) if self.given else {}
        if given:
            attributes = attributes.overridden(given)
        self.person_attributes[person.id] = attributes
        z_latent = None
        if self.latent_fn is not None and tr.best_crop is not None:
            z_latent = np.asarray(self.latent_fn(tr.best_crop[None]), np.float32)[0]
        used = {p.source_id for p in self.registry.persons if p.source_id}
        alive = {p.source_id for p in self.registry.persons if p.source_id and p.last_frame >= tr.first_frame}
        # Never reuse a fake identity while unused ones remain; never share one at the same time.
        key = person.id + (self.seed << 20)
        a = self.assigner.assign(z, key=key, exclude=used, attributes=attributes, z_latent=z_latent) \
            or self.assigner.assign(z, key=key, exclude=alive, attributes=attributes, z_latent=z_latent)
        self.assignments[person.id] = a
        if a is not None:
            person.source_id = a.source.id
            person.group = a.group

    # ---- emitting ----------------------------------------------------------------------
    def _emit(self, tf: TrackedFrame) -> TrackedFrame:
        for face in tf.faces:
            if face.track_id is None and face.candidate_id in self._confirmed:
                face.track_id = self._confirmed[face.candidate_id]  # confirmed within the look-ahead
            if face.track_id is None:
                continue
            tr = self.tracks.get(face.track_id)
            if tr is None:  # _forget_idle keeps what waiting frames name; should that break, fail closed
                idx = tf.frame.index
                tr = self.tracks[face.track_id] = _Track(idx, idx, self._tick)
            if tr.person is None:  # its first frame is leaving: decide on what we have
                self._decide(face.track_id, tr)
            face.person_id = tr.person.id
            face.source_id = tr.person.source_id
            face.source_latent = self._latent(tr.person.source_id)
        return tf

    def _latent(self, source_id: str | None) -> np.ndarray | None:
        if source_id is None or self.assigner is None:
            return None
        src = self.assigner.source(source_id)
        return None if src is None else src.latent

    def _no_source(self, attrs: PersonAttributes) -> str:
        need = group_name(attrs.required)
        return (f"no {need} source (gallery identity or synthetic mix) is free and far enough from this person"
                if need != "all" else "no source is free and far enough from this person")

    def attribute_model(self) -> dict | None:
        """What the attribute estimate was fitted on (or why an attribute is not estimated)."""
        return None if self.assigner is None else self.assigner.attributes.describe()

    def persons(self) -> list[dict]:
        out = []
        for p in self.registry.persons:
            if not p.tracks:
                continue  # known from the fleet registry, not in this video
            a = self.assignments.get(p.id)
            attrs = self.person_attributes.get(p.id)
            out.append({
                "person_id": p.id,
                "source_id": p.source_id,
                "group": p.group,
                "basis": a.basis if a else (attrs.basis if attrs else ("fleet-registry" if p.from_registry else None)),
                "source_similarity": None if a is None or a.similarity is None else round(a.similarity, 4),
                "synthetic_source": bool(a and a.source.synthetic),
                # step 1's knowledge: estimate (or given values) with confidence; `unsure` lists what
                # the source was not held to; `no_source` says why a person got none (blurred)
                "attributes": attrs.to_dict() if attrs else None,
                "unsure": attrs.unsure if attrs else None,
                "no_source": self._no_source(attrs) if attrs and a is None else None,
                "tracks": p.tracks,
                # see Person.track_similarity
                "track_similarity": {str(t): (None if p.track_similarity.get(t) is None else round(p.track_similarity[t], 4)) for t in p.tracks},
                "first_frame": p.first_frame,
                "last_frame": p.last_frame,
                "from_registry": p.from_registry,
                "has_embedding": p.embedding is not None,
            })
        return out
