"""Test helpers: SimSwap files in the official layouts, made from weights we generate."""

import contextlib
import sys
import types

import numpy as np

from engines.base import Engine, TensorSpec


class FlatGreen(Engine):
    """A generator that returns flat green of its input's shape: where a swap pasted is plain
    to see (the fail-closed and face-parsing tests)."""

    inputs = (TensorSpec("image", ("N", 3, "S", "S"), "float32"), TensorSpec("latent", ("N", 512), "float32"))
    outputs = (TensorSpec("output", ("N", 3, "S", "S"), "float32"),)

    def __call__(self, feeds):
        out = np.zeros_like(feeds["image"])
        out[:, 1] = 1.0
        return {"output": out}


class ArcMarginModel:
    """The ArcFace margin head of SimSwap's models/arcface_models.py (training only), as its
    pre-2023 checkpoints hold it under `metric_fc`: a (classes, 512) weight and the margin's
    constants. Built lazily as an nn.Module subclass (torch is imported on use)."""

    def __new__(cls, n_classes=7, emb_size=512, margin_m=0.5, margin_s=64.0, easy_margin=False):
        import math

        import torch

        class ArcMarginModel(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.randn(n_classes, emb_size))
                self.easy_margin, self.m, self.s = easy_margin, margin_m, margin_s
                self.cos_m, self.sin_m = math.cos(margin_m), math.sin(margin_m)
                self.th, self.mm = math.cos(math.pi - margin_m), math.sin(math.pi - margin_m) * margin_m

        return ArcMarginModel()


@contextlib.contextmanager
def official_names(*extra):
    """Pickle our ArcFace classes under the names SimSwap's file uses
    (models.arcface_models.ResNet, IRBlock, SEBlock; plus the classes of `extra` objects, e.g. an
    ArcMarginModel, under their own names); restored afterwards."""
    from engines.simswap import arcface

    mod, pkg = types.ModuleType("models.arcface_models"), types.ModuleType("models")
    pkg.arcface_models = mod
    classes = ((arcface.ArcFaceResNet, "ResNet"), (arcface.IRBlock, "IRBlock"), (arcface.SEBlock, "SEBlock"),
               *((type(o), type(o).__name__) for o in extra))
    saved = {c: (c.__module__, c.__qualname__) for c, _ in classes}
    old = {k: sys.modules.get(k) for k in ("models", "models.arcface_models")}
    sys.modules["models"], sys.modules["models.arcface_models"] = pkg, mod
    try:
        for cls, name in classes:
            cls.__module__, cls.__qualname__ = "models.arcface_models", name
            setattr(mod, name, cls)
        yield
    finally:
        for cls, (m, q) in saved.items():
            cls.__module__, cls.__qualname__ = m, q
        for k, v in old.items():
            sys.modules.pop(k, None) if v is None else sys.modules.__setitem__(k, v)


def make_swap_kit(folder, *, seed=0, broken_generator=False):
    """Generator state_dict (224), a small ArcFace pickled as a whole model, and a 2-face gallery."""
    import torch

    from engines.simswap import ArcFaceResNet, SimSwapGenerator

    torch.manual_seed(seed)
    gen = SimSwapGenerator("224")
    state = gen.state_dict()
    if broken_generator:
        state = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(state, folder / "latest_net_G.pth")
    arc = ArcFaceResNet(layers=(1, 1, 1, 1)).eval()
    with official_names():
        torch.save(arc, folder / "arcface_checkpoint.tar")
    gallery = folder / "gallery.npz"
    make_gallery_file(gallery, n=2, seed=seed)
    return folder / "latest_net_G.pth", folder / "arcface_checkpoint.tar", gallery


def make_gallery_file(path, *, n=2, seed=0, dim=128, embedder="dlib", labels=None, vectors=None):
    """A gallery file in the documented format, with identities that are nobody: random unit
    vectors (far from any real face's embedding and latent) and crops cut from astronaut.png.
    `labels`: list of (gender, age_group) per identity; `vectors`: explicit (n, dim) embeddings."""
    from skimage import data

    from pipeline.identity.gallery import Source, SourceGallery

    rng = np.random.default_rng(seed)

    def unit(v):
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    emb = unit(rng.normal(size=(n, dim))) if vectors is None else unit(np.asarray(vectors, np.float32))
    lat = unit(rng.normal(size=(n, 512)))
    labels = labels or [("female", "young")] * n
    sources = [Source(f"src_{chr(97 + i)}", g, a, {embedder: emb[i]}, latent=lat[i]) for i, (g, a) in enumerate(labels)]
    crops = np.stack([data.astronaut()[100 + 4 * i : 324 + 4 * i, 100:324] for i in range(n)])
    g = SourceGallery(sources, crops, "simswap-arcface")
    g.save(str(path))
    return g


def contract_fill(layout, seed=1234, *, bn_weight_offset=0.0, bn_weights=None):
    """The golden contracts' deterministic fill (../shared/golden/README.md), walking `layout`
    ([key, shape, dtype] in state_dict order): num_batches_tracked → 0, running_var →
    |randn| + 0.5, everything else randn · 0.05. `bn_weight_offset` is added to the BatchNorm
    weights (the face-parsing contract's fill B, which keeps the signal alive through the
    network): the keys in `bn_weights`, by default every rank-1 `.weight` (in BiSeNet, exactly
    the BatchNorm ones; in networks with PReLU, pass them explicitly)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, _ in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.randn(shape, generator=g).abs() + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
            is_bn = (key.endswith(".weight") and len(shape) == 1) if bn_weights is None else key in bn_weights
            if bn_weight_offset and is_bn:
                state[key] += bn_weight_offset
    return state


def layout_of(module):
    """[key, shape, dtype] of a module's state_dict, the manifests' format."""
    return [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in module.state_dict().items()]


def official_full_frame(image: np.ndarray, crops: list, matrices: list) -> tuple[np.ndarray, list]:
    """SimSwap's reverse2wholeimage, written out here on the whole frame (no ROI): float crops in
    [0, 1], masks eroded (40×40) and blurred (41×41) in frame pixels, float64 blend, truncation."""
    import cv2

    h, w = image.shape[:2]
    img = image.astype(np.float64)
    alphas = []
    for crop, m in zip(crops, matrices):
        size = crop.shape[0]
        m = np.asarray(m, np.float64)  # mat_rev by reverse2wholeimage's explicit formula
        div1, div2 = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0], m[0, 1] * m[1, 0] - m[0, 0] * m[1, 1]
        rev = np.array([[m[1, 1] / div1, -m[0, 1] / div1, -(m[0, 2] * m[1, 1] - m[0, 1] * m[1, 2]) / div1],
                        [m[1, 0] / div2, -m[0, 0] / div2, -(m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) / div2]])
        target = cv2.warpAffine(crop, rev, (w, h)).astype(np.float64) * 255
        mask = cv2.warpAffine(np.full((size, size), 255.0), rev, (w, h))
        mask[mask > 20] = 255
        mask = cv2.GaussianBlur(cv2.erode(mask, np.ones((40, 40), np.uint8)), (41, 41), 0) / 255
        alphas.append(mask)
        img = mask[..., None] * target + (1 - mask[..., None]) * img
    return img.astype(np.uint8), alphas


def frame_alpha(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float64 paste mask of one face over a whole frame of `shape`: the mask
    pipeline.anonymize.paste_back blends with (official, or the small-face one), written into
    a full frame for the tests to compare (the paste itself only builds it on the face's ROI)."""
    from pipeline.anonymize.paste_back import paste_roi, roi_alpha

    alpha = np.zeros(shape, np.float64)
    roi = paste_roi(matrix, size, shape)
    if roi is not None:
        x0, y0, x1, y1 = roi
        alpha[y0:y1, x0:x1] = roi_alpha(matrix, size, roi)
    return alpha


def face_at(size: int, footprint: float, angle_deg: float, centre) -> np.ndarray:
    """Frame→crop matrix of a crop `footprint` frame pixels wide, rotated, centred at `centre`."""
    k, a = size / footprint, np.deg2rad(angle_deg)
    lin = k * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return np.hstack([lin, (np.array([size / 2, size / 2]) - lin @ np.asarray(centre, np.float64))[:, None]])
