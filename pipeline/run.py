"""One video end to end: decode → detect → track → anonymize → encode, streaming.

Nothing is written under the final names until the whole video is done: the video, the
boxes export and the report each go to a temp file and are renamed at the end, and any
error removes them.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from tqdm import tqdm

from trackers import FaceTracker, TrackerConfig

from .anonymizer import Anonymizer
from .identity import IdentityConfig, IdentityStage
from .person_registry import PersonRegistry
from .source_assignment import AssignConfig, SourceAssigner
from .source_gallery import SourceGallery
from .swapper import FaceSwapper, SwapConfig
from .detector import DEFAULT_DETECT_SIZE, DEFAULT_THRESHOLD, FaceDetector
from .errors import InvalidInputError, OutputError
from .records import TrackedFrame
from .shot_cuts import ShotCutDetector
from .report import BoxesWriter, ReportBuilder, write_json_atomic
from .run_outputs import RunOutputs
from .stages import StagePipeline, batched
from .video_reader import VideoReader
from .video_writer import VideoWriter, check_output_path

MODES = ("auto", "swap", "blur", "pixelate", "mask")


@dataclass
class RunConfig:
    mode: str = "auto"
    detect_size: int | None = DEFAULT_DETECT_SIZE  # None: the video's long side, clamped (detector.py)
    threshold: float = DEFAULT_THRESHOLD
    batch_size: int = 4
    max_frames: int | None = None
    keep_metadata: bool = False
    crf: int = 20
    preset: str = "veryfast"
    queue_size: int = 8
    region_scale: float = 1.3
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # Swap mode: SimSwap generator checkpoint, SimSwap ArcFace (arcface_checkpoint.tar), gallery
    # (a file from `gallery build`, or a folder of photos built in memory).
    generator: str | None = None
    arcface: str | None = None
    gallery: str | None = None
    # Identity: which embedder links tracks to persons and picks sources; where a fleet's
    # person registry lives (only with identity.scope == "fleet").
    embedder: str = "dlib"
    embedder_model: str | None = None
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    person_registry: str | None = None
    swap: SwapConfig = field(default_factory=SwapConfig)
    swap_backend: str = "onnxruntime"  # engines.simswap.GENERATOR_BACKENDS; 33% faster than torch on CPU (benchmarks)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if (self.identity.scope == "fleet") != bool(self.person_registry):
            raise ValueError("--identity-scope fleet and --person-registry FILE go together (the registry holds biometric data: it is never written otherwise)")


def swap_missing(config: RunConfig) -> list[str]:
    """What swap mode still needs; empty when it can run."""
    missing = []
    for flag, path in (("--generator", config.generator), ("--arcface", config.arcface), ("--gallery", config.gallery)):
        if not path:
            missing.append(f"{flag} (not given)")
        elif not os.path.exists(path):
            missing.append(f"{flag} ({path} not found)")
    return missing


def resolve_mode(config: RunConfig) -> tuple[str, str | None]:
    """`auto` is swap when a generator, its ArcFace and a gallery are all there, else blur."""
    if config.mode == "swap":
        missing = swap_missing(config)
        if missing:
            raise InvalidInputError(f"--mode swap needs a SimSwap generator, its ArcFace and a gallery; missing: {', '.join(missing)}")
        return "swap", None
    if config.mode != "auto":
        return config.mode, None
    missing = swap_missing(config)
    if not missing:
        return "swap", "mode auto: swap (SimSwap generator, ArcFace and gallery found)"
    return "blur", f"mode auto: blur (swap needs {', '.join(missing)}; see: python run_pipeline.py models list)"


def load_swap_models(config: RunConfig):
    """The generator engine and SimSwap's ArcFace, loaded once; bad files are input errors."""
    from engines.simswap import generator_engine

    try:
        engine = generator_engine(config.generator, str(config.swap.size), config.swap_backend)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"generator checkpoint unusable: {e}") from e
    return engine, load_simswap_arcface(config.arcface)


def load_simswap_arcface(path: str):
    """SimSwap's ArcFace through the restricted unpickler; an unusable file is an input error."""
    from engines.simswap import UnsafeCheckpointError, load_arcface_checkpoint

    try:
        return load_arcface_checkpoint(path)
    except (UnsafeCheckpointError, ValueError, OSError) as e:
        raise InvalidInputError(f"ArcFace checkpoint unusable: {e}") from e


def load_embedder(config: RunConfig):
    from engines.embedders import load_embedder as load

    try:
        return load(config.embedder, config.embedder_model)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"embedder {config.embedder!r} unusable: {e}") from e


class ModelCache:
    """Loaded models kept across videos, keyed by what they were loaded from.

    A fleet worker processes many videos with one cache, so weights load once per worker,
    not once per video. Only stateless objects go in: per-video state (tracker, persons,
    source draws) is always built fresh.
    """

    def __init__(self):
        self._items: dict = {}

    def get(self, key: tuple, load: Callable):
        if key not in self._items:
            self._items[key] = load()
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)


def _cached(cache: ModelCache | None, key: tuple, load: Callable):
    return load() if cache is None else cache.get(key, load)


def build_identity(config: RunConfig, detector: FaceDetector, arc=None, cache: ModelCache | None = None) -> IdentityStage | None:
    """Persons and their fake identities; runs whenever a gallery is given, in any mode."""
    if not config.gallery:
        return None
    from engines.embedders import EMBEDDERS
    from engines.simswap import latent_from_crops

    embedder = _cached(cache, ("embedder", config.embedder, config.embedder_model), lambda: load_embedder(config))
    gallery = _cached(cache, ("gallery", config.gallery, config.embedder, id(detector), id(arc)),
                      lambda: SourceGallery.open(config.gallery, detector, [embedder]))
    latent_fn = (lambda crops: latent_from_crops(arc, crops)) if arc is not None else None
    if latent_fn is not None and not gallery.has_latents:
        gallery.fill_latents(latent_fn)
    spec = EMBEDDERS[config.embedder]
    assigner = SourceAssigner(gallery, config.embedder, AssignConfig(margin=spec.margin, seed=config.identity.seed))
    if config.identity.scope == "fleet":
        registry = PersonRegistry.load(config.person_registry, config.embedder, spec.same_person, gallery.fingerprint())
    else:
        registry = PersonRegistry(config.embedder, spec.same_person)
    return IdentityStage(embedder, registry, assigner, config.identity, latent_fn=latent_fn, gallery_fingerprint=gallery.fingerprint())


def build_tracker(config: RunConfig, identity: IdentityStage | None) -> FaceTracker:
    """With the identity stage on, norfair's ReID uses the same embedder and threshold."""
    if identity is None:
        return FaceTracker(config.tracker)
    from engines.embedders import EMBEDDERS

    cfg = replace(config.tracker, reid_max_distance=1.0 - EMBEDDERS[config.embedder].same_person)
    return FaceTracker(cfg, embed=identity.embedder.embed)


def build_anonymizer(mode: str, config: RunConfig, engine=None):
    if mode != "swap":
        return Anonymizer(mode, region_scale=config.region_scale)
    return FaceSwapper(engine, fallback=Anonymizer("blur", region_scale=config.region_scale), config=config.swap)


@dataclass
class Stages:
    """The models and per-video state one run needs, built once for file and live runs alike."""

    detector: FaceDetector
    identity: IdentityStage | None
    tracker: FaceTracker
    anonymizer: object

    def chain(self, source: tuple[str, Callable], detect: Callable, anonymize: Callable) -> list[tuple[str, Callable]]:
        """The stage list a run hands to StagePipeline: its own source, detection and
        anonymize steps (file and live runs batch differently) around the shared tracking
        and, when a gallery is given, identity stages."""
        stages = [source, ("detect", detect), ("track", track_stage(self.tracker))]
        if self.identity is not None:
            stages.append(("identity", self.identity))
        return stages + [("anonymize", anonymize)]


def build_stages(mode: str, config: RunConfig, detector: FaceDetector | None = None, models: ModelCache | None = None) -> Stages:
    detector = detector or _cached(models, ("detector", config.detect_size, config.threshold),
                                   lambda: FaceDetector(detect_size=config.detect_size, threshold=config.threshold))
    engine, arc = (None, None)
    if mode == "swap":
        engine, arc = _cached(models, ("swap", config.generator, config.arcface, config.swap.size, config.swap_backend),
                              lambda: load_swap_models(config))
    identity = build_identity(config, detector, arc, models)
    return Stages(detector, identity, build_tracker(config, identity), build_anonymizer(mode, config, engine))


def track_stage(tracker: FaceTracker):
    """The tracking stage: shot cuts reset the tracker, so no track spans a cut."""
    cuts = ShotCutDetector()

    def track(items):
        for frame, dets in items:
            cut = cuts.update(frame.image)
            if cut:
                tracker.reset()
            yield TrackedFrame(frame, tracker.update(dets, frame.image), len(dets), shot_cut=cut)

    return track


def finish_identity(identity: IdentityStage | None, report: ReportBuilder, config: RunConfig) -> None:
    """Persons into the report; with the fleet scope, this run's persons into the registry."""
    if identity is None:
        return
    report.persons = identity.persons()
    if config.identity.scope == "fleet":
        identity.registry.save(config.person_registry, identity.gallery_fingerprint)


def anonymize_video(
    input_path: str,
    output_path: str,
    config: RunConfig = RunConfig(),
    *,
    report_path: str | None = None,
    boxes_path: str | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    models: ModelCache | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> dict:
    """`models` keeps loaded weights for the next video; `on_frame(n)` hears the frames written so far."""
    started = time.perf_counter()
    mode, note = resolve_mode(config)
    reader = VideoReader(input_path, max_frames=config.max_frames).open()
    try:
        out = check_output_path(output_path, input_path)
        for side in (report_path, boxes_path, config.person_registry):
            if side is not None:
                check_side_path(side, input_path, out)
        if note:  # only once the input and outputs are known to be good: errors stay one line
            log(note)
        if mode != "swap" and config.swap.defense_noise:
            log(f"note: --defense-noise applies to swapped faces only; mode is {mode}, so it does nothing")
        st = build_stages(mode, config, detector, models)
        detector = st.detector
        report = ReportBuilder(input_path, out, mode, reader.info, requested_mode=config.mode)
        report.settings = {
            "detect_size": detector.long_side(reader.info.height, reader.info.width),
            "threshold": detector.threshold,
            "batch_size": config.batch_size,
            "region_scale": config.region_scale,
            "crf": config.crf,
            "preset": config.preset,
            "keep_metadata": config.keep_metadata,
            "tracker": asdict(config.tracker),
            "swap": {**asdict(config.swap), "backend": config.swap_backend, "generator": config.generator, "arcface": config.arcface, "gallery": config.gallery}
            if mode == "swap" else None,
            "identity": {**asdict(config.identity), "seed": None if config.identity.scope == "random" else config.identity.seed,
                         "embedder": config.embedder, "gallery": config.gallery, "person_registry": config.person_registry}
            if st.identity else None,
        }
        with RunOutputs() as outs:  # opened inside: an interrupt at any point leaves no temp file behind
            writer = outs.video = VideoWriter(
                out,
                reader.info,
                audio_streams=reader.audio_streams,
                rotation=reader.rotation,
                metadata=reader.metadata,
                keep_metadata=config.keep_metadata,
                crf=config.crf,
                preset=config.preset,
            )
            boxes = outs.boxes = BoxesWriter(boxes_path) if boxes_path else None
            _run(reader, st, writer, boxes, report, config, progress, on_frame)
            if reader.truncated:
                raise InvalidInputError(
                    f"input is truncated or corrupt: only {writer.frames_written} frames could be read, "
                    f"less than the container declares: {input_path}"
                )
            writer.close()
        finish_identity(st.identity, report, config)
    finally:
        reader.close()
    report.finish(reader, writer, time.perf_counter() - started)
    result = report.to_dict()
    if report_path:
        write_json_atomic(report_path, result)
    return result


def check_side_path(path: str, input_path: str, video_out: str) -> None:
    p = os.path.abspath(path)
    if p in (os.path.abspath(input_path), video_out):
        raise OutputError(f"report/boxes path must differ from the input and the output video: {path}")
    folder = os.path.dirname(p)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OutputError(f"folder for {path} does not exist or is not writable: {folder}")


def _run(reader, st: Stages, writer, boxes, report, config, progress, on_frame=None) -> None:
    def source(_):
        return reader.frames()

    def detect(frames):
        for batch in batched(frames, config.batch_size):
            yield from zip(batch, st.detector.detect([f.image for f in batch]))

    def anonymize(items):
        # Several frames at once: the swap generator runs on all their faces together.
        for batch in batched(items, config.batch_size):
            st.anonymizer.apply_batch(batch)
            yield from batch

    total = config.max_frames or reader.info.frames_hint or None
    if config.max_frames and reader.info.frames_hint:
        total = min(config.max_frames, reader.info.frames_hint)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    encode_s = 0.0
    try:
        with StagePipeline(st.chain(("decode", source), detect, anonymize), maxsize=config.queue_size) as pipe:
            for tf in pipe:
                t = time.perf_counter()
                writer.write(tf.frame)
                encode_s += time.perf_counter() - t
                if boxes:
                    boxes.write(tf)
                report.add(tf)
                bar.update(1)
                if on_frame is not None:
                    on_frame(writer.frames_written)
                if tf.frame.index % 10 == 0:
                    bar.set_postfix(faces=len(tf.faces), refresh=False)
            for packet in reader.trailing_audio:
                writer.write_audio(packet)
            report.stage_ms = {**pipe.busy_ms(), "encode": round(encode_s * 1000, 1)}
    finally:
        bar.close()
