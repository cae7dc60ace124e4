"""The `mtcnn` package's weight files (`assets/weights/{pnet,rnet,onet}.lz4`) as state_dicts
of our modules, without running their pickles.

Each file is an LZ4 frame holding a joblib pickle of a list of float32 arrays, the Keras
layers' weights in order (conv kernels HWIO, biases, PReLU slopes, dense kernels IO). joblib's
own unpickler reads the array payloads that follow each `NumpyArrayWrapper`; ours subclasses it
with a `find_class` that answers for those wrappers and numpy's array and dtype types only, so
any other global in a tampered file stops the load before it is called.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from engines.simswap.safe_pickle import UnsafeCheckpointError

# Keras layer order → our parameter names (model.py), per network.
LAYOUT = {
    "pnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"),
    "rnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4", "fc5_1", "fc5_2"),
    "onet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4", "fc5", "prelu5",
             "fc6_1", "fc6_2", "fc6_3"),
}


def read_arrays(data: bytes) -> list[np.ndarray]:
    """The list of arrays in one weight file (LZ4-compressed joblib pickle)."""
    import lz4.frame
    from joblib import numpy_pickle

    allowed = {("joblib.numpy_pickle", "NumpyArrayWrapper"): numpy_pickle.NumpyArrayWrapper,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    class Restricted(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str):
            try:
                return allowed[(module, name)]
            except KeyError:
                raise UnsafeCheckpointError(f"MTCNN weights refer to {module}.{name}, which is not allowed; nothing was executed") from None

    try:
        raw = lz4.frame.decompress(data)
    except RuntimeError as e:
        raise ValueError(f"not an LZ4 frame: {e}") from e
    out = Restricted("<mtcnn weights>", io.BytesIO(raw), ensure_native_byte_order=True).load()
    if not (isinstance(out, list) and all(isinstance(a, np.ndarray) for a in out)):
        raise ValueError("MTCNN weights: expected a list of arrays")
    return out


def state_dict(net: str, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Keras weights → our module's state_dict (conv HWIO → OIHW, dense IO → OI, PReLU slopes
    flattened); a file with another layer count is refused."""
    names = LAYOUT[net]
    want = sum(1 if n.startswith("prelu") else 2 for n in names)
    if len(arrays) != want:
        raise ValueError(f"MTCNN {net} weights: {len(arrays)} arrays, expected {want}")
    sd: dict[str, torch.Tensor] = {}
    it = iter(arrays)
    for n in names:
        if n.startswith("prelu"):
            sd[f"{n}.weight"] = torch.from_numpy(np.ascontiguousarray(next(it)).reshape(-1).copy())
            continue
        w, b = next(it), next(it)
        w = w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T
        sd[f"{n}.weight"] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
        sd[f"{n}.bias"] = torch.from_numpy(np.ascontiguousarray(b, np.float32))
    return sd


def load_net(net: str, source) -> torch.nn.Module:
    """One network with its weights, strictly: `source` is a path or the file's bytes."""
    from .model import NETS

    if isinstance(source, (bytes, bytearray)):
        data = source
    else:
        with open(source, "rb") as f:
            data = f.read()
    module = NETS[net]()
    module.load_state_dict(state_dict(net, read_arrays(bytes(data))), strict=True)
    return module.eval()
