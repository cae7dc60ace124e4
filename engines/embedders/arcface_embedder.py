"""ArcFace-family embedders (insightface ArcFace R50, our PerFace) from an ONNX file.

Both take insightface's convention: a 112×112 crop aligned to `ARCFACE_TEMPLATE_112`, RGB,
(x − 127.5) / 127.5, NCHW. The input name is read from the model, so insightface's files
("input.1") and ours ("input") both load. Two backends run the same file: ONNX Runtime (the
host path) and torch (the device path: engines/onnx_torch.py runs the graph with torch ops; the
pipeline cuts the identity samples from the frame already on the device, as `template` and
`crop_size` say, and `embed_crop_tensors` embeds them there).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.alignment import ARCFACE_TEMPLATE_112, warp_to_template

from ..placement import HOST, Placement
from .base import FaceEmbedder, normalize


def _graph_io(path: str) -> tuple[tuple[str, list], tuple[str, list]]:
    """(input name, shape), (output name, shape) of an ONNX file, read without running it."""
    import onnx

    graph = onnx.load(path).graph
    known = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in known]
    if len(inputs) != 1:
        raise ValueError(f"{path}: an embedder ONNX has one input (N, 3, 112, 112); found {len(inputs)}")

    def shape(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    return (inputs[0].name, shape(inputs[0])), (graph.output[0].name, shape(graph.output[0]))


def build(entry, files: dict, *, placement: Placement = HOST) -> "ArcFaceEmbedder":
    """The model table's builder for ArcFace-convention embedders (arcface-r50, perface):
    ONNX Runtime on the host, whatever the placement."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return ArcFaceEmbedder(OnnxRuntimeEngine(files["weights"]), entry, files["weights"])


def build_torch(entry, files: dict, *, placement: Placement = HOST) -> "ArcFaceEmbedder":
    """The same ONNX file as a torch module on the placement's device: the device path's backend."""
    from engines.onnx_torch import load_onnx_module
    from engines.torch_engine import TorchEngine

    path = files["weights"]
    (inp, _), (out, _) = _graph_io(path)
    engine = TorchEngine.placed(load_onnx_module(path), (inp,), (out,), placement)
    return ArcFaceEmbedder(engine, entry, path)


class ArcFaceEmbedder(FaceEmbedder):
    template = ARCFACE_TEMPLATE_112  # what the crops are aligned to (crop_size pixels square)

    def __init__(self, engine, entry, path: str):
        self.entry = entry
        s = entry.settings
        self._size, self._mean, self._std = s["size"], s["mean"], s["std"]
        (self._input, shape), (self._output, out) = _graph_io(path)
        if len(shape) != 4 or tuple(shape[1:]) != (3, self._size, self._size):
            raise ValueError(f"{path}: expected input (N, 3, {self._size}, {self._size}), found {shape}")
        if out[-1] != self.dim:
            raise ValueError(f"{path}: expected a {self.dim}-d embedding output for {entry.name}, found {out}")
        self.engine = engine

    @property
    def crop_size(self) -> int:
        return self._size

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crops = warp_to_template(image, landmarks, self.template, self._size)
        return self.embed_crops(crops)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB crops already on the ArcFace template."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        x = (crops.astype(np.float32).transpose(0, 3, 1, 2) - self._mean) / self._std
        return normalize(self.engine({self._input: np.ascontiguousarray(x)})[self._output])

    def embed_crop_tensors(self, crops) -> np.ndarray:
        """The device path's `embed_crops`: (N, 3, s, s) float32 crops in [0, 1], aligned to
        `template` (`crop_size` pixels square), already on the engine's device (the pipeline
        cuts them from the frame tensor: pipeline.anonymize.torch_faces.embed_faces); only the
        (N, dim) vectors come back."""
        import torch

        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        x = (crops * 255.0 - self._mean) / self._std
        y = self.engine.run_tensors({self._input: x})[self._output]
        return torch.nn.functional.normalize(y.float(), dim=1).cpu().numpy()
