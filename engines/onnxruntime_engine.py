"""ONNX Runtime backend: the CPU default, and the reference the other backends match."""

from __future__ import annotations

import numpy as np

from .base import Engine, TensorSpec, host_threads
from .placement import HOST, Placement


class OnnxRuntimeEngine(Engine):
    def __init__(self, model: bytes | str, *, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or host_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the core the encoder needs between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(model, opts, providers=providers or ["CPUExecutionProvider"])
        self.inputs = tuple(TensorSpec(i.name, tuple(i.shape), i.type) for i in self._session.get_inputs())
        self.outputs = tuple(TensorSpec(o.name, tuple(o.shape), o.type) for o in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results))


def build(entry, files: dict, *, placement: Placement = HOST, threads: int | None = None) -> OnnxRuntimeEngine:
    """The model table's onnxruntime builder: the graph must have the entry's input and
    outputs. The host's CPU, whatever the placement."""
    engine = OnnxRuntimeEngine(files["weights"], threads=threads)
    engine.check_names(entry.name, [entry.settings["input"]], list(entry.settings["outputs"].values()))
    return engine
