"""A live stream end to end: capture → detect → track → anonymize → encode, latency-bounded.

The same stages as a file run, with three differences that make it live:
- frames are dropped, never delayed without bound: the capture buffer keeps only the newest
  frames, and a frame older than `max_latency_ms` when detection would start is dropped
  there (before any expensive stage, so a dropped frame costs nothing and is never output);
- batch size 1 and short queues: a batch of N frames would add N frame times of latency;
- the run ends on a signal, on `--max-frames`, or when the source stays gone longer than
  the reconnect timeout, and in each case the output is finalized, not thrown away.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from pipeline.core.errors import AnonswapError
from pipeline.io.report import BoxesWriter, ReportBuilder
from pipeline.io.outputs import RunOutputs
from pipeline.io.paths import check_outputs
from pipeline.run.build import Stages, build_stages, finish_identity, report_settings
from pipeline.run.config import RunConfig, check_detect_size, engine_choice, input_files, resolve_mode
from pipeline.core.stages import StagePipeline
from pipeline.live.sinks import check_live_output, is_publish_url, open_sink, segment_path
from pipeline.live.source import LiveSource, StopEvent


@dataclass
class LiveOptions:
    segment_seconds: float | None = None
    max_latency_ms: float = 1000.0
    reconnect_timeout_s: float = 60.0
    transport: str = "tcp"
    buffer_frames: int = 2   # capture buffer: the newest frames wait here, older ones are dropped
    queue_size: int = 2      # between stages

    def __post_init__(self) -> None:
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            raise ValueError(f"--segment-seconds must be > 0, got {self.segment_seconds:g}")
        if self.max_latency_ms <= 0:
            raise ValueError(f"--max-latency-ms must be > 0, got {self.max_latency_ms:g}")
        if self.reconnect_timeout_s < 0:
            raise ValueError(f"--reconnect-timeout must be >= 0, got {self.reconnect_timeout_s:g}")


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


def anonymize_live(
    url: str,
    output: str,
    config: RunConfig,
    opts: LiveOptions = LiveOptions(),
    *,
    report_path: str | None = None,
    boxes_path: str | None = None,
    stop: StopEvent | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> dict:
    started = time.perf_counter()
    mode, note = resolve_mode(config)
    engine_choice(config)  # a device or backend that is not there fails before connecting
    check_live_output(output, opts.segment_seconds)
    out_abs = "" if is_publish_url(output) else os.path.abspath(output)
    video_file = None if is_publish_url(output) else segment_path(output, 0) if opts.segment_seconds else output
    check_outputs(input_files(config), {"-o": video_file, "--report": report_path, "--boxes": boxes_path,
                                        "--person-registry": config.person_registry})
    stop = stop or StopEvent()
    source = LiveSource(url, transport=opts.transport, reconnect_timeout_s=opts.reconnect_timeout_s,
                        buffer_frames=opts.buffer_frames, stop=stop).open()
    live = {"url": url, "dropped_too_old": 0, "stopped_by": None}
    latency = LatencyStats()
    try:
        check_detect_size(config.detect_size, source.info.height, source.info.width)
        if note:
            log(note)
        st = build_stages(mode, config)
        report = ReportBuilder(url, output if is_publish_url(output) else out_abs, mode, source.info, requested_mode=config.mode)
        report.settings = {**report_settings(config, st, source.info, mode, batch_size=1), "live": asdict(opts)}
        with RunOutputs(report_path) as outs:
            sink = outs.video = open_sink(output, source.info, segment_seconds=opts.segment_seconds, crf=config.crf, preset=config.preset,
                                          inputs=tuple(input_files(config)), written=(report_path, boxes_path, config.person_registry))
            boxes = outs.boxes = BoxesWriter(boxes_path) if boxes_path else None
            _run_live(source, st, sink, boxes, report, config, opts, latency, live, progress)
            if source.error is not None:
                raise source.error
            if sink.frames_written == 0:
                raise AnonswapError(f"no frame was anonymized before the run ended ({live['stopped_by']}); nothing written")
            outs.finish()
            finish_identity(st.identity, report, config)
            report.finish(source, sink, time.perf_counter() - started)
            result = report.to_dict()
            s = source.stats
            too_old = live.pop("dropped_too_old")
            result["live"] = {
                **live,
                "latency_ms": latency.to_dict(),
                "max_latency_ms": opts.max_latency_ms,
                "frames_captured": s.frames_captured,
                "frames_out": sink.frames_written,
                "dropped": {"buffer_full": source.dropped, "too_old": too_old, "total": source.dropped + too_old},
                "reconnects": s.reconnects,
                "gaps": [g.to_dict() for g in s.gaps],
                "outputs": sink.outputs,
            }
            outs.commit(result)
    finally:
        source.close()
    return result


def _run_live(source, st: Stages, sink, boxes, report, config, opts, latency, live, progress):
    budget_s = opts.max_latency_ms / 1000

    def capture(_):
        return source.frames()

    def detect(frames):
        for frame in frames:
            if time.monotonic() - frame.captured > budget_s:
                live["dropped_too_old"] += 1  # cheapest place to drop: nothing was spent on it yet
                continue
            yield frame, st.detect([frame])[0]

    def anonymize(items):
        for tf in items:
            st.anonymizer.apply_batch([tf])
            yield tf

    bar = tqdm(total=config.max_frames, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    encode_s = 0.0
    try:
        with StagePipeline(st.chain(("capture", capture), detect, anonymize), maxsize=opts.queue_size) as pipe:
            for tf in pipe:
                t = time.perf_counter()
                sink.write(tf.frame)
                encode_s += time.perf_counter() - t
                latency.add((time.monotonic() - tf.frame.captured) * 1000)
                if boxes:
                    boxes.write(tf)
                report.add(tf)
                bar.update(1)
                if sink.frames_written % 10 == 0:
                    bar.set_postfix(p50_ms=latency.percentile(50), dropped=source.dropped + live["dropped_too_old"],
                                    reconnects=source.stats.reconnects, refresh=False)
                if config.max_frames and sink.frames_written >= config.max_frames:
                    live["stopped_by"] = "max_frames"
                    break
        # Threads joined, so the totals are final. Capture is left out: its thread waits on
        # the network inside the stage function, so its "busy" time would be the stream's pace.
        busy = {k: v for k, v in pipe.busy_ms().items() if k != "capture"}
        report.stage_ms = {**busy, "encode": round(encode_s * 1000, 1)}
    finally:
        bar.close()
    if live["stopped_by"] is None:
        live["stopped_by"] = source.stop.reason or source.ended_by or "stop"
