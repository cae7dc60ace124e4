"""TensorRT backend: an engine built from our ONNX exports, run on torch's device memory.

Why TensorRT: on NVIDIA GPUs it fuses and tunes the convolutions of the generator and the
detector beyond what eager torch does. Built once per (ONNX sha256, TensorRT version, GPU
name, precision) and cached as a plan file beside the models, with a timing cache so a
rebuild after an upgrade is faster; dynamic-batch optimization profiles cover every batch
bucket (pipeline.device.buckets). It runs on torch-owned device buffers and torch's current
CUDA stream (`execute_async_v3`), so one CUDA context serves both and no pycuda is needed.

TensorRT is not a dependency (several hundred MB, NVIDIA-only): `require()` is the guard, and
asking for `--backend tensorrt` without it is a one-line error. This module has never run:
no machine this project was developed on had TensorRT (docs/gpu.md).
"""

from __future__ import annotations

import os
import re

from .base import Engine, TensorSpec
from .model_files import cache_dir, sha256_of
from .placement import HOST, Placement

PLAN_DIR = "tensorrt"
MAX_BATCH = 256  # the largest batch bucket (pipeline.device.buckets.BUCKETS): every profile reaches it


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run on this machine; the message says what is missing."""


def require():
    """The `tensorrt` module, or BackendUnavailable saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailable(
            "--backend tensorrt needs NVIDIA TensorRT 10 (pip install tensorrt, matching your CUDA); "
            f"it is not installed here ({e.name or e}). Use --backend torch (the default on a GPU)") from None
    return tensorrt


def plan_key(onnx_sha256: str, trt_version: str, gpu_name: str, precision: str) -> str:
    """The engine cache's file name: a plan is only valid for the same graph, TensorRT
    release, GPU model and precision, so each of them is in the name."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return f"{onnx_sha256[:16]}_trt{trt_version}_{gpu}_{precision}.plan"


class TensorRTEngine(Engine):
    """`run_tensors` on CUDA tensors (the device path); `__call__` on NumPy for completeness."""

    def __init__(self, plan: bytes, *, device: str = "cuda:0"):
        import torch

        trt = require()
        self._torch = torch
        self.device = torch.device(device)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ValueError("TensorRT could not load the cached plan (built by another version?); delete it to rebuild")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = tuple(TensorSpec(n, tuple(self._engine.get_tensor_shape(n)), "float32") for n in names
                            if self._engine.get_tensor_mode(n) == mode)
        self.outputs = tuple(TensorSpec(n, tuple(self._engine.get_tensor_shape(n)), "float32") for n in names
                             if self._engine.get_tensor_mode(n) != mode)
        self._dtypes = {n: self._torch_dtype(self._engine.get_tensor_dtype(n), trt) for n in names}

    @staticmethod
    def _torch_dtype(dt, trt):
        import torch

        return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32}[dt]

    @classmethod
    def from_onnx(cls, onnx: str | bytes, entry, *, shapes: dict, placement: Placement) -> "TensorRTEngine":
        """Builds (or loads from the cache) the plan for this ONNX on the placement's GPU, in its
        dtype. `shapes` maps each input to its (min, opt, max) shapes: the optimization profile."""
        import torch

        if not placement.is_cuda:
            raise ValueError(f"TensorRT runs on a CUDA device, not {placement.torch_device}")
        trt = require()
        device = placement.device
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[placement.dtype]
        folder = cache_dir() / PLAN_DIR
        folder.mkdir(parents=True, exist_ok=True)
        plan_path = folder / plan_key(sha256_of(onnx), trt.__version__, torch.cuda.get_device_name(torch.device(device)), precision)
        if plan_path.exists():
            return cls(plan_path.read_bytes(), device=device)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        data = onnx if isinstance(onnx, bytes) else open(onnx, "rb").read()
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT cannot parse the ONNX of {entry.name}: {errors}")
        config = builder.create_builder_config()
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        timing_path = folder / "timing.cache"
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ValueError(f"TensorRT could not build an engine for {entry.name}")
        plan = bytes(plan)
        tmp = plan_path.with_suffix(".partial")
        tmp.write_bytes(plan)
        os.replace(tmp, plan_path)
        timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        return cls(plan, device=device)

    def run_tensors(self, feeds: dict) -> dict:
        torch = self._torch
        self.check_feeds(feeds)
        keep = []
        for name, t in feeds.items():
            t = t.to(self.device, dtype=self._dtypes[name]).contiguous()
            keep.append(t)
            if not self._context.set_input_shape(name, tuple(t.shape)):  # TensorRT says no by returning False
                raise ValueError(f"input {name!r} of shape {tuple(t.shape)} is outside this TensorRT engine's "
                                 f"optimization profile (batch 1-{MAX_BATCH}); rebuild the plan or use --backend torch")
            self._context.set_tensor_address(name, t.data_ptr())
        out = {}
        for spec in self.outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            out[spec.name] = torch.empty(shape, dtype=self._dtypes[spec.name], device=self.device)
            self._context.set_tensor_address(spec.name, out[spec.name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return {k: v.float() for k, v in out.items()}

    def __call__(self, feeds):
        torch = self._torch
        out = self.run_tensors({k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()})
        return {k: v.cpu().numpy() for k, v in out.items()}


def build_retinaface(entry, files: dict, *, placement: Placement = HOST) -> TensorRTEngine:
    """The model table's tensorrt builder for RetinaFace: its ONNX as shipped (dynamic batch,
    height and width), one profile from 1 to MAX_BATCH frames of up to 2048 px."""
    name = entry.settings["input"]
    return TensorRTEngine.from_onnx(files["weights"], entry, shapes={
        name: ((1, 3, 32, 32), (4, 3, 736, 1280), (MAX_BATCH, 3, 2048, 2048))}, placement=placement)
