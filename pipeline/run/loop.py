"""The one run loop of file, live and fleet runs: a source, the stages, the sinks.

What differs between them is only how frames are fed (`Feed`): a file batches for
throughput and ends with its last frame; a live stream runs batch 1 on short queues, drops
a frame that waited past its latency budget before any expensive stage sees it, and ends on
a signal or `--max-frames`. Everything else (notes, stages, report settings, the atomic
outputs, identity, the report) is this module, so a fix lands in every kind of run at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from pipeline.core.stages import StagePipeline, batched
from pipeline.io.outputs import RunOutputs
from pipeline.io.report import BoxesWriter, ReportBuilder
from pipeline.run.build import ModelCache, build_stages, finish_identity, report_settings
from pipeline.run.config import RunConfig, check_detect_size, engine_notes


@dataclass
class Feed:
    """How one kind of run feeds the loop. `source`: a VideoReader or a LiveSource (`info`,
    `frames()`, `notes` and the counts the report reads)."""

    source: object
    name: str  # the report's "input"
    output: str  # the report's "output"
    open_sink: Callable  # VideoInfo → the video sink (VideoWriter or a live sink)
    batch_size: int
    queue_size: int
    stage: str = "decode"  # "capture" waits on the network: its busy time is the stream's pace, not work
    max_age_s: float | None = None  # live: older than this when detection would start → dropped there
    stop_after: int | None = None  # live: a stream does not end by itself
    live: dict | None = None  # the report's settings["live"] (None for files)
    check: Callable[[int], None] = lambda frames_written: None  # raises when the input ended wrong
    postfix: Callable[[], dict] = dict  # extra progress-bar fields


class LatencyStats:
    """Capture → output latency over a whole run in constant memory (1 ms bins up to 60 s)."""

    BINS = 60_000

    def __init__(self):
        self.counts = np.zeros(self.BINS + 1, np.int64)
        self.n = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[min(int(ms), self.BINS)] += 1
        self.n += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float | None:
        if not self.n:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.n))
        return float(min(k + 0.5, self.max_ms))  # the bin's middle, never above the maximum seen

    def to_dict(self) -> dict:
        p = {f"p{q}": None if self.percentile(q) is None else round(self.percentile(q), 1) for q in (50, 95, 99)}
        return {**p, "max": round(self.max_ms, 1) if self.n else None, "frames": self.n}


@dataclass
class LoopStats:
    dropped_too_old: int = 0
    stopped_by: str | None = None  # "max_frames" when the loop itself stopped the run
    latency: LatencyStats = field(default_factory=LatencyStats)  # frames that carry their capture time


def run(feed: Feed, config: RunConfig, mode: str, engines, *, mode_note: str | None = None, report_path: str | None = None,
        boxes_path: str | None = None, detector=None, models: ModelCache | None = None, progress: bool = True,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        on_frame: Callable[[int], None] | None = None) -> dict:
    """The run, once its input is open and its outputs are checked: its report. Nothing lands under a final name unless the whole run succeeds (RunOutputs)."""
    started = time.perf_counter()
    source = feed.source
    check_detect_size(config.detect_size, source.info.height, source.info.width)
    # Notes only once the input and outputs are known good, so that an error stays one line.
    for line in [mode_note, *engine_notes(config, engines), *source.notes]:
        if line:
            log(line)
    if mode != "swap" and config.swap.defense_noise:
        log(f"note: --defense-noise applies to swapped faces only; mode is {mode}, so it does nothing")
    st = build_stages(mode, config, detector, models, engines)
    report = ReportBuilder(feed.name, feed.output, mode, source.info, requested_mode=config.mode)
    report.settings = report_settings(config, st, source, mode, batch_size=feed.batch_size, live=feed.live)
    stats = LoopStats()
    with RunOutputs(report_path) as outs:  # opened inside: an interrupt at any point leaves no temp file behind
        outs.video = feed.open_sink(source.info)  # held by `outs` first: an interrupt from here on aborts it
        sink = outs.video
        said = list(sink.notes)
        for line in said:
            log(line)
        boxes = outs.boxes = BoxesWriter(boxes_path) if boxes_path else None
        _loop(feed, st, sink, boxes, report, stats, config, progress, on_frame)
        feed.check(sink.frames_written)
        outs.finish()
        for line in sink.notes:  # what only the finished output knows (the MPEG-TS shift)
            if line not in said:
                log(line)
        finish_identity(st.identity, report, config)
        report.finish(source, sink, time.perf_counter() - started)
        result = report.to_dict()
        if feed.live is not None:
            result["live"] = _live_section(feed, stats, sink)
        outs.commit(result)
    return result


def _live_section(feed: Feed, stats: LoopStats, sink) -> dict:
    source = feed.source
    s = source.stats
    return {
        "url": feed.name,
        "stopped_by": stats.stopped_by or source.stop.reason or source.ended_by or "stop",
        "latency_ms": stats.latency.to_dict(),
        "max_latency_ms": feed.live["max_latency_ms"],
        "frames_captured": s.frames_captured,
        "frames_out": sink.frames_written,
        "dropped": {"buffer_full": source.dropped, "too_old": stats.dropped_too_old,
                    "total": source.dropped + stats.dropped_too_old},
        "reconnects": s.reconnects,
        "gaps": [g.to_dict() for g in s.gaps],
        "outputs": sink.outputs,
    }


def _loop(feed: Feed, st, sink, boxes, report, stats: LoopStats, config: RunConfig, progress, on_frame) -> None:
    source = feed.source

    def frames(_):
        return source.frames()

    def fresh(frames):
        for frame in frames:
            if feed.max_age_s is not None and time.monotonic() - frame.data["captured"] > feed.max_age_s:
                stats.dropped_too_old += 1  # cheapest place to drop: nothing was spent on it yet
                continue
            yield frame

    def detect(frames):
        # pulled one at a time for batch 1, so a frame's age is checked just before it is detected
        for batch in batched(fresh(frames), feed.batch_size):
            yield from zip(batch, st.detect(batch))

    def anonymize(items):
        # Several frames at once: the swap generator runs on all their faces together.
        for batch in batched(items, feed.batch_size):
            st.anonymizer.apply_batch(batch)
            yield from batch

    stages = st.chain((feed.stage, frames), detect, anonymize)
    hints = [n for n in (feed.stop_after, config.max_frames, source.info.frames_hint) if n]
    bar = tqdm(total=min(hints) if hints else None, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    encode_s = 0.0
    try:
        with StagePipeline(stages, maxsize=feed.queue_size) as pipe:
            for tf in pipe:
                t = time.perf_counter()
                sink.write(tf.frame)
                encode_s += time.perf_counter() - t
                if "captured" in tf.frame.data:
                    stats.latency.add((time.monotonic() - tf.frame.data["captured"]) * 1000)
                if boxes:
                    boxes.write(tf)
                report.add(tf)
                bar.update(1)
                if on_frame is not None:
                    on_frame(sink.frames_written)
                if sink.frames_written % 10 == 0:
                    bar.set_postfix(faces=len(tf.faces), **feed.postfix(), refresh=False)
                if feed.stop_after and sink.frames_written >= feed.stop_after:
                    stats.stopped_by = "max_frames"
                    break
            for packet in source.trailing_audio:
                sink.write_audio(packet)
        # Threads joined, so the totals are final.
        busy = {k: v for k, v in pipe.busy_ms().items() if k != "capture"}
        report.stage_ms = {**busy, "encode": round(encode_s * 1000, 1)}
    finally:
        bar.close()
