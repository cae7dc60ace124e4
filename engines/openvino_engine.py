"""OpenVINO backend for the detectors' ONNX graphs on the host CPU (`--backend openvino`).

Why: ../shared/FACTS.md measured RetinaFace faster on OpenVINO than on ONNX Runtime on CPUs
it tunes for; whether it wins here is in benchmarks/results/detector_runtime.md and, in the
run, throughput.md. Always f32 (`INFERENCE_PRECISION_HINT`): its default on CPUs with BF16
changes the outputs (up to 0.72 in FACTS.md) and no recall measurement covers that. Each
input shape gets its own compiled model, made on first use and kept (the recall passes feed
three shapes; static shapes ran as fast or faster than one dynamic model). The `openvino`
package installs beside our `onnxruntime` (`onnxruntime-openvino` would replace it).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .base import Engine, TensorSpec, host_threads
from .placement import HOST, Placement


class OpenVinoEngine(Engine):
    def __init__(self, model: bytes | str, *, threads: int | None = None):
        from .extras import require

        require("openvino", "--backend openvino")
        import openvino as ov

        self._core = ov.Core()
        if isinstance(model, bytes):  # a wheel's bytes: OpenVINO reads ONNX from a file
            with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
                f.write(model)
            try:
                self._model = self._core.read_model(f.name)
            finally:
                os.unlink(f.name)
        else:
            self._model = self._core.read_model(model)
        self._config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_NUM_THREADS": threads or host_threads()}
        self.inputs = tuple(TensorSpec(i.get_any_name(), tuple(str(d) for d in i.get_partial_shape()), str(i.get_element_type()))
                            for i in self._model.inputs)
        self.outputs = tuple(TensorSpec(o.get_any_name(), tuple(str(d) for d in o.get_partial_shape()), str(o.get_element_type()))
                             for o in self._model.outputs)
        self._compiled: dict[tuple, tuple] = {}

    def _request(self, feeds: dict[str, np.ndarray]):
        key = tuple((name, feeds[name].shape) for name in sorted(feeds))
        if key not in self._compiled:
            model = self._model.clone()
            model.reshape({name: list(shape) for name, shape in key})
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._compiled[key] = (compiled.create_infer_request(), [(o, o.get_any_name()) for o in compiled.outputs])
        return self._compiled[key]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        request, outputs = self._request(feeds)
        result = request.infer({k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        return {name: np.array(result[port]) for port, name in outputs}  # a copy: the request reuses its buffers


def build(entry, files: dict, *, placement: Placement = HOST, threads: int | None = None) -> OpenVinoEngine:
    """The model table's openvino builder (the host's CPU, whatever the placement): the graph
    must have the entry's input and outputs."""
    engine = OpenVinoEngine(files["weights"], threads=threads)
    engine.check_names(entry.name, [entry.settings["input"]], list(entry.settings["outputs"].values()))
    return engine
