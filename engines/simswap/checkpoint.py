"""Loading SimSwap generator checkpoints, and exporting the generator to ONNX.

Official generator checkpoints are plain state_dicts, so `torch.load(weights_only=True)` reads
them without running any pickled code. (The ArcFace `arcface_checkpoint.tar` is a pickled
whole model and needs the restricted unpickler of the identity-latent work; not here.)
"""

from __future__ import annotations

import pickle


import torch

from .generator import LATENT_SIZE, SimSwapGenerator

ONNX_INPUTS = ("image", "latent")
ONNX_OUTPUT = "output"


def state_dict_problems(model: torch.nn.Module, state: dict, limit: int = 5) -> list[str]:
    """Missing and unexpected keys and wrong shapes of `state` against `model`, listed short,
    before `load_state_dict` gives a wall of text (the generator's and the face parser's files)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
             for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    return [f"{what}: {sep.join(keys[:n])}{' …' if len(keys) > n else ''}"
            for what, keys, sep, n in (("missing keys", missing, ", ", limit), ("unexpected keys", unexpected, ", ", limit),
                                       ("wrong shapes", wrong, "; ", 3)) if keys]


def check_state_dict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Raises ValueError naming what differs."""
    parts = state_dict_problems(model, state)
    if parts:
        raise ValueError(f"{source} is not a SimSwap {getattr(model, 'variant', '')} generator checkpoint ({'; '.join(parts)})")


def read_state_dict(path: str, hint: str = "") -> object:
    """`torch.load(weights_only=True)`: tensors and containers only, no pickled code run. Its
    refusal carries torch's advice to load with `weights_only=False`, which would run the
    file's code: never shown; said instead is what the file holds. `hint`: what to give."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as e:
        why = "it holds pickled Python objects, not only tensors, and anonswap never runs a checkpoint's code"
        raise ValueError(f"{path} is not a plain tensor state_dict ({why}){'; ' + hint if hint else ''}") from e
    except Exception as e:  # a torn, HTML or junk file
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path} is not a plain tensor state_dict ({type(e).__name__}: {first}){'; ' + hint if hint else ''}") from e


def load_generator(path: str, variant: str) -> SimSwapGenerator:
    """Loads an official (or compatible) generator state_dict, strictly, in eval mode."""
    state = read_state_dict(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    model = SimSwapGenerator(variant)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval()


def verify(entry, path: str) -> None:
    """The model table's check for simswap-224/512: the file loads strictly as that variant."""
    load_generator(path, entry.settings["variant"])


def export_onnx(model: SimSwapGenerator, path: str, *, opset: int = 17) -> str:
    """ONNX with a dynamic batch axis (the file TensorRT will also build from); written atomically."""
    size = int(model.variant)
    image = torch.rand(2, 3, size, size)
    latent = torch.nn.functional.normalize(torch.randn(2, LATENT_SIZE), dim=1)
    from ..onnx_export import export_onnx_atomic

    return export_onnx_atomic(model.eval(), (image, latent), path, input_names=list(ONNX_INPUTS),
                              output_names=[ONNX_OUTPUT], opset=opset)

