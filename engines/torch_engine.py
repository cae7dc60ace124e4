"""torch backend: runs one of our nn.Module model definitions behind the `Engine` interface."""

from __future__ import annotations

import numpy as np

from .base import Engine, TensorSpec


class TorchEngine(Engine):
    def __init__(self, module, input_names: tuple[str, ...], output_names: tuple[str, ...], *, device: str = "cpu"):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.inputs = tuple(TensorSpec(n, (), "float32") for n in input_names)
        self.outputs = tuple(TensorSpec(n, (), "float32") for n in output_names)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [i.name for i in self.inputs]
        if set(feeds) != set(names):
            raise ValueError(f"engine expects inputs {sorted(names)}, got {sorted(feeds)}")
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in names]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {spec.name: o.detach().cpu().numpy() for spec, o in zip(self.outputs, out)}
