"""Test helpers: SimSwap files in the official layouts, made from weights we generate."""

import contextlib
import sys
import types

import numpy as np


@contextlib.contextmanager
def official_names():
    """Pickle our ArcFace classes under the names SimSwap's file uses
    (models.arcface_models.ResNet, IRBlock, SEBlock); restored afterwards."""
    from engines.simswap import arcface

    mod, pkg = types.ModuleType("models.arcface_models"), types.ModuleType("models")
    pkg.arcface_models = mod
    classes = ((arcface.ArcFaceResNet, "ResNet"), (arcface.IRBlock, "IRBlock"), (arcface.SEBlock, "SEBlock"))
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
