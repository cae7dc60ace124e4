"""One small interface for every model runtime.

The pipeline calls `engine(inputs) -> outputs` on NumPy arrays, or `engine.run_tensors(inputs)`
on torch tensors (the device data path), and never asks which backend runs it: ONNX Runtime
and torch today, TensorRT behind the same methods later. A backend
is chosen once, when the engine is built (`engines.registry.load`, from the model table), never per call.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

THREADS_ENV = "ANONSWAP_THREADS"


def cpu_budget() -> int:
    """Cores this process may use: `ANONSWAP_THREADS` when set (a fleet worker's share of the
    machine, so several workers don't each start a thread per core), else the machine's."""
    value = os.environ.get(THREADS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return os.cpu_count() or 1


def host_threads() -> int:
    """Intra-op threads of a host CPU runtime (ONNX Runtime, OpenVINO): leave one core for
    decode/encode threads on small machines: a runtime spinning on every core starves libx264
    and the pipeline gets slower, not faster."""
    n = cpu_budget()
    return max(1, n - 1) if n > 2 else n


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints for fixed axes, str/None for dynamic ones
    dtype: str


class Engine(ABC):
    """Runs one model. Inputs and outputs are named, so layouts are never guessed by position."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @abstractmethod
    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name."""

    def check_feeds(self, feeds: dict) -> None:
        """Raises ValueError unless `feeds` names exactly this engine's inputs."""
        expected = {i.name for i in self.inputs}
        if set(feeds) != expected:
            raise ValueError(f"engine expects inputs {sorted(expected)}, got {sorted(feeds)}")

    def check_names(self, source: str, inputs=(), outputs=()) -> None:
        """Raises ValueError unless the graph has these input and output names (the table's)."""
        have_in, have_out = {i.name for i in self.inputs}, {o.name for o in self.outputs}
        missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
        if missing:
            raise ValueError(f"{source}: the graph lacks {', '.join(missing)} (inputs {sorted(have_in)}, outputs {sorted(have_out)})")

    def run_tensors(self, feeds: dict) -> dict:
        """torch tensors in, torch tensors out, on the inputs' device: the device data path
        (pipeline.anonymize.face_ops.TorchFaceOps) calls this so frames never leave the device.

        Backends that run on device memory (torch; TensorRT) override it to stay there. This
        default goes through host memory, so every backend can serve that path, at the price
        of two copies per batch.
        """
        import torch

        device = next(iter(feeds.values())).device
        out = self({k: v.detach().float().cpu().numpy() for k, v in feeds.items()})
        return {k: torch.from_numpy(v).to(device) for k, v in out.items()}

    def close(self) -> None:  # backends with device memory release it here
        pass
