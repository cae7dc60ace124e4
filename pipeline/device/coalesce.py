"""One model call for the batches of several videos: a GPU fleet actor runs a few videos at
once, and their detector and generator batches meet here.

Why: a video alone gives the generator a few faces per batch, far below what a GPU needs to
be busy; four videos on one actor give it four times the rows per call. No thread of its
own: whoever finds the model idle runs it, for every compatible request queued by then.
Taking only what queued while the model was busy would never merge two videos (one runs,
the other waits, and they alternate), so the caller about to run waits up to `linger_s`
for the other callers seen in the last second to queue theirs too. A lone video never
waits; it pays a lock. Calls are serialized, which CUDA-graph replay on shared static
buffers needs anyway (buckets.BucketedCall).

Requests merge when their inputs agree in everything but the batch axis (same names, dtype,
device and trailing shape); a 1080p and a 720p detector batch run one after the other.
An exception in a merged call reaches every request in it, and only those.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

LINGER_ENV = "ANONSWAP_MERGE_WAIT_MS"  # tuning: what a call may wait for the other videos' batches
LINGER_S = 0.005  # default: well under a GPU batch's time
ACTIVE_S = 1.0  # a caller seen this recently is expected to call again


class _Request:
    __slots__ = ("feeds", "caller", "rows", "key", "result", "error", "done")

    def __init__(self, feeds: dict):
        self.feeds = feeds
        self.caller = threading.get_ident()
        self.rows = len(next(iter(feeds.values())))
        self.key = tuple(sorted((k, v.dtype, v.device, tuple(v.shape[1:])) for k, v in feeds.items()))
        self.result = self.error = None
        self.done = False


class Coalescer:
    """`call(feeds: dict[str, Tensor]) -> dict[str, Tensor]`, safe from any number of threads."""

    def __init__(self, fn: Callable[[dict], dict], *, max_rows: int = 256, linger_s: float | None = None):
        self.fn = fn
        self.max_rows = max_rows
        if linger_s is None:
            linger_s = float(os.environ.get(LINGER_ENV, LINGER_S * 1000)) / 1000
        self.linger_s = linger_s
        self._cv = threading.Condition()
        self._queue: list[_Request] = []
        self._seen: dict[int, float] = {}  # caller thread → when it last called
        self._busy = False
        self.calls = 0  # model calls made
        self.requests = 0  # requests served; requests - calls were merged into another's call

    def __call__(self, feeds: dict) -> dict:
        req = _Request(feeds)
        with self._cv:
            self._seen[req.caller] = time.monotonic()
            self._queue.append(req)
            self._cv.notify_all()  # a caller lingering for this one
            while True:
                while self._busy and not req.done:
                    self._cv.wait()
                if req.done:
                    return self._result(req)
                self._busy = True
                self._linger()
                batch = self._take()
                if req in batch:
                    break
                self._cv.release()  # run an earlier request's batch first, then look again
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        try:
            self._run(batch)
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
        return self._result(req)

    def _linger(self) -> None:
        """Until every recently seen caller has a request queued, the batch is full, or
        linger_s has passed (the lock is released while waiting)."""
        now = time.monotonic()
        self._seen = {t: s for t, s in self._seen.items() if now - s < ACTIVE_S}
        deadline = now + self.linger_s
        while sum(r.rows for r in self._queue) < self.max_rows and not set(self._seen) <= {r.caller for r in self._queue}:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(left)

    def _take(self) -> list[_Request]:
        """The oldest request and every later one that can share its call, up to max_rows."""
        first = self._queue[0]
        batch, rows = [], 0
        for r in list(self._queue):
            if r.key == first.key and (not batch or rows + r.rows <= self.max_rows):
                batch.append(r)
                rows += r.rows
        for r in batch:
            self._queue.remove(r)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        import torch

        try:
            if len(batch) == 1:
                outs = [self.fn(batch[0].feeds)]
            else:
                merged = {k: torch.cat([r.feeds[k] for r in batch]) for k in batch[0].feeds}
                out = self.fn(merged)
                sizes = [r.rows for r in batch]
                parts = {k: v.split(sizes) for k, v in out.items()}
                outs = [{k: parts[k][i] for k in out} for i in range(len(batch))]
            for r, o in zip(batch, outs):
                r.result = o
        except BaseException as e:  # every request of this call sees it; the next call is unaffected
            for r in batch:
                r.error = e
        with self._cv:
            self.calls += 1
            self.requests += len(batch)
            for r in batch:
                r.done = True

    @staticmethod
    def _result(req: _Request) -> dict:
        if req.error is not None:
            raise req.error
        return req.result
