"""Fixed batch sizes, so a CUDA graph captured once per size replays every later batch.

A CUDA graph replays a fixed sequence of kernels on fixed buffers: a batch of 5 faces would
need its own graph. Batches are padded up to the next bucket (1, 2, 4, … 256) and the extra
rows are dropped from the outputs, so at most 9 graphs serve any batch of one input size. On
the CPU the same padding rules hold and the call is eager, or captured through the stand-in
(pipeline.device.graphs) when the tests turn it on.
"""

from __future__ import annotations

import threading
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

    `fn` takes and returns dicts of tensors whose first axis is the batch. With `graphs`, the
    first call of each (bucket, input shapes, dtypes, device) is captured (pipeline.device.graphs:
    a CUDA graph on a GPU, the stand-in on the CPU) and later calls with the same key copy into
    its static buffers and replay it. The key is more than the bucket: one detector engine
    serves several working sizes (the recall passes: plain, padded, dark at half scale; a second
    video), and a graph's buffers hold one size only. Replays run one at a time (the graphs
    share a memory pool) and their outputs are cloned before the lock is released. Without
    `graphs`, `fn` runs eagerly on the padded batch.
    """

    def __init__(self, fn: Callable[[dict], dict], *, graphs: bool = False, buckets: tuple[int, ...] = BUCKETS):
        self.fn = fn
        self.graphs = graphs
        self.buckets = buckets
        self._captured: dict[tuple, object] = {}  # key() → graphs.Captured
        self._grapher = None
        self._lock = threading.Lock()
        self.replays = 0

    def __call__(self, inputs: dict) -> dict:
        n = len(next(iter(inputs.values())))
        size = bucket(n, self.buckets)
        padded = {k: pad_rows(v, size) for k, v in inputs.items()}
        if self.graphs and size in self.buckets:
            out = self._replay(padded)
        else:
            out = self.fn(padded)
        return {k: v[:n] for k, v in out.items()}

    @staticmethod
    def key(padded: dict) -> tuple:
        """What a captured graph is good for: every input's name, shape, dtype and device."""
        return tuple(sorted((k, tuple(v.shape), v.dtype, v.device) for k, v in padded.items()))

    @property
    def captures(self) -> int:
        return len(self._captured)

    def _replay(self, padded: dict) -> dict:
        from pipeline.device.graphs import Grapher

        key = self.key(padded)
        with self._lock:
            if key not in self._captured:
                self._grapher = self._grapher or Grapher()
                self._captured[key] = self._grapher.capture(self.fn, padded)
            captured = self._captured[key]
            captured.load(padded)
            captured.replay()
            self.replays += 1
            return {k: v.clone() for k, v in captured.static_out.items()}


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
