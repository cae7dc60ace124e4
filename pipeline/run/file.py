"""One video end to end: decode → detect → track → anonymize → encode, streaming, through
the run loop every kind of run shares (pipeline/run/loop.py).

Nothing is written under the final names until the whole video is done: the video, the
boxes export and the report each go to a temp file and are renamed at the end, and any
error removes them.
"""

from __future__ import annotations

import sys
from typing import Callable

from pipeline.core.errors import InvalidInputError
from pipeline.detect import Detector
from pipeline.io.paths import check_outputs
from pipeline.io.video_reader import VideoReader, hw_decoder
from pipeline.io.video_writer import VideoWriter
from pipeline.run.build import ModelCache
from pipeline.run.config import RunConfig, engine_choice, input_files, resolve_mode
from pipeline.run.loop import Feed, run


def anonymize_video(
    input_path: str,
    output_path: str,
    config: RunConfig = RunConfig(),
    *,
    report_path: str | None = None,
    boxes_path: str | None = None,
    detector: Detector | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    models: ModelCache | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> dict:
    """`models` keeps loaded weights for the next video; `on_frame(n)` hears the frames written so far."""
    mode, note = resolve_mode(config)
    engines = engine_choice(config)  # a device or backend that is not there fails before anything else
    reader = VideoReader(input_path, max_frames=config.max_frames, hwaccel=hw_decoder(engines.device) if config.hwdec else None).open()
    try:
        out = check_outputs([input_path, *input_files(config)], {"-o": output_path, "--report": report_path, "--boxes": boxes_path,
                            "--person-registry": config.person_registry}, video="-o")["-o"]

        def open_writer(info):
            return VideoWriter(out, info, audio_streams=reader.audio_streams, metadata=reader.metadata,
                               keep_metadata=config.keep_metadata, crf=config.crf, preset=config.preset)

        def check(frames_written: int) -> None:
            if reader.truncated:
                raise InvalidInputError(f"input is truncated or corrupt: only {frames_written} frames could be read, "
                                        f"less than the container declares: {input_path}")

        feed = Feed(reader, input_path, out, open_writer, batch_size=config.batch_size, queue_size=config.queue_size, check=check)
        result = run(feed, config, mode, engines, mode_note=note, report_path=report_path, boxes_path=boxes_path,
                     detector=detector, models=models, progress=progress, log=log, on_frame=on_frame)
    finally:
        reader.close()
    return result
