"""Capture and replay for `buckets.BucketedCall`: CUDA graphs on a GPU, a stand-in on the CPU.

Why a stand-in: CI has no GPU, and a graph bug (static buffers reused for another input shape,
a host sync inside capture) otherwise shows first on a lent device, whose 15 minutes one crash
spends. The stand-in keeps what a graph does to its caller: inputs are copied into static
buffers that keep their shape, dtype and device; every replay rewrites the same output
tensors; and capture refuses what CUDA's stream capture refuses: a scalar read (`.item()`,
`bool(t)`), a download (`.cpu()`, `.numpy()`), an upload of host data (`torch.tensor`), or an
output whose size depends on the data (`nonzero`, boolean masks, `unique`). It makes nothing
faster. `ANONSWAP_GRAPH_STANDIN=1` turns it on for device runs on the CPU (`select.graphs_on`: the
tests, benchmarks/gpu/rehearse.sh); a user's CPU run never captures.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

class CaptureError(RuntimeError):
    """Something in a captured call that a CUDA graph cannot hold."""


# Python-level calls that reach the host without an aten op on the CPU (on a GPU, each one
# copies device memory to the host or host data to the device, and so waits for the stream).
_HOST_CALLS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "tensor", "as_tensor", "from_numpy"}
# aten ops that wait for the device: a scalar read, or an output sized by the data.
_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
             "unique_consecutive", "equal", "repeat_interleave", "lift_fresh"}


class _RefuseHostCalls(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _HOST_CALLS:
            raise CaptureError(f"{name}() during graph capture: a host sync, which a CUDA graph cannot hold")
        return func(*args, **(kwargs or {}))


class _RefuseSyncOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        bool_index = name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))
        if name in _SYNC_OPS or bool_index:
            raise CaptureError(f"aten::{name} during graph capture: it waits for the device (a scalar read or a data-dependent shape)")
        return func(*args, **(kwargs or {}))


class Captured:
    """One captured call: `replay()` recomputes `static_out` from whatever `static_in` holds."""

    def __init__(self, static_in: dict, static_out: dict, replay: Callable[[], None]):
        self.static_in, self.static_out, self.replay = static_in, static_out, replay

    def load(self, feeds: dict) -> None:
        """Copies `feeds` into the static inputs. A graph's buffers never change shape, dtype
        or device (copy_ would broadcast a smaller input silently), so any change is an error."""
        for k, v in feeds.items():
            s = self.static_in[k]
            if v.shape != s.shape or v.dtype != s.dtype or v.device != s.device:
                raise CaptureError(f"input {k!r} {tuple(v.shape)} {v.dtype} {v.device} does not fit the captured "
                                   f"buffer {tuple(s.shape)} {s.dtype} {s.device}")
            with torch.inference_mode():  # the buffers may be inference tensors (captured under it)
                s.copy_(v)


class Grapher:
    """Captures calls for one `BucketedCall`. On CUDA, every graph of it allocates from one
    memory pool (replays are serialized by the caller, and outputs are cloned before the next
    replay, so graphs may reuse each other's temporaries); capture is `thread_local`, so CUDA
    work of other stage threads during a capture neither breaks it nor is caught in it."""

    def __init__(self):
        self._pool = None

    def capture(self, fn: Callable[[dict], dict], feeds: dict) -> Captured:
        static_in = {k: v.clone() for k, v in feeds.items()}
        device = next(iter(static_in.values())).device
        if device.type == "cuda":
            return self._capture_cuda(fn, static_in, device)
        return self._capture_standin(fn, static_in)

    def _capture_cuda(self, fn, static_in: dict, device) -> Captured:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: allocations, cuDNN autotuning and lazy caches happen outside the graph
                fn(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_out = fn(static_in)
        return Captured(static_in, static_out, graph.replay)

    @staticmethod
    def _capture_standin(fn, static_in: dict) -> Captured:
        for _ in range(2):  # the same warm-up as on CUDA: lazy caches fill here, not in capture
            fn(static_in)
        with _RefuseHostCalls(), _RefuseSyncOps():
            static_out = fn(static_in)

        def replay():
            with torch.inference_mode():
                with _RefuseHostCalls(), _RefuseSyncOps():
                    fresh = fn(static_in)
                for k, v in fresh.items():  # a graph writes its outputs in place, into the same tensors
                    static_out[k].copy_(v)

        return Captured(static_in, static_out, replay)
