"""One small interface for every model runtime.

The pipeline calls `engine(inputs) -> outputs` on NumPy arrays and never asks which backend
runs it: ONNX Runtime today, torch and TensorRT behind the same two methods later. A backend
is chosen once, when the engine is built (`engines.registry.load_engine`), never per call.
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

    def close(self) -> None:  # backends with device memory release it here
        pass
