"""torch backend: runs one of our nn.Module model definitions behind the `Engine` interface.

`dtype` and `channels_last` are the GPU settings (fp16 and NHWC make convolutions run on
tensor cores); on CPU they are accepted, and the tests check that they change nothing but
rounding. `compile` hands the module to torch.compile (fused kernels; the first call of each
batch bucket and input size pays the compilation, so it is opt-in: --compile). Inputs are
cast to the engine's dtype and outputs come back as float32, so callers never see the precision.
"""

from __future__ import annotations

import numpy as np

from .base import Engine, TensorSpec
from .placement import DTYPES, Placement
# Compiled shapes one module may need: 9 batch buckets × a few input sizes (the detector's
# recall passes). torch's default limit, 8, would silently leave the rest eager.
RECOMPILE_LIMIT = 64


def set_tf32(conv: bool, matmul: bool | None = None) -> tuple[bool, bool]:
    """Whether CUDA float32 convolutions (and matmuls: `matmul`, default the same) may use
    TF32, process-wide; returns the previous (conv, matmul) setting. torch's defaults are
    (True, False): "fp32" convolutions on an Ampere or later GPU are TF32 unless turned off."""
    import torch

    matmul = conv if matmul is None else matmul
    before = tf32()
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):  # torch >= 2.9
        cudnn_conv.fp32_precision = "tf32" if conv else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if matmul else "ieee"
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    return before


def tf32() -> tuple[bool, bool]:
    """(convolutions, matmuls): whether CUDA float32 work may use TF32 now."""
    import torch

    def on(new, legacy) -> bool:
        precision = getattr(new, "fp32_precision", "none") if new is not None else "none"
        return precision == "tf32" if precision in ("tf32", "ieee") else bool(legacy())

    return (on(getattr(torch.backends.cudnn, "conv", None), lambda: torch.backends.cudnn.allow_tf32),
            on(torch.backends.cuda.matmul, lambda: torch.backends.cuda.matmul.allow_tf32))


class TorchEngine(Engine):
    def __init__(self, module, input_names: tuple[str, ...], output_names: tuple[str, ...], *, device: str = "cpu",
                 dtype: str = "float32", channels_last: bool = False, compile: bool = False):
        import torch

        if dtype not in DTYPES:
            raise ValueError(f"unknown torch engine dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.channels_last = channels_last
        self.compiled = compile
        module = module.eval().to(self.device, dtype=self.dtype)
        self.module = module.to(memory_format=torch.channels_last) if channels_last else module
        if compile:
            import torch._dynamo

            name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
            self.module = torch.compile(self.module, dynamic=False)
        self.inputs = tuple(TensorSpec(n, (), "float32") for n in input_names)
        self.outputs = tuple(TensorSpec(n, (), "float32") for n in output_names)

    @classmethod
    def placed(cls, module, input_names: tuple[str, ...], output_names: tuple[str, ...], placement: Placement) -> "TorchEngine":
        """The model table's torch builders' engine: device, precision, layout and compile
        all from the run's placement."""
        return cls(module, input_names, output_names, device=placement.torch_device, dtype=placement.dtype,
                   channels_last=placement.channels_last, compile=placement.compile)

    def _check(self, feeds: dict) -> list[str]:
        self.check_feeds(feeds)
        return [i.name for i in self.inputs]

    def _run(self, tensors: list) -> tuple:
        torch = self._torch
        args = []
        for t in tensors:
            t = t.to(self.device, dtype=self.dtype, non_blocking=True)
            if self.channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            args.append(t)
        with torch.inference_mode():
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.float().contiguous() for o in out)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._check(feeds)
        out = self._run([self._torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names])
        return {spec.name: o.cpu().numpy() for spec, o in zip(self.outputs, out)}

    def run_tensors(self, feeds: dict) -> dict:
        """Stays on the device: inputs are moved only if they are elsewhere (a no-op on the
        engine's own device), outputs are left where the model produced them."""
        names = self._check(feeds)
        out = self._run([feeds[n] for n in names])
        return {spec.name: o for spec, o in zip(self.outputs, out)}
