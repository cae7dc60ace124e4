"""The numbers of the audit, as pure functions of similarity scores.

Scores are cosine similarities of unit embeddings (higher = more alike); a pair "matches" at a
threshold τ when its score is ≥ τ. The threshold is not a constant of the recognizer: it is
read off impostor pairs (different people) at a target false acceptance rate, as in Rosberg's
FIVA thesis (Algorithm 2: threshold at FAR; Algorithm 1: equal error rate), so "re-identified"
means "matched as often as a verification system tuned to that FAR would match it".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FarThreshold:
    value: float  # the smallest τ whose FAR on these impostor pairs is ≤ the target
    far_target: float
    far_achieved: float
    impostor_pairs: int


def far_threshold(impostor: np.ndarray, far: float) -> FarThreshold:
    """Threshold at a target false acceptance rate (thesis Algorithm 2).

    With n impostor scores sorted high to low, at most k = ⌊far·n⌋ may be accepted, so τ sits
    just above the (k+1)-th highest score: every score strictly above it is accepted. Ties at
    that score are all rejected, so the achieved FAR never exceeds the target; with k = 0 it is
    just above the highest impostor score (n < 1/far cannot resolve the target any finer, which
    the caller reports).
    """
    if not 0.0 < far < 1.0:
        raise ValueError(f"FAR must be in (0, 1), got {far}")
    s = np.sort(np.asarray(impostor, np.float64).ravel())[::-1]
    if not len(s):
        raise ValueError("no impostor pairs to set a threshold from")
    if not np.isfinite(s).all():
        raise ValueError("impostor scores must be finite")
    k = int(np.floor(far * len(s) + 1e-9))
    tau = float(np.nextafter(s[k], np.inf)) if k < len(s) else float(s[-1])
    return FarThreshold(tau, far, float(np.mean(s >= tau)), len(s))


@dataclass(frozen=True)
class Eer:
    eer: float
    threshold: float


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> Eer:
    """Equal error rate (thesis Algorithm 1): where FAR(τ) = FRR(τ), interpolated.

    FAR(τ) (impostors ≥ τ) falls and FRR(τ) (genuine < τ) rises as τ sweeps over every
    observed score; between the two sweep points where FAR − FRR changes sign both are linear
    in the step, so the crossing is interpolated rather than snapped to a sample.
    """
    g = np.sort(np.asarray(genuine, np.float64).ravel())
    i = np.sort(np.asarray(impostor, np.float64).ravel())
    if not len(g) or not len(i):
        raise ValueError("EER needs genuine and impostor scores")
    taus = np.unique(np.concatenate([g, i, [np.inf]]))
    far = 1.0 - np.searchsorted(i, taus, side="left") / len(i)
    frr = np.searchsorted(g, taus, side="left") / len(g)
    d = far - frr  # non-increasing in τ
    j = int(np.argmax(d <= 0))  # first τ where FAR ≤ FRR (exists: at +inf FAR = 0)
    if j == 0 or d[j] == 0:
        return Eer(float((far[j] + frr[j]) / 2), float(taus[j]))
    t = d[j - 1] / (d[j - 1] - d[j])  # fraction of the step where the difference crosses 0
    rate = far[j - 1] + t * (far[j] - far[j - 1])
    lo, hi = taus[j - 1], taus[j] if np.isfinite(taus[j]) else taus[j - 1]
    return Eer(float(rate), float(lo + t * (hi - lo)))


@dataclass(frozen=True)
class MatchRate:
    rate: float | None
    matches: int
    faces: int


def match_rate(scores: np.ndarray, tau: float) -> MatchRate:
    s = np.asarray(scores, np.float64).ravel()
    m = int(np.sum(s >= tau))
    return MatchRate(m / len(s) if len(s) else None, m, len(s))


def pair_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors: score of face i in `a` against the same face in `b`."""
    return np.einsum("ij,ij->i", np.asarray(a, np.float32), np.asarray(b, np.float32)).astype(np.float64)


@dataclass(frozen=True)
class Spread:
    mean: float | None
    std: float | None
    n: int

    def as_dict(self, count_key: str = "pairs") -> dict:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"mean": r(self.mean), "std": r(self.std), count_key: self.n}


def spread(values) -> Spread:
    v = np.asarray(list(values), np.float64)
    return Spread(float(v.mean()), float(v.std()), len(v)) if len(v) else Spread(None, None, 0)


def temporal_distances(tracks: dict[int, list[tuple[int, np.ndarray]]]) -> list[float]:
    """Identity distance 1 − cos between consecutive samples of each track (M_tc's terms).

    `tracks` maps a track to its (frame, embedding) samples; a sample is consecutive with the
    previous one of the same track, whatever the frame gap (the caller samples every N frames).
    """
    return [d for samples in tracks.values() for d in track_distances(samples)]


def track_distances(samples: list[tuple[int, np.ndarray]]) -> list[float]:
    """1 − cos between consecutive (frame, embedding) samples of one track, in frame order."""
    samples = sorted(samples, key=lambda s: s[0])
    return [float(1.0 - np.dot(a, b)) for (_, a), (_, b) in zip(samples, samples[1:])]


def landmark_displacement(original: np.ndarray, output: np.ndarray) -> float:
    """Mean distance between the 5 landmarks in units of the original's inter-ocular distance,
    so a pose/expression change reads the same on a 40-px face and a 400-px face."""
    o = np.asarray(original, np.float64).reshape(5, 2)
    p = np.asarray(output, np.float64).reshape(5, 2)
    iod = max(float(np.linalg.norm(o[1] - o[0])), 1.0)
    return float(np.linalg.norm(o - p, axis=1).mean() / iod)
