"""Where a live run's anonymized frames go: one file, a series of segment files, or a URL.

Files are written as in the offline path (temp name, renamed when complete), so a segment
appears under its final name only once it is a whole, playable file: a watcher picking up
`OUT_00003.mp4` never sees half of it. x264 runs with `tune=zerolatency` (no B-frames, no
lookahead), so a frame handed to the encoder leaves it at once and the measured latency is
the real one.
"""

from __future__ import annotations

import os
from dataclasses import replace

import av
import numpy as np

from pipeline.core.errors import OutputError, reason
from pipeline.core.records import Frame, VideoInfo
from pipeline.io.paths import check_output_path, check_outputs
from pipeline.io.video_writer import VideoWriter, encoder_threads

PUBLISH_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts",
                   "tcp": "mpegts", "rtp": "rtp_mpegts"}
LIVE_TUNE = "zerolatency"


def is_publish_url(output: str) -> bool:
    scheme, sep, _ = str(output).partition("://")
    return bool(sep) and scheme.lower() in PUBLISH_FORMATS


def check_live_output(output: str, segment_seconds: float | None) -> None:
    """Refuses an output we could not write, before connecting to the source."""
    if is_publish_url(output):
        if segment_seconds:
            raise OutputError("--segment-seconds writes files; it cannot be used with a publish URL")
        return
    if "://" in output:
        raise OutputError(f"unsupported publish URL (use {', '.join(sorted(PUBLISH_FORMATS))}): {output}")
    check_output_path(segment_path(output, 0) if segment_seconds else output)


def open_sink(output: str, info: VideoInfo, *, segment_seconds: float | None, crf: int, preset: str,
              inputs: tuple = (), written: tuple = ()):
    """`inputs`, `written`: the run's input files and its other outputs (report, boxes), which
    no segment opened later may replace (pipeline.io.paths.check_outputs)."""
    if is_publish_url(output):
        return PublishSink(output, info, crf=crf, preset=preset)
    if segment_seconds:
        return SegmentSink(output, info, segment_seconds, crf=crf, preset=preset, inputs=inputs, written=written)
    return FileSink(output, info, crf=crf, preset=preset)


def segment_path(output: str, n: int) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}_{n:05d}{ext}"


class LiveSink:
    """What the run loop and the report read of every sink; a live run carries no audio."""

    frames_written = 0
    audio_packets = 0
    reencoded = ()
    ts_shift_s = 0.0
    notes = ()


class FileSink(LiveSink):
    def __init__(self, output: str, info: VideoInfo, *, crf: int, preset: str):
        self.outputs: list[dict] = []
        self._writer = VideoWriter(output, info, crf=crf, preset=preset, tune=LIVE_TUNE)

    @property
    def notes(self) -> list[str]:
        return self._writer.notes

    def write(self, frame: Frame) -> None:
        self._writer.write(frame)
        self.frames_written += 1

    def finish(self) -> None:
        self._writer.finish()
        self.outputs.append({"path": self._writer.final_path, "frames": self.frames_written})

    def commit(self) -> None:
        self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


class SegmentSink(LiveSink):
    """Consecutive files of about `seconds` each (cut at the first frame past the length).

    Each file starts at PTS 0 and with a keyframe (a new encoder), so it plays on its own.
    """

    def __init__(self, output: str, info: VideoInfo, seconds: float, *, crf: int, preset: str,
                 inputs: tuple = (), written: tuple = ()):
        self.output, self.info, self.seconds = output, info, seconds
        self.inputs, self.written = inputs, written
        self.crf, self.preset = crf, preset
        self.outputs: list[dict] = []
        self._writer: VideoWriter | None = None
        self._base_pts = 0
        self._frames = 0
        self._start_s = 0.0

    def write(self, frame: Frame) -> None:
        if self._writer is not None and frame.time - self._start_s >= self.seconds:
            self._finish()
        if self._writer is None:
            path = segment_path(self.output, len(self.outputs))
            check_outputs(self.inputs, {"-o segment": path}, video="-o segment", written=self.written)
            self._writer = VideoWriter(path, self.info, crf=self.crf, preset=self.preset, tune=LIVE_TUNE)
            self._base_pts, self._start_s, self._frames = frame.pts, frame.time, 0
        self._writer.write(replace(frame, pts=frame.pts - self._base_pts))
        self._frames += 1
        self.frames_written += 1

    def _finish(self) -> None:
        path = self._writer.close()
        self.outputs.append({"path": path, "frames": self._frames, "start_s": round(self._start_s, 3)})
        self._writer = None

    def finish(self) -> None:
        """Closes the last segment (each segment lands when it is closed, as it must for a
        watcher of a live recording)."""
        if self._writer is not None:
            self._finish()

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        # Finished segments are whole files and stay; only the open one is dropped.
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


class PublishSink(LiveSink):
    """H.264 pushed to a server (RTSP ANNOUNCE/RECORD, RTMP/FLV, SRT or UDP MPEG-TS).

    Sent upright, as displayed (`info.display_width`×`display_height`), with no display
    matrix: none of these formats carries one, so a stored-orientation picture would reach
    viewers sideways.
    """

    def __init__(self, url: str, info: VideoInfo, *, crf: int, preset: str, timeout_s: float = 10.0):
        scheme = url.split("://", 1)[0].lower()
        fmt = PUBLISH_FORMATS[scheme]
        options = {"rtsp_transport": "tcp"} if fmt == "rtsp" else {}
        self.outputs = [{"path": url}]
        try:
            self.container = av.open(url, mode="w", format=fmt, options=options, timeout=(timeout_s, timeout_s))
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot publish to {url} ({reason(e)})") from e
        rate = info.average_rate or 25
        gop = str(max(1, round(float(rate))))  # a keyframe every second: a viewer joins fast
        self.stream = self.container.add_stream("libx264", rate=rate, options={
            "crf": str(crf), "preset": preset, "tune": LIVE_TUNE, "g": gop, "threads": str(encoder_threads())})
        dh, dw = info.display_height, info.display_width
        h, w = dh - dh % 2, dw - dw % 2  # 4:2:0, what players expect, needs even sizes
        self._even = (h, w) if (h, w) != (dh, dw) else None
        self.stream.width, self.stream.height = w, h
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        try:
            self.container.start_encoding()
        except av.FFmpegError as e:
            self.abort()
            raise OutputError(f"cannot publish to {url} ({reason(e)})") from e

    def write(self, frame: Frame) -> None:
        image = frame.image if self._even is None else frame.image[: self._even[0], : self._even[1]]
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vf.pts, vf.time_base = frame.pts, frame.time_base
        try:
            self.container.mux(self.stream.encode(vf))
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"publishing failed ({reason(e)}): {self.outputs[0]['path']}") from e
        self.frames_written += 1

    def finish(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
