"""One video end to end: decode → detect → track → anonymize → encode, streaming.

Nothing is written under the final names until the whole video is done: the video, the
boxes export and the report each go to a temp file and are renamed at the end, and any
error removes them.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm import tqdm

from pipeline.core.errors import InvalidInputError
from pipeline.core.stages import StagePipeline, batched
from pipeline.detect.retinaface import FaceDetector
from pipeline.io.outputs import RunOutputs
from pipeline.io.paths import check_outputs
from pipeline.io.report import BoxesWriter, ReportBuilder
from pipeline.io.video_reader import VideoReader, hw_decoder
from pipeline.io.video_writer import VideoWriter
from pipeline.run.build import ModelCache, Stages, build_stages, finish_identity, report_settings
from pipeline.run.config import RunConfig, check_detect_size, engine_choice, engine_notes, input_files, resolve_mode


def anonymize_video(
    input_path: str,
    output_path: str,
    config: RunConfig = RunConfig(),
    *,
    report_path: str | None = None,
    boxes_path: str | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    models: ModelCache | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> dict:
    """`models` keeps loaded weights for the next video; `on_frame(n)` hears the frames written so far."""
    started = time.perf_counter()
    mode, note = resolve_mode(config)
    engines = engine_choice(config)  # a device or backend that is not there fails before anything else
    reader = VideoReader(input_path, max_frames=config.max_frames, hwaccel=hw_decoder(engines.device) if config.hwdec else None).open()
    try:
        out = check_outputs([input_path, *input_files(config)], {"-o": output_path, "--report": report_path, "--boxes": boxes_path,
                            "--person-registry": config.person_registry}, video="-o")["-o"]
        check_detect_size(config.detect_size, reader.info.height, reader.info.width)
        if note:  # only once the input and outputs are known to be good: errors stay one line
            log(note)
        for line in engine_notes(config, engines):
            log(line)
        if reader.stream_note:
            log(reader.stream_note)
        if reader.dropped_streams:
            # Subtitles can name or quote the people whose faces are removed: never carried,
            # and said here rather than only in the report.
            log(f"note: not carried to the output: {', '.join(reader.dropped_streams)} (video and audio only)")
        if reader.hwaccel_fallback:
            log(f"note: {reader.hwaccel_fallback}")
        if mode != "swap" and config.swap.defense_noise:
            log(f"note: --defense-noise applies to swapped faces only; mode is {mode}, so it does nothing")
        st = build_stages(mode, config, detector, models)
        report = ReportBuilder(input_path, out, mode, reader.info, requested_mode=config.mode)
        report.settings = report_settings(config, st, reader.info, mode)
        report.settings["engines"].update(hwaccel=reader.hwaccel, hwaccel_fallback=reader.hwaccel_fallback)
        with RunOutputs(report_path) as outs:  # opened inside: an interrupt at any point leaves no temp file behind
            writer = outs.video = VideoWriter(
                out,
                reader.info,
                audio_streams=reader.audio_streams,
                metadata=reader.metadata,
                keep_metadata=config.keep_metadata,
                crf=config.crf,
                preset=config.preset,
            )
            notes = writer.notes
            for line in notes:
                log(line)
            boxes = outs.boxes = BoxesWriter(boxes_path) if boxes_path else None
            _run(reader, st, writer, boxes, report, config, progress, on_frame)
            if reader.truncated:
                raise InvalidInputError(
                    f"input is truncated or corrupt: only {writer.frames_written} frames could be read, "
                    f"less than the container declares: {input_path}"
                )
            outs.finish()
            for line in writer.notes[len(notes):]:  # the MPEG-TS shift, known now
                log(line)
            finish_identity(st.identity, report, config)
            report.finish(reader, writer, time.perf_counter() - started)
            result = report.to_dict()
            outs.commit(result)
    finally:
        reader.close()
    return result


def _run(reader, st: Stages, writer, boxes, report, config, progress, on_frame=None) -> None:
    def source(_):
        return reader.frames()

    def detect(frames):
        for batch in batched(frames, config.batch_size):
            yield from zip(batch, st.detect(batch))

    def anonymize(items):
        # Several frames at once: the swap generator runs on all their faces together.
        for batch in batched(items, config.batch_size):
            st.anonymizer.apply_batch(batch)
            yield from batch

    total = config.max_frames or reader.info.frames_hint or None
    if config.max_frames and reader.info.frames_hint:
        total = min(config.max_frames, reader.info.frames_hint)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    encode_s = 0.0
    try:
        with StagePipeline(st.chain(("decode", source), detect, anonymize), maxsize=config.queue_size) as pipe:
            for tf in pipe:
                t = time.perf_counter()
                writer.write(tf.frame)
                encode_s += time.perf_counter() - t
                if boxes:
                    boxes.write(tf)
                report.add(tf)
                bar.update(1)
                if on_frame is not None:
                    on_frame(writer.frames_written)
                if tf.frame.index % 10 == 0:
                    bar.set_postfix(faces=len(tf.faces), refresh=False)
            for packet in reader.trailing_audio:
                writer.write_audio(packet)
            report.stage_ms = {**pipe.busy_ms(), "encode": round(encode_s * 1000, 1)}
    finally:
        bar.close()
