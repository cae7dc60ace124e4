"""Models and per-video stage state, built once for file and live runs alike.

Loaded weights are kept in a `ModelCache` across the videos a fleet worker processes;
per-video state (tracker, persons, source draws) is always built fresh.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, replace
from typing import Callable

from engines import get_model
from engines.placement import HOST, Placement
from pipeline.anonymize.cover import FaceCover
from pipeline.anonymize.face_ops import HostFaceOps, TorchFaceOps
from pipeline.anonymize.swap import FaceSwapper
from pipeline.core.errors import InvalidInputError
from pipeline.detect.recall import SETTINGS, MultiPassDetector
from pipeline.detect import Detector
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.detect.stage import DeviceDetect, HostDetect
from pipeline.device.buckets import BucketedEngine
from pipeline.identity.assignment import AssignConfig, SourceAssigner
from pipeline.identity.gallery import SourceGallery
from pipeline.identity.persons import PersonRegistry
from pipeline.identity.stage import IdentityStage
from pipeline.io.report import ReportBuilder
from pipeline.run.config import EngineChoice, RunConfig, engine_choice
from pipeline.track.stage import track_stage
from trackers import FaceTracker


def model_key(name: str, backend: str | None, placement: Placement, path=None, **settings) -> tuple:
    """A loaded model's ModelCache key: its model table entry and backend (None: the entry's
    default), its placement, the file it loads (None: the entry's own) and the `settings` of
    the wrapper built around it. Equal keys are the same model, so a fleet worker reuses it."""
    entry = get_model(name)
    return (entry.name, backend or entry.default_backend, placement, None if path is None else os.fspath(path),
            *sorted(settings.items()))


def _bucketed(engine, placement: Placement):
    """The device path's batch buckets (and CUDA graphs) around an engine; the host's as is."""
    return engine if placement.host else BucketedEngine(engine, graphs=placement.cuda_graphs)


def load_swap_models(config: RunConfig, engines: EngineChoice):
    """The generator engine and SimSwap's ArcFace, loaded once; bad files are input errors."""
    from engines import load

    try:
        engine = load(f"simswap-{config.swap.size}", engines.generator_backend, path=config.generator, placement=engines.placement)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"generator checkpoint unusable: {e}") from e
    return _bucketed(engine, engines.placement), load_simswap_arcface(config.arcface)


def detector_models(config: RunConfig, engines: EngineChoice) -> list[tuple[str, str]]:
    """(model, backend) of each network `--detector` runs; a backend a model lacks (CenterFace
    on TensorRT or OpenVINO) gives way to that path's default: torch on a device, ONNX Runtime
    on the host."""
    names = {"retinaface": ["retinaface-mnet025"], "centerface": ["centerface"], "ensemble": ["retinaface-mnet025", "centerface"]}
    fallback = "onnxruntime" if engines.device.host else "torch"
    return [(name, engines.detector_backend if engines.detector_backend in get_model(name).backends else fallback)
            for name in names[config.detector]]


def load_detector(config: RunConfig, engines: EngineChoice) -> MultiPassDetector:
    """`--detector` (one network or both, fused) with the `--recall` setting's extra passes."""
    from engines import load

    from pipeline.detect.centerface import CenterFaceDetector

    placement, detectors = engines.placement, []
    for name, backend in detector_models(config, engines):
        engine = _bucketed(load(name, backend, placement=placement), placement)
        if name == "centerface":
            detectors.append(CenterFaceDetector(engine, threshold=config.threshold, detect_size=config.detect_size))
        else:
            threshold = config.threshold or get_model(name).settings["threshold"]
            detectors.append(RetinaFaceDetector(engine, detect_size=config.detect_size, threshold=threshold))
    return MultiPassDetector(detectors, SETTINGS[config.recall], name=config.detector)


def load_face_parser(config: RunConfig, engines: EngineChoice):
    """`--parsing-mask`: the BiSeNet face parser (model table: face-parsing). It runs on the
    run's device, always in float32, as SimSwap runs it (TF32 alone already breaks its golden contract)."""
    from engines import load
    from pipeline.anonymize.parsing import FaceParser

    try:
        return FaceParser(load("face-parsing", path=config.parsing_model, placement=engines.placement), get_model("face-parsing").settings)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"face parser unusable: {e}") from e


def load_simswap_arcface(path: str):
    """SimSwap's ArcFace through the restricted unpickler, on the host (its latents are made
    once per gallery source); an unusable file is an input error."""
    from engines import load

    try:
        return load("simswap-arcface", path=path)
    except (ValueError, OSError) as e:  # UnsafeCheckpointError is a ValueError
        raise InvalidInputError(f"ArcFace checkpoint unusable: {e}") from e


def embedder_model(config: RunConfig, engines: EngineChoice | None) -> tuple[str, str | None, Placement]:
    """(name, backend, placement) of the identity embedder: the entry's default backend on
    the host when no engine choice is given (library callers)."""
    if engines is None:
        return config.embedder, None, HOST
    return config.embedder, engines.embedder_backend(config.embedder), engines.placement


def load_embedder(config: RunConfig, engines: EngineChoice | None = None):
    from engines.embedders import load_embedder as load

    name, backend, placement = embedder_model(config, engines)
    try:
        return load(name, config.embedder_model, backend, placement=placement)
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
        self._lock = threading.RLock()  # a fleet actor's concurrent videos load each model once

    def get(self, key: tuple, load: Callable):
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def merged_calls(self) -> int:
        """Batches that rode in another video's model call (device engines shared by a fleet
        actor's concurrent videos): what running videos together bought."""
        with self._lock:
            items = list(self._items.values())
        seen = []
        for item in items:
            for obj in (item, *(item if isinstance(item, tuple) else ()), getattr(item, "engine", None)):
                c = getattr(obj, "coalescer", None)
                if c is not None and not any(c is s for s in seen):
                    seen.append(c)
        return sum(c.requests - c.calls for c in seen)


def _cached(cache: ModelCache | None, key: tuple, load: Callable):
    return load() if cache is None else cache.get(key, load)


def build_identity(config: RunConfig, detector: Detector, arc=None, cache: ModelCache | None = None,
                   engines: EngineChoice | None = None) -> IdentityStage | None:
    """Persons and their fake identities; runs whenever a gallery is given, in any mode."""
    if not config.gallery:
        return None
    from engines.embedders import attribute_settings, calibration
    from engines.simswap import latent_from_crops

    from pipeline.identity.attributes import AttributeConfig, GivenAttributes

    name, backend, placement = embedder_model(config, engines)
    embedder_key = model_key(name, backend, placement, config.embedder_model)
    embedder = _cached(cache, embedder_key, lambda: load_embedder(config, engines))
    # the device path cuts and embeds the samples where the frame already is
    embed = None
    if backend == "torch":
        def embed(frame, lm):
            if frame.tensor is None:
                return embedder.embed(frame.image, lm)
            from pipeline.anonymize.torch_faces import embed_faces

            return embed_faces(embedder, frame.tensor, lm)
    size = config.swap.size  # the generator's crop: the source latents come from crops aligned like it
    gallery = _cached(cache, ("gallery", config.gallery, embedder_key, id(detector), id(arc), size),
                      lambda: SourceGallery.open(config.gallery, detector, [embedder]).use_size(size))
    latent_fn = (lambda crops: latent_from_crops(arc, crops)) if arc is not None else None
    if latent_fn is not None and not gallery.has_latents:
        gallery.fill_latents(latent_fn)
    same_person, margin = calibration(config.embedder)
    given = GivenAttributes.load(config.person_attributes) if config.person_attributes else None
    assigner = SourceAssigner(gallery, config.embedder, AssignConfig(margin=margin, seed=config.identity.seed,
                                                                     attributes=AttributeConfig(**attribute_settings(config.embedder))))
    if config.identity.scope == "fleet":
        registry = PersonRegistry.load(config.person_registry, config.embedder, same_person, gallery.fingerprint(), embedder.dim)
    else:
        registry = PersonRegistry(config.embedder, same_person)
    return IdentityStage(embedder, registry, assigner, config.identity, latent_fn=latent_fn, gallery_fingerprint=gallery.fingerprint(),
                         max_id_gap=config.tracker.max_id_gap, given=given, embed=embed, latent_size=size)


def build_tracker(config: RunConfig, identity: IdentityStage | None) -> FaceTracker:
    """With the identity stage on, norfair's ReID uses the same embedder and threshold."""
    if identity is None:
        return FaceTracker(config.tracker)
    from engines.embedders import calibration

    cfg = replace(config.tracker, reid_max_distance=1.0 - calibration(config.embedder)[0])
    return FaceTracker(cfg, embed=identity.embedder.embed)


def build_anonymizer(mode: str, config: RunConfig, engine=None, ops=None, parser=None):
    if mode != "swap":
        return FaceCover(mode, region_scale=config.region_scale, ops=ops)
    return FaceSwapper(engine, fallback=FaceCover("blur", region_scale=config.region_scale, ops=ops), config=config.swap, ops=ops,
                       parser=parser)


@dataclass
class Stages:
    """The models and per-video state one run needs, built once for file and live runs alike."""

    detector: Detector
    identity: IdentityStage | None
    tracker: FaceTracker
    anonymizer: object
    detect: Callable  # frames → detections, on the run's data path (pipeline.detect.stage)
    engines: EngineChoice

    def chain(self, source: tuple[str, Callable], detect: Callable, anonymize: Callable) -> list[tuple[str, Callable]]:
        """The stage list handed to StagePipeline: a source, detection and anonymize steps
        (the run loop's, or a benchmark's) around tracking and, with a gallery, identity."""
        stages = [source, ("detect", detect), ("track", track_stage(self.tracker))]
        if self.identity is not None:
            stages.append(("identity", self.identity))
        return stages + [("anonymize", anonymize)]


def build_stages(mode: str, config: RunConfig, detector: Detector | None = None, models: ModelCache | None = None,
                 engines: EngineChoice | None = None) -> Stages:
    """The data path is chosen here, once: the host path (NumPy frames, OpenCV, ONNX Runtime)
    or the device path (frames uploaded once at detection, every pixel step on the device,
    one download for the encoder). The stages never branch on it afterwards. `engines`: the
    run's engine choice when the caller has made it already (None: made here)."""
    engines = engines or engine_choice(config)
    placement = engines.placement
    detector_key = tuple(model_key(name, backend, placement, recall=config.recall, detect_size=config.detect_size, threshold=config.threshold)
                         for name, backend in detector_models(config, engines))
    detector = detector or _cached(models, detector_key, lambda: load_detector(config, engines))
    if engines.device.host:
        detect, ops = HostDetect(detector), HostFaceOps()
    else:
        from pipeline.device.transfer import Transfer  # torch, imported only for the device path

        transfer = Transfer(engines.device.torch_device)
        detect, ops = DeviceDetect(detector, transfer), TorchFaceOps(engines.device.torch_device, transfer)
    engine, arc, parser = (None, None, None)
    if mode == "swap":
        swap_key = (model_key(f"simswap-{config.swap.size}", engines.generator_backend, placement, config.generator),
                    model_key("simswap-arcface", None, HOST, config.arcface))
        engine, arc = _cached(models, swap_key, lambda: load_swap_models(config, engines))
        if config.parsing_mask:
            parser = _cached(models, model_key("face-parsing", None, placement, config.parsing_model),
                             lambda: load_face_parser(config, engines))
    identity = build_identity(config, detector, arc, models, engines)
    return Stages(detector, identity, build_tracker(config, identity), build_anonymizer(mode, config, engine, ops, parser), detect, engines)


def report_settings(config: RunConfig, st: "Stages", source, mode: str, *, batch_size: int, live: dict | None = None) -> dict:
    """The report's `settings`, one function for file, live and fleet runs: the audit reads
    the detectors from here, and a live report without them let it take CenterFace for
    independent of a CenterFace run. `batch_size`: what the run loop really batches (live: 1);
    `live`: the live options (None for a file)."""
    detector, info = st.detector, source.info
    return {
        "detect_size": detector.long_side(info.height, info.width),
        "threshold": detector.threshold,
        "detector": config.detector,
        "recall": config.recall,
        "batch_size": batch_size,
        "region_scale": config.region_scale,
        "crf": config.crf,
        "preset": config.preset,
        "keep_metadata": config.keep_metadata,
        "tracker": asdict(config.tracker),
        "engines": {**st.engines.describe(), "hwaccel": source.hwaccel, "hwaccel_fallback": source.hwaccel_fallback},
        "swap": {**asdict(config.swap), "backend": st.engines.generator_backend, "generator": config.generator, "arcface": config.arcface,
                 "gallery": config.gallery, "parsing_mask": config.parsing_model if config.parsing_mask else None}
        if mode == "swap" else None,
        "identity": {**asdict(config.identity), "seed": None if config.identity.scope == "random" else config.identity.seed,
                     "embedder": config.embedder, "embedder_backend": st.engines.embedder_backend(config.embedder),
                     "gallery": config.gallery, "person_registry": config.person_registry}
        if st.identity else None,
        "live": live,
    }


def finish_identity(identity: IdentityStage | None, report: ReportBuilder, config: RunConfig) -> None:
    """Persons into the report; with the fleet scope, this run's persons into the registry."""
    if identity is None:
        return
    report.persons = identity.persons()
    if isinstance(report.settings.get("identity"), dict):
        report.settings["identity"]["attribute_model"] = identity.attribute_model()
    if config.identity.scope == "fleet":
        identity.registry.save(config.person_registry, identity.gallery_fingerprint)
