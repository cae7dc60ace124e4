"""Stages on threads joined by bounded queues.

Every blocking put/get has a timeout and checks a shared stop flag, so one failing stage
stops the whole pipeline instead of hanging it (supervision's `process_video` joins its
reader forever after the callback raised; we don't). Each stage is a function from an
iterator of inputs to an iterator of outputs, which lets a stage batch (detection) or keep
order-dependent state (tracking) without knowing about threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable, Iterator

from pipeline.core.errors import AnonswapError, StageError

log = logging.getLogger(__name__)
_END = object()
POLL_S = 0.1


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of up to `n` consecutive items (itertools.batched arrives only in Python 3.12)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class _Stopped(Exception):
    pass


class Stage(threading.Thread):
    def __init__(self, name: str, fn: Callable[[Iterator], Iterable], inbox: queue.Queue | None, outbox: queue.Queue, stop: threading.Event):
        super().__init__(name=f"anonswap-{name}", daemon=True)
        self.stage_name = name
        self.fn = fn
        self.inbox = inbox
        self.outbox = outbox
        self.stop = stop
        self.error: BaseException | None = None
        self.wait_s = 0.0
        self.total_s = 0.0

    @property
    def busy_s(self) -> float:
        return max(0.0, self.total_s - self.wait_s)

    def _inputs(self) -> Iterator:
        while True:
            t = time.perf_counter()
            item = _get(self.inbox, self.stop)
            self.wait_s += time.perf_counter() - t
            if item is _END:
                return
            yield item

    def run(self) -> None:
        start = time.perf_counter()
        try:
            items = self.fn(self._inputs() if self.inbox is not None else iter(()))
            for item in items:
                t = time.perf_counter()
                _put(self.outbox, item, self.stop)
                self.wait_s += time.perf_counter() - t
            _put(self.outbox, _END, self.stop)
        except _Stopped:
            pass
        except BaseException as e:  # handed to the consumer, which re-raises it
            self.error = e
            self.stop.set()
        finally:
            self.total_s = time.perf_counter() - start


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            continue


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue


class StagePipeline:
    """Runs `source` then each stage on its own thread; iterate it to consume the last output.

    `stages` is a list of (name, fn); the first fn ignores its input iterator and produces
    items. Leaving the `with` block (normally or by an exception) stops and joins every thread.
    """

    def __init__(self, stages: list[tuple[str, Callable]], *, maxsize: int = 8, join_timeout_s: float = 10.0):
        self.stop = threading.Event()
        self.join_timeout_s = join_timeout_s
        self.stages: list[Stage] = []
        inbox = None
        for name, fn in stages:
            outbox: queue.Queue = queue.Queue(maxsize=maxsize)
            self.stages.append(Stage(name, fn, inbox, outbox, self.stop))
            inbox = outbox
        self._out = inbox
        self.consumer_wait_s = 0.0
        self.stuck: list[str] = []  # stages still running after the join timeout

    def __enter__(self) -> "StagePipeline":
        for s in self.stages:
            s.start()
        return self

    def __iter__(self) -> Iterator:
        while True:
            t = time.perf_counter()
            try:
                item = self._out.get(timeout=POLL_S)
            except queue.Empty:
                self.consumer_wait_s += time.perf_counter() - t
                self._raise_failed()
                continue
            self.consumer_wait_s += time.perf_counter() - t
            if item is _END:
                self._raise_failed()
                return
            yield item

    def _raise_failed(self) -> None:
        for s in self.stages:
            if isinstance(s.error, AnonswapError):
                raise s.error  # a user error already says what is wrong, on one line, with its exit status
            if s.error is not None:
                raise StageError(s.stage_name, s.error) from s.error
        if self.stop.is_set():
            raise StageError("pipeline", RuntimeError("stopped"))

    def __exit__(self, *exc) -> None:
        self.stop.set()
        deadline = time.monotonic() + self.join_timeout_s
        for s in self.stages:
            s.join(timeout=max(0.0, deadline - time.monotonic()))
        # A stage blocked inside a call that ignores the stop flag (a network read, a model
        # that hangs) is named, so whoever owns its resources does not free them under it.
        self.stuck = [s.stage_name for s in self.stages if s.is_alive()]
        if self.stuck:
            log.warning("stage thread(s) still running %.0f s after stop: %s", self.join_timeout_s, ", ".join(self.stuck))

    def busy_ms(self) -> dict[str, float]:
        return {s.stage_name: round(s.busy_s * 1000, 1) for s in self.stages}
