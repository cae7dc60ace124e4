"""Fixed batch sizes, so a CUDA graph captured once per size replays every later batch.

A CUDA graph replays a fixed sequence of kernels on fixed buffers: a batch of 5 faces would
need its own graph. Batches are padded up to the next bucket (1, 2, 4, … 256) and the extra
rows are dropped from the outputs, so at most 9 graphs serve any batch. On the CPU (and when
graphs are off) the same padding rules hold, but the call is eager: the tests check the
bucketing there, and that padding changes no real row's result.
"""

from __future__ import annotations

from typing import Callable

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket(n: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket that holds `n` rows (n itself beyond the largest: no graph then)."""
    if n < 1:
        raise ValueError(f"a batch has at least one row, got {n}")
    for b in buckets:
        if n <= b:
            return b
    return n


def pad_rows(t, size: int):
    """`t` with rows appended (copies of row 0, so padded rows compute finite values) up to `size`."""
    import torch

    if len(t) == size:
        return t
    extra = t[:1].expand(size - len(t), *t.shape[1:])
    return torch.cat([t, extra], dim=0)


class BucketedCall:
    """`call(inputs: dict[str, Tensor]) -> dict[str, Tensor]` over padded batches.

    `fn` takes and returns dicts of tensors whose first axis is the batch. With `graphs`
    (CUDA only), each bucket's first call is captured into a CUDA graph on static buffers
    (after a warm-up on a side stream, as torch's graph docs require) and later calls copy
    into those buffers and replay it. Otherwise `fn` runs eagerly on the padded batch.
    """

    def __init__(self, fn: Callable[[dict], dict], *, graphs: bool = False, buckets: tuple[int, ...] = BUCKETS):
        self.fn = fn
        self.graphs = graphs
        self.buckets = buckets
        self._captured: dict[int, tuple] = {}  # bucket → (graph, static inputs, static outputs)
        self.replays = 0

    def __call__(self, inputs: dict) -> dict:
        n = len(next(iter(inputs.values())))
        size = bucket(n, self.buckets)
        padded = {k: pad_rows(v, size) for k, v in inputs.items()}
        if self.graphs and size in self.buckets:
            out = self._replay(size, padded)
        else:
            out = self.fn(padded)
        return {k: v[:n] for k, v in out.items()}

    def _replay(self, size: int, padded: dict) -> dict:
        import torch

        if size not in self._captured:
            static_in = {k: v.clone() for k, v in padded.items()}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: allocations and autotuning happen outside the graph
                    self.fn(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in)
            self._captured[size] = (graph, static_in, static_out)
        graph, static_in, static_out = self._captured[size]
        for k, v in padded.items():
            static_in[k].copy_(v)
        graph.replay()
        self.replays += 1
        return {k: v.clone() for k, v in static_out.items()}


class BucketedEngine:
    """An Engine whose device calls (`run_tensors`) go through fixed batch buckets, replayed as
    CUDA graphs when `graphs` is on. Host calls (`__call__`) pass straight through. Built
    once, at load time, around whichever backend runs the model. Videos that share it (a
    fleet actor running several at once) have their batches merged into one call
    (coalesce.Coalescer), which also keeps graph replays one at a time."""

    def __init__(self, engine, *, graphs: bool):
        from pipeline.device.coalesce import Coalescer

        self.engine = engine
        self.inputs, self.outputs = engine.inputs, engine.outputs
        self._bucketed = BucketedCall(engine.run_tensors, graphs=graphs)
        self.coalescer = Coalescer(self._bucketed, max_rows=BUCKETS[-1])

    def __call__(self, feeds):
        return self.engine(feeds)

    def run_tensors(self, feeds):
        return self.coalescer(feeds)

    @property
    def replays(self) -> int:
        return self._bucketed.replays

    def close(self) -> None:
        self.engine.close()
