"""`--device auto|cpu|cuda[:N]`, resolved once when the run is built.

- `auto`: the first CUDA device when torch sees one, else the host path (OpenCV and ONNX
  Runtime on NumPy frames), which stays the CPU default because it is faster there.
- `cpu`: the torch data path on the CPU: what CI runs to hold the device path to the host
  path's results (same tracks, same outcomes, pixels within rounding).
- `cuda`, `cuda:N`: that GPU; an error before any work if it is not there.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

from pipeline.core.errors import InvalidInputError

CHOICES = "auto|cpu|cuda[:N]"
GRAPH_STANDIN_ENV = "ANONSWAP_GRAPH_STANDIN"  # tests and the kit rehearsal: graphs through the CPU stand-in


@dataclass(frozen=True)
class DeviceChoice:
    spec: str  # what was asked
    torch_device: str | None  # None: the host path

    @property
    def host(self) -> bool:
        return self.torch_device is None

    @property
    def is_cuda(self) -> bool:
        return bool(self.torch_device) and self.torch_device.startswith("cuda")

    def describe(self) -> str:
        return "host (OpenCV + ONNX Runtime)" if self.host else f"torch on {self.torch_device}"


def _no_nvidia_driver() -> bool:
    """Linux with none of NVIDIA's device files (nor WSL's GPU device) has no CUDA device:
    answered without importing torch, which costs a CPU-only run about a second of start-up
    (a sixth of a blur run of the shared clip; benchmarks/throughput.py times whole commands)."""
    return sys.platform.startswith("linux") and not (glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg"))


def cuda_devices() -> int:
    if _no_nvidia_driver():
        return 0
    try:
        import torch
    except ImportError:  # torch is a dependency; a broken install only loses the device path
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve(spec: str = "auto", *, devices: int | None = None) -> DeviceChoice:
    """`devices`: how many CUDA devices there are (None: ask torch); tests pass it to check the
    decision on a machine without a GPU."""
    spec = (spec or "auto").strip().lower()
    n = cuda_devices() if devices is None else devices
    if spec == "auto":
        return DeviceChoice(spec, "cuda:0" if n else None)
    if spec == "cpu":
        return DeviceChoice(spec, "cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise InvalidInputError(f"--device {spec}: expected {CHOICES}")
        if int(index) >= n:
            have = f"{n} CUDA device{'s' if n != 1 else ''}" if n else "no CUDA device torch can use"
            raise InvalidInputError(f"--device {spec}: this machine has {have}; use --device auto or cpu")
        return DeviceChoice(spec, f"cuda:{int(index)}")
    raise InvalidInputError(f"--device {spec}: expected {CHOICES}")


def graphs_on(device: DeviceChoice, asked: bool) -> bool:
    """Whether the bucketed models are captured and replayed: CUDA graphs on a GPU; on the CPU
    only through the stand-in (pipeline.device.graphs), which the tests and the kit rehearsal
    turn on with ANONSWAP_GRAPH_STANDIN=1 so that graph bugs fail CI rather than the device."""
    if not asked or device.host:
        return False
    return device.is_cuda or os.environ.get(GRAPH_STANDIN_ENV, "") not in ("", "0")
