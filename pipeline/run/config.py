"""What one run is asked to do: the mode and every stage's settings, validated when built."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engines.models import get_model
from engines.placement import Placement
from pipeline.anonymize.region import REGION_SCALE
from pipeline.anonymize.swap import SwapConfig
from pipeline.core.errors import InvalidInputError
from pipeline.detect.recall import DEFAULT_SETTING, SETTINGS
from pipeline.detect.retinaface import DEFAULT_DETECT_SIZE
from pipeline.identity.stage import IdentityConfig
from pipeline.io.video_writer import DEFAULT_CRF, DEFAULT_PRESET
from trackers import TrackerConfig

MODES = ("auto", "swap", "blur", "pixelate", "mask")
BACKENDS = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")
GENERATOR_BACKENDS = tuple(get_model("simswap-224").backends)  # the model table's: OpenVINO runs the detector only
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DETECTORS = ("retinaface", "centerface", "ensemble")  # ensemble: both, fused (pipeline.detect.recall)
DEFAULT_DETECTOR = "retinaface"


@dataclass
class RunConfig:
    mode: str = "auto"
    detect_size: int | None = DEFAULT_DETECT_SIZE  # None: the video's long side, clamped (detector.py)
    threshold: float | None = None  # None: each detector's calibrated threshold (engines/models.py)
    detector: str = DEFAULT_DETECTOR
    recall: str = DEFAULT_SETTING  # which extra detection passes (pipeline.detect.recall.SETTINGS)
    batch_size: int = 4
    max_frames: int | None = None
    keep_metadata: bool = False
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    queue_size: int = 8
    region_scale: float = REGION_SCALE
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
    person_attributes: str | None = None  # --person-attributes: JSON of known genders / age groups
    swap: SwapConfig = field(default_factory=SwapConfig)
    # --parsing-mask: SimSwap's --use_mask (keep the swap to the inner face; BiSeNet 79999_iter.pth)
    parsing_mask: bool = False
    parsing_model: str | None = None
    # Where and how the models run (pipeline.device, engines.models), chosen once per run:
    device: str = "auto"  # auto | cpu | cuda[:N]: auto = the first GPU, else the host path
    backend: str = "auto"  # detector and generator runtime: auto = onnxruntime on the host path, torch on a device
    swap_backend: str | None = None  # the generator alone, overriding `backend` (None: follow it)
    precision: str = "auto"  # device path: auto = float16 on a GPU, float32 on the CPU
    cuda_graphs: bool = True  # replay the detector and generator as CUDA graphs (GPU only; select.graphs_on)
    compile: bool = False  # torch.compile the torch backend's models (device path)
    hwdec: bool = True  # decode on the GPU's NVDEC when the device is one and FFmpeg has it

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.parsing_mask and self.mode not in ("auto", "swap"):
            raise ValueError(f"--parsing-mask shapes the swap; it does nothing with --mode {self.mode}")
        if (self.identity.scope == "fleet") != bool(self.person_registry):
            raise ValueError("--identity-scope fleet and --person-registry FILE go together (the registry holds biometric data: it is never written otherwise)")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; valid: {', '.join(DETECTORS)}")
        if self.recall not in SETTINGS:
            raise ValueError(f"unknown recall setting {self.recall!r}; valid: {', '.join(SETTINGS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.swap_backend is not None and self.swap_backend not in GENERATOR_BACKENDS:
            raise ValueError(f"unknown generator backend {self.swap_backend!r}; valid: {', '.join(GENERATOR_BACKENDS)}")
        if self.person_attributes and not self.gallery:
            raise ValueError("--person-attributes needs --gallery (it steers which fake identity a person gets)")


def input_files(config: RunConfig) -> list[str]:
    """The files a run reads besides the video: no output may land on one of them."""
    parser = config.parsing_model if config.parsing_mask else None
    return [p for p in (config.gallery, config.generator, config.arcface, config.embedder_model, config.person_attributes, parser) if p]


def swap_missing(config: RunConfig) -> list[str]:
    """What swap mode still needs; empty when it can run."""
    missing = []
    needed = [("--generator", config.generator), ("--arcface", config.arcface), ("--gallery", config.gallery)]
    if config.parsing_mask:
        needed.append(("--parsing-model", config.parsing_model))
    for flag, path in needed:
        if not path:
            missing.append(f"{flag} (not given)")
        elif not os.path.exists(path):
            missing.append(f"{flag} ({path} not found)")
    return missing


def check_extras(config: RunConfig) -> None:
    """MissingExtra (one line, the pip command, exit status 2) when a feature this run asks for
    needs an extra that is not installed (engines/extras.py); `--mode auto` never fails here:
    it blurs (resolve_mode says why)."""
    from engines.extras import require, require_embedder

    if config.mode == "swap":
        require("swap", "--mode swap")
    if config.parsing_mask:
        require("swap", "--parsing-mask")
    if config.gallery:
        require_embedder(config.embedder, "--gallery")
    if config.device != "auto":
        require("gpu", f"--device {config.device} (the torch data path)")
    if config.backend in ("torch", "tensorrt") or config.swap_backend in ("torch", "tensorrt"):
        require("gpu", f"--backend {config.backend if config.backend != 'auto' else config.swap_backend}")
    if config.backend == "openvino":
        require("openvino", "--backend openvino")
    if config.detector != "retinaface":
        require("audit", f"--detector {config.detector} (CenterFace's graph is read with onnx)", ("onnx",))


def check_detect_size(size: int | None, height: int, width: int) -> None:
    """A working size past max(4096, twice the frame's long side) finds nothing more and
    only allocates (100000 was a MemoryError): refused in one line once the frame's size is
    known, before any output is opened."""
    limit = max(4096, 2 * max(height, width))
    if size is not None and size > limit:
        raise InvalidInputError(f"--detect-size {size} is more than this {width}x{height} video can use "
                                f"(at most {limit}: 4096, or twice its long side)")


def resolve_mode(config: RunConfig) -> tuple[str, str | None]:
    """`auto` is swap when a generator, its ArcFace and a gallery are all there (and the swap
    extra is installed), else blur. Checks the extras first: library runs skip the CLI's check."""
    check_extras(config)
    if config.mode == "swap":
        missing = swap_missing(config)
        if missing:
            parser = " (and, with --parsing-mask, the face parser: python run_pipeline.py models fetch face-parsing)" if config.parsing_mask else ""
            raise InvalidInputError(f"--mode swap needs a SimSwap generator, its ArcFace and a gallery{parser}; missing: {', '.join(missing)}")
        return "swap", None
    if config.mode != "auto":
        return config.mode, None
    from engines.extras import hint, missing as extra_missing

    gone = extra_missing("swap")
    if gone:
        return "blur", f"mode auto: blur (swap needs the swap extra, {', '.join(gone)} not installed: {hint('swap')})"
    missing = swap_missing(config)
    if not missing:
        return "swap", "mode auto: swap (SimSwap generator, ArcFace and gallery found)"
    return "blur", f"mode auto: blur (swap needs {', '.join(missing)}; see: python run_pipeline.py models list)"


def engine_notes(config: RunConfig, engines: "EngineChoice") -> list[str]:
    """Engine flags the host path (OpenCV + ONNX Runtime) has no use for, one note each."""
    if not engines.device.host:
        return []
    unused = [f"--precision {config.precision}"] * (config.precision != "auto") + ["--compile"] * config.compile
    return [f"note: {flag} applies to the torch data path (--device cpu or a GPU); this run is on the host path "
            f"(ONNX Runtime, float32), so it does nothing" for flag in unused]


@dataclass(frozen=True)
class EngineChoice:
    """How the models run in this run: resolved once from `device`, `backend`, `precision`."""

    device: "DeviceChoice"  # noqa: F821 - pipeline.device.select
    detector_backend: str
    generator_backend: str
    dtype: str  # float32 | float16 | bfloat16, for the torch and TensorRT backends
    cuda_graphs: bool
    compile: bool = False

    def describe(self) -> dict:
        return {"device": self.device.torch_device or "host", "data_path": self.device.describe(),
                "detector": self.detector_backend, "generator": self.generator_backend,
                "dtype": None if self.device.host and self.detector_backend in ("onnxruntime", "openvino") else self.dtype,
                "cuda_graphs": "cpu stand-in" if self.cuda_graphs and not self.device.is_cuda else self.cuda_graphs,
                "compile": self.compile}

    def embedder_backend(self, name: str) -> str:
        """The device path embeds on the device where the embedder has a torch backend (the
        ArcFace family); dlib runs on the host whatever the device."""
        from engines.models import get_model

        entry = get_model(name)
        return "torch" if not self.device.host and "torch" in entry.backends else entry.default_backend

    @property
    def placement(self) -> Placement:
        """Where and how this run's models run: every builder in the model table takes it
        (host runtimes ignore what is not theirs), so each setting reaches every model."""
        return Placement(self.device.torch_device, self.dtype, channels_last=self.device.is_cuda, compile=self.compile,
                         cuda_graphs=self.cuda_graphs)


def engine_choice(config: RunConfig) -> EngineChoice:
    from pipeline.device.select import graphs_on, resolve

    device = resolve(config.device)
    backend = config.backend if config.backend != "auto" else ("onnxruntime" if device.host else "torch")
    if backend == "openvino" and not device.host:
        raise InvalidInputError(f"--backend openvino runs on the host path's CPU; --device {config.device} resolved to {device.describe()}")
    if "tensorrt" in (backend, config.swap_backend):
        if not device.is_cuda:
            raise InvalidInputError(f"--backend tensorrt needs a CUDA device; --device {config.device} resolved to {device.describe()}")
        from engines.tensorrt_engine import BackendUnavailable, require

        try:
            require()
        except BackendUnavailable as e:
            raise InvalidInputError(str(e)) from None
    precision = config.precision
    if precision == "auto":
        precision = "fp16" if device.is_cuda else "fp32"
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    generator = config.swap_backend or (backend if backend in GENERATOR_BACKENDS else "onnxruntime")
    return EngineChoice(device, backend, generator, dtype, graphs_on(device, config.cuda_graphs),
                        config.compile and not device.host)
