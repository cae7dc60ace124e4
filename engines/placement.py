"""Where and how a model runs: one object that every builder in the model table takes.

In the spirit of insightface's `prepare(ctx_id, ...)`: the run decides once
(pipeline.run.config.EngineChoice.placement) and every detector, embedder and generator is
built with it, so a setting such as --compile cannot reach some models and miss others. It is
frozen and hashable: the model cache's keys hold it (pipeline.run.build.model_key).
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Placement:
    device: str | None = None  # a torch device ("cpu", "cuda:0"); None: the host path (ONNX Runtime, dlib, OpenCV)
    dtype: str = "float32"  # the torch and TensorRT backends' precision
    channels_last: bool = False  # NHWC convolutions (tensor cores on a GPU)
    compile: bool = False  # torch.compile the torch backend's modules (--compile)
    cuda_graphs: bool = False  # the run's bucketed engines replay CUDA graphs (pipeline.device.buckets)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")

    @property
    def host(self) -> bool:
        return self.device is None

    @property
    def torch_device(self) -> str:
        """Where a torch model runs: the device, or the CPU on the host path (the models that
        only have a torch backend, e.g. the face parser)."""
        return self.device or "cpu"

    @property
    def is_cuda(self) -> bool:
        return bool(self.device) and self.device.startswith("cuda")


HOST = Placement()  # the default: what library callers and tests that pass nothing get
