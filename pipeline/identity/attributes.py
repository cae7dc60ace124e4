"""A person's gender and age group, estimated with a confidence, so that step 1 keeps them.

Why not the group distances that step 1 used before: with dlib (the offline default) a face's
distance to a group's members says little about the group's attributes, and the Student-t bound
punishes small groups, so women were sent to mixed groups ("young", "older") and then drawn a
man. A linear classifier on the same selection embedding separates gender well even when fitted
on a few tens of persons; `benchmarks/attributes.py` measures both (results in
benchmarks/results/attributes.md).

The estimator, per attribute (gender: female/male, age_group: young/older):
- training set: one unit vector per labelled person: the gallery's identities, plus the
  reference photos a gallery may carry (`gallery build --reference-photos`), never the footage;
- direction: shrinkage LDA, w = ((1-s)·S + s·tr(S)/d·I)⁻¹ (μ₁ - μ₀), the score z·w against the
  midpoint. dlib's 128 dimensions outnumber the persons, so the within-class scatter S is
  shrunk towards a multiple of the identity (`shrinkage`, the model-table entry's setting);
- calibration: every training person is scored by a direction fitted without them (leave one
  person out); those held-out scores get one normal per class with a pooled spread, and
  P(label | z) follows with equal priors (a gallery's mix of men and women is not the
  footage's). Held-out scores are what an unseen face gets, so an attribute the training set
  cannot tell apart stays near 0.5 rather than looking certain;
- confident at or above `confident`; with fewer than `min_persons` labelled persons in a class
  the attribute is not estimated at all ("unsure", and the reason says why).

What follows (pipeline.identity.assignment): a confident attribute is a hard constraint, never
crossed; an unsure one is a preference (its likelier value first) that may widen to the mixed
group, and the report lists it under `unsure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.embedders.base import normalize

from pipeline.identity.gallery import AGE_GROUPS, GENDERS

ATTRIBUTES = {"gender": GENDERS, "age_group": AGE_GROUPS}

Group = tuple[str | None, str | None]  # (gender, age_group); None = any


@dataclass(frozen=True)
class AttributeConfig:
    """The estimator's settings; per embedder in its model-table entry (`attributes`)."""

    shrinkage: float = 0.8  # towards a multiple of the identity; 1.0 = nearest centroid
    confident: float = 0.95  # calibrated probability at which an attribute binds step 1
    min_persons: int = 3  # labelled persons per class, below which nothing is estimated

    def __post_init__(self) -> None:
        if not 0.0 < self.shrinkage <= 1.0:
            raise ValueError(f"attribute shrinkage must be in (0, 1], got {self.shrinkage}")
        if not 0.5 < self.confident <= 1.0:
            raise ValueError(f"attribute confidence must be in (0.5, 1], got {self.confident}")
        if self.min_persons < 2:
            raise ValueError(f"attribute min_persons must be >= 2 (one is held out to calibrate), got {self.min_persons}")


@dataclass(frozen=True)
class Estimate:
    """One attribute of one person: the likelier value, its probability, and whether it binds."""

    value: str | None = None  # None: nothing to go on
    p: float | None = None  # calibrated probability of `value`; 1.0 when a person said so
    confident: bool = False

    def to_dict(self) -> dict:
        return {"value": self.value, "p": None if self.p is None else round(self.p, 4), "confident": self.confident}


UNKNOWN = Estimate()


@dataclass(frozen=True)
class PersonAttributes:
    """What step 1 knows about a person. `basis`: "embedding" (estimated from their face),
    "attributes" (given: --person-attributes, a fleet registry), "none" (no usable sample)."""

    gender: Estimate = UNKNOWN
    age_group: Estimate = UNKNOWN
    basis: str = "none"

    @classmethod
    def given(cls, gender: str | None = None, age_group: str | None = None) -> "PersonAttributes":
        """Attributes someone knows (certain); an attribute left out stays unknown."""
        def one(v):
            return Estimate(v, 1.0, True) if v else UNKNOWN
        return cls(one(gender), one(age_group), "attributes")

    def overridden(self, given: dict) -> "PersonAttributes":
        """These estimates with the attributes in `given` replaced by certain values."""
        parts = {name: Estimate(given[name], 1.0, True) if given.get(name) else getattr(self, name) for name in ATTRIBUTES}
        return PersonAttributes(parts["gender"], parts["age_group"], "attributes")

    @property
    def required(self) -> Group:
        """The confident values: step 1 never leaves them."""
        return (self.gender.value if self.gender.confident else None,
                self.age_group.value if self.age_group.confident else None)

    @property
    def unsure(self) -> list[str]:
        return [name for name in ATTRIBUTES if not getattr(self, name).confident]

    def candidate_groups(self) -> list[Group]:
        """Groups in the order step 1 tries them: the likelier values first, then an unsure
        age widened, then an unsure gender (a crossed gender shows more than a crossed age);
        a confident attribute is never widened."""
        g, a = self.gender.value, self.age_group.value
        hard_g, hard_a = self.required
        out: list[Group] = []
        for grp in ((g, a), (g, hard_a), (hard_g, a), (hard_g, hard_a)):
            if grp not in out:
                out.append(grp)
        return out

    def to_dict(self) -> dict:
        return {"gender": self.gender.to_dict(), "age_group": self.age_group.to_dict(), "basis": self.basis}


@dataclass(frozen=True)
class _Head:
    """One attribute's fitted direction and calibration: P(positive | z) from z·w - b."""

    negative: str
    positive: str
    w: np.ndarray
    b: float
    mu: tuple[float, float]  # held-out score means: negative, positive class
    sd: float  # pooled held-out spread
    persons: tuple[int, int]

    def p_positive(self, z: np.ndarray) -> float:
        s = float(z @ self.w) - self.b
        logit = ((s - self.mu[0]) ** 2 - (s - self.mu[1]) ** 2) / (2.0 * self.sd * self.sd)
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0))))


class AttributeModel:
    """`AttributeModel.fit(vectors, labels) .estimate(z) -> PersonAttributes`.

    `labels[i]` is a mapping with `gender` and `age_group` (either may be None) for person i.
    An attribute that could not be fitted has its reason in `unfitted` and is always unsure.
    """

    def __init__(self, heads: dict[str, _Head], unfitted: dict[str, str], config: AttributeConfig):
        self.heads = heads
        self.unfitted = unfitted
        self.config = config

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: list[dict], config: AttributeConfig = AttributeConfig()) -> "AttributeModel":
        X = normalize(np.asarray(vectors, np.float32).reshape(len(labels), -1)) if len(labels) else np.zeros((0, 1), np.float32)
        heads, unfitted = {}, {}
        for name, values in ATTRIBUTES.items():
            rows = [i for i, lab in enumerate(labels) if lab.get(name) in values]
            y = np.array([labels[i][name] == values[1] for i in rows], bool)
            counts = (int((~y).sum()), int(y.sum()))
            if min(counts) < config.min_persons:
                unfitted[name] = (f"too few labelled persons to estimate {name} ({values[0]} {counts[0]}, "
                                  f"{values[1]} {counts[1]}; need {config.min_persons} of each)")
                continue
            head = _fit_head(X[rows].astype(np.float64), y, values, config.shrinkage)
            if head.mu[1] <= head.mu[0]:
                unfitted[name] = f"the labelled persons' {name} does not show in the embedding (held-out scores do not separate)"
                continue
            heads[name] = head
        return cls(heads, unfitted, config)

    def estimate(self, z: np.ndarray | None) -> PersonAttributes:
        if z is None:
            return PersonAttributes()
        z = normalize(np.asarray(z, np.float32)).astype(np.float64)
        parts = {}
        for name, values in ATTRIBUTES.items():
            head = self.heads.get(name)
            if head is None:
                parts[name] = UNKNOWN
                continue
            p = head.p_positive(z)
            value, p = (head.positive, p) if p >= 0.5 else (head.negative, 1.0 - p)
            parts[name] = Estimate(value, p, p >= self.config.confident)
        return PersonAttributes(parts["gender"], parts["age_group"], "embedding")

    def describe(self) -> dict:
        """For the report: what each attribute was fitted on, or why it was not."""
        out = {}
        for name, values in ATTRIBUTES.items():
            h = self.heads.get(name)
            out[name] = ({"persons": {values[0]: h.persons[0], values[1]: h.persons[1]}} if h
                         else {"not_estimated": self.unfitted.get(name, "no model")})
        return out


def _direction(X: np.ndarray, y: np.ndarray, shrinkage: float) -> tuple[np.ndarray, float]:
    m1, m0 = X[y].mean(axis=0), X[~y].mean(axis=0)
    R = np.vstack([X[y] - m1, X[~y] - m0])
    S = R.T @ R / len(R)
    S = (1.0 - shrinkage) * S + shrinkage * np.trace(S) / S.shape[0] * np.eye(S.shape[0])
    w = np.linalg.solve(S, m1 - m0)
    return w, float(w @ (m1 + m0) / 2.0)


def _fit_head(X: np.ndarray, y: np.ndarray, values: tuple[str, str], shrinkage: float) -> _Head:
    w, b = _direction(X, y, shrinkage)
    held = np.empty(len(X))
    for i in range(len(X)):  # leave one person out: the score an unseen face would get
        keep = np.arange(len(X)) != i
        wi, bi = _direction(X[keep], y[keep], shrinkage)
        held[i] = X[i] @ wi - bi
    mu0, mu1 = float(held[~y].mean()), float(held[y].mean())
    resid = np.r_[held[~y] - mu0, held[y] - mu1]
    sd = float(np.sqrt((resid ** 2).sum() / max(1, len(resid) - 2)))
    return _Head(values[0], values[1], w, b, (mu0, mu1), max(sd, 1e-6), (int((~y).sum()), int(y.sum())))


@dataclass(frozen=True)
class GivenAttributes:
    """`--person-attributes FILE`: attributes a user knows better than the estimate.

    JSON: {"persons": {"<person id>": {"gender": …, "age_group": …}},
           "tracks": {"<track id>": {…}}}, either section optional, either attribute optional
    (null or left out: estimated as usual). Ids are the run report's (`persons[].person_id`,
    `tracks[].track_id`): runs with the same video and settings number them the same way. A
    track's attributes go to the person that track starts; a person's own entry wins over
    their track's.
    """

    persons: dict[int, dict]
    tracks: dict[int, dict]
    path: str | None = None

    def for_person(self, person_id: int, track_id: int | None) -> dict:
        merged = dict(self.tracks.get(track_id, {})) if track_id is not None else {}
        merged.update(self.persons.get(person_id, {}))
        return merged

    @classmethod
    def load(cls, path: str) -> "GivenAttributes":
        import json
        import os

        from pipeline.core.errors import InputNotFoundError, InvalidInputError

        if not os.path.isfile(path):
            raise InputNotFoundError(f"--person-attributes file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"--person-attributes {path} is not JSON ({e})") from None
        sections = ("persons", "tracks")
        if not isinstance(doc, dict) or not doc or not set(doc) <= set(sections):
            found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise InvalidInputError(f"--person-attributes {path}: expected an object with \"persons\" and/or \"tracks\"; found {found}")
        out = {}
        for section in sections:
            entries = doc.get(section, {})
            if not isinstance(entries, dict):
                raise InvalidInputError(f"--person-attributes {path}: \"{section}\" must map ids to attributes, found {type(entries).__name__}")
            out[section] = {}
            for key, attrs in entries.items():
                where = f"--person-attributes {path}: {section}[{key!r}]"
                if not (isinstance(key, str) and key.isdigit() and int(key) > 0):
                    raise InvalidInputError(f"{where}: ids are positive integers as in the run report")
                if not isinstance(attrs, dict) or not set(attrs) <= set(ATTRIBUTES):
                    raise InvalidInputError(f"{where}: expected an object with gender and/or age_group, found {attrs!r}")
                for name, value in attrs.items():
                    if value is not None and value not in ATTRIBUTES[name]:
                        raise InvalidInputError(f"{where}.{name} must be {' or '.join(ATTRIBUTES[name])} (or null), found {value!r}")
                out[section][int(key)] = {k: v for k, v in attrs.items() if v is not None}
        return cls(out["persons"], out["tracks"], path)
