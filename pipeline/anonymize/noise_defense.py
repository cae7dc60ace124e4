"""Bounded uniform noise on swapped faces, a black-box defense against reconstruction attacks.

A model trained to reverse a face swap (recover the original face from the swapped one)
learns the generator's fine, deterministic residue. Rosberg's FIVA thesis (Table 5.8) tests
uniform noise U(-ε, ε) on the swapped output as a cheap defense: the attacker's input is
perturbed by noise that nobody can regenerate. `--defense-noise EPS` turns it on:

    noise = UniformNoise(eps=4.0, rng=np.random.default_rng())   # unseeded: never reproducible
    paste_back(frame, generated_crop, matrix, noise=noise)      # noise only where alpha > 0
"""

from __future__ import annotations

import math

import numpy as np

MAX_EPS = 64.0  # a quarter of the pixel range: beyond this the "defense" is destroying the video


def check_eps(eps: float) -> float:
    """`eps` as a float, or ValueError when it is not a finite number in [0, MAX_EPS] pixel levels."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"defense noise (--defense-noise) must be a number of pixel levels in [0, {MAX_EPS:g}], got {eps!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= MAX_EPS):
        raise ValueError(f"defense noise (--defense-noise) must be in [0, {MAX_EPS:g}] pixel levels (0-255 scale; 0 = off), got {eps!r}")
    return value


def add_uniform_noise(roi: np.ndarray, alpha: np.ndarray, eps: float, rng: np.random.Generator) -> None:
    """Adds alpha · U(-eps, eps) to `roi` (H×W×3 uint8, in place) wherever `alpha` (H×W) > 0.

    Why the noise is scaled by alpha: it belongs to the generated layer, so it fades out with
    that layer across the feathered edge. Full-strength noise up to the last pixel with
    alpha > 0 would draw a sharp boundary in texture statistics around every swapped face,
    which marks exactly what the feather is there to hide (where the swap was pasted, and
    so where to aim an attack); and the pixels it would add to near the edge are mostly the
    real frame showing through, which the swap did not produce. The identity-bearing core
    (alpha = 1) gets the full ε.

    Why the noise is added to the blended uint8 result rather than to the float crop: the
    change to each pixel is then exactly round(alpha · n), so no pixel moves by more than
    ceil(eps) levels from the noise-free output, pixels with alpha = 0 are bit-exact, and
    eps = 0 is the noise-free output itself (not a re-rounding of it). Values are clipped to
    0..255. The price: an eps below 0.5 rounds away entirely.

    Why `rng` is passed in: a run uses an unseeded generator (OS entropy), so an attacker who
    has the code and the settings still cannot regenerate and subtract the noise; tests seed it.
    """
    eps = check_eps(eps)
    if roi.ndim != 3 or roi.dtype != np.uint8 or alpha.shape != roi.shape[:2]:
        raise ValueError(f"add_uniform_noise expects roi (H, W, C) uint8 and alpha (H, W); got roi {roi.shape} {roi.dtype}, alpha {alpha.shape}")
    if eps == 0.0:
        return
    ys, xs = np.nonzero(alpha > 0)
    if not len(ys):
        return
    a = alpha[ys, xs].astype(np.float32)[:, None]
    n = rng.random((len(ys), roi.shape[2]), dtype=np.float32) * np.float32(2.0 * eps) - np.float32(eps)
    roi[ys, xs] = np.clip(np.rint(roi[ys, xs].astype(np.float32) + a * n), 0, 255).astype(np.uint8)


class UniformNoise:
    """A `paste_back` noise hook: `noise(roi, alpha)` adds alpha-scaled U(-eps, eps) in place."""

    def __init__(self, eps: float, rng: np.random.Generator | None = None):
        self.eps = check_eps(eps)
        self.rng = rng if rng is not None else np.random.default_rng()

    def __call__(self, roi: np.ndarray, alpha: np.ndarray) -> None:
        add_uniform_noise(roi, alpha, self.eps, self.rng)

    def __repr__(self) -> str:
        return f"UniformNoise(eps={self.eps:g})"
