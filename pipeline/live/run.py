"""A live stream end to end: capture → detect → track → anonymize → encode, latency-bounded.

The file run's loop (pipeline/run/loop.py), fed three ways that make it live:
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
from dataclasses import asdict, dataclass
from typing import Callable

from pipeline.core.errors import AnonswapError
from pipeline.io.paths import check_outputs
from pipeline.live.sinks import check_live_output, is_publish_url, open_sink, segment_path
from pipeline.live.source import LiveSource, StopEvent
from pipeline.run.config import RunConfig, engine_choice, input_files, resolve_mode
from pipeline.run.loop import Feed, run


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
    mode, note = resolve_mode(config)
    engines = engine_choice(config)  # a device or backend that is not there fails before connecting
    check_live_output(output, opts.segment_seconds)
    publish = is_publish_url(output)
    video_file = None if publish else segment_path(output, 0) if opts.segment_seconds else output
    check_outputs(input_files(config), {"-o": video_file, "--report": report_path, "--boxes": boxes_path,
                                        "--person-registry": config.person_registry})
    stop = stop or StopEvent()
    source = LiveSource(url, transport=opts.transport, reconnect_timeout_s=opts.reconnect_timeout_s,
                        buffer_frames=opts.buffer_frames, stop=stop).open()

    def open_live_sink(info):
        return open_sink(output, info, segment_seconds=opts.segment_seconds, crf=config.crf, preset=config.preset,
                         inputs=tuple(input_files(config)), written=(report_path, boxes_path, config.person_registry))

    def check(frames_written: int) -> None:
        if source.error is not None:
            raise source.error
        if frames_written == 0:
            raise AnonswapError(f"no frame was anonymized before the run ended ({source.stop.reason or source.ended_by or 'stop'}); "
                                f"nothing written")

    feed = Feed(source, url, output if publish else os.path.abspath(output), open_live_sink, batch_size=1,
                queue_size=opts.queue_size, stage="capture", max_age_s=opts.max_latency_ms / 1000, stop_after=config.max_frames,
                live=asdict(opts), check=check,
                postfix=lambda: {"dropped": source.dropped, "reconnects": source.stats.reconnects})
    try:
        result = run(feed, config, mode, engines, mode_note=note, report_path=report_path, boxes_path=boxes_path,
                     progress=progress, log=log)
    finally:
        source.close()
    return result
