"""Swap mode: align → SimSwap generator (batched over all faces of several frames) → paste-back.

Fail closed: every face that cannot be swapped is blurred on that frame and the reason is
recorded in `face.outcome` ("blur:<reason>"), which the report counts:
- unconfirmed: the tracker has not confirmed the track yet (no stable identity to give it);
- no_source: the identity stage found no fake identity this person may take (gallery too
  small for everyone on screen, even with synthetic identities);
- predicted: the detector missed it, its landmarks are a Kalman guess (alignment would drift);
- bad_numbers: its landmarks or box were non-finite and had to be repaired (pipeline.track.guard);
- too_small: narrower than `min_face` pixels;
- profile: aligned to an extreme profile template, where SimSwap's output is unreliable;
- engine_error: the generator raised or returned non-finite values for the batch;
- swap_error: anything else in the swap path failed (e.g. degenerate landmarks).

The last two are failures, not choices: `face.data["swap_error"]` keeps what went wrong, the
report counts it (`faces.swap_errors`), and the command line says it even under `-q`, exiting
1 when no face attempted was swapped (the blurred output is kept).

`SwapConfig.defense_noise` > 0 adds bounded uniform noise to the swapped faces only
(pipeline.anonymize.noise_defense): blurred fallbacks and the rest of the frame are untouched.

With a `parser` (`--parsing-mask`, pipeline.anonymize.parsing) the swap keeps to the inner face
as SimSwap's `--use_mask` does; `face.data["parsing_mask"]` says per face whether the mask was
used ("used") or the whole crop was swapped ("gate", "inner_face", "error"), and the report
counts it. A parser failure never blurs a face: it is swapped without the mask, as by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engines import Engine

from pipeline.core.alignment import fit_all
from pipeline.anonymize.cover import FaceCover
from pipeline.anonymize.face_ops import HostFaceOps
from pipeline.anonymize.noise_defense import UniformNoise, check_eps
from pipeline.core.records import Face, TrackedFrame

log = logging.getLogger(__name__)
PROFILE_TEMPLATES = {0, 4}  # the 224 templates for full left/right profiles


@dataclass(frozen=True)
class SwapConfig:
    size: int = 224
    min_face: float = 40.0  # box width in frame pixels
    swap_profiles: bool = False
    defense_noise: float = 0.0  # U(-ε, ε) pixel levels (0-255) on swapped faces; 0 = off

    def __post_init__(self) -> None:
        object.__setattr__(self, "defense_noise", check_eps(self.defense_noise))


class FaceSwapper:
    """`apply_batch(frames)`: every face on these frames is swapped or, failing that, blurred.

    Which fake identity a face gets is not decided here: the identity stage sets
    `face.source_latent` (one per person, stable for the whole video). Where the pixel work
    runs (host OpenCV, or torch on a device) is `ops` (pipeline.anonymize.face_ops), fixed when built.
    """

    mode = "swap"

    def __init__(
        self,
        engine: Engine,
        *,
        fallback: FaceCover | None = None,
        config: SwapConfig = SwapConfig(),
        rng: np.random.Generator | None = None,
        ops=None,
        parser=None,
    ):
        """`rng` draws the defense noise; None (every run) is unseeded, so nobody can regenerate it.
        `parser`: a pipeline.anonymize.parsing.FaceParser for `--parsing-mask`, or None."""
        self.engine = engine
        self.parser = parser
        self.fallback = fallback or FaceCover("blur")
        self.config = config
        self.noise = UniformNoise(config.defense_noise, rng) if config.defense_noise > 0 else None
        self.ops = ops or HostFaceOps()

    def _reason(self, face: Face) -> str | None:
        if face.track_id is None:
            return "unconfirmed"
        if face.source_latent is None:
            return "no_source"
        if face.predicted:
            return "predicted"
        if face.data.get("repaired"):
            return "bad_numbers"
        if face.box[2] - face.box[0] < self.config.min_face:
            return "too_small"
        return None

    def apply_batch(self, frames: list[TrackedFrame]) -> None:
        todo: list[tuple[int, Face]] = []
        for fi, tf in enumerate(frames):
            for face in tf.faces:
                reason = self._reason(face)
                if reason:
                    face.outcome = f"blur:{reason}"
                else:
                    todo.append((fi, face))
        with self.ops.editing([tf.frame for tf in frames], needed=any(tf.faces for tf in frames)) as pixels:
            if pixels is None:
                return
            if todo:
                try:
                    self._swap(pixels, todo)
                except Exception as e:  # alignment or paste-back failed: blur what is not swapped yet
                    log.warning("swap failed on a batch, blurring its faces: %s", e)
                    for _, face in todo:
                        if face.outcome is None:
                            _failed(face, "blur:swap_error", e)
            self.fallback.cover_faces(pixels, [(fi, face) for fi, tf in enumerate(frames) for face in tf.faces if face.outcome != "swap"], self.ops)

    def _swap(self, pixels, todo: list[tuple[int, Face]]) -> None:
        n_frames = max(fi for fi, _ in todo) + 1
        per_frame = [[] for _ in range(n_frames)]
        for fi, face in todo:
            per_frame[fi].append(face.landmarks)
        fits = fit_all([np.array(l, np.float32).reshape(-1, 5, 2) for l in per_frame], self.config.size)
        # fit_all() walks frames in order and faces in the order given, as `todo` is.
        keep = []
        for k, (fi, face) in enumerate(todo):
            if not fits.ok[k]:
                _failed(face, "blur:swap_error", "no similarity fits its landmarks")
            elif fits.pose[k] in PROFILE_TEMPLATES and self.config.size == 224 and not self.config.swap_profiles:
                face.outcome = "blur:profile"
            else:
                keep.append(k)
        if not keep:
            return
        keep = np.array(keep)
        ops = self.ops
        image = ops.crops(pixels, fits, keep, self.config.size)
        latent = ops.latents([todo[k][1].source_latent for k in keep])
        try:
            out = ops.generate(self.engine, image, latent)
            if tuple(out.shape) != tuple(image.shape) or not ops.finite(out):
                raise ValueError(f"generator returned {tuple(out.shape)}, expected {tuple(image.shape)} of finite values")
        except Exception as e:  # any engine failure: these faces are blurred, never left as they are
            log.warning("swap engine failed on %d faces, blurring them: %s", len(keep), e)
            for k in keep:
                _failed(todo[k][1], "blur:engine_error", e)
            return
        if self.parser is not None:
            try:
                out, reasons = ops.parsing_blend(self.parser, image, out)
            except Exception as e:  # the whole crop is swapped instead, as without --parsing-mask
                log.warning("face parser failed on %d faces, swapping them without the parsing mask: %s", len(keep), e)
                reasons = ["error"] * len(keep)
            for k, reason in zip(keep, reasons):
                todo[k][1].data["parsing_mask"] = reason
        ops.paste(pixels, out, fits.frame_index[keep], fits.matrices[keep], noise=self.noise)
        for k in keep:
            todo[k][1].outcome = "swap"


def _failed(face: Face, outcome: str, why) -> None:
    """A face the swap attempted and could not do: blurred, and what went wrong kept for the
    report and the run's summary line (an exception's type and first line)."""
    face.outcome = outcome
    face.data["swap_error"] = why if isinstance(why, str) else f"{type(why).__name__}: {(str(why).splitlines() or [''])[0][:200]}"
