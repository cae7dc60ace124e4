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
    import cv2
    import torch
    from skimage import data

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
    gallery = folder / "gallery"
    gallery.mkdir()
    astro = data.astronaut()
    cv2.imwrite(str(gallery / "src_a.png"), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(gallery / "src_b.png"), cv2.cvtColor(np.ascontiguousarray(astro[:, ::-1]), cv2.COLOR_RGB2BGR))
    (gallery / "notes.txt").write_text("not an image")
    return folder / "latest_net_G.pth", folder / "arcface_checkpoint.tar", gallery
