"""Encode with PyAV into a temp file beside the target, renamed only when complete.

Same size (no padding: odd sizes switch to 4:4:4 chroma, which x264 accepts at any size),
same timestamps (the input's time base and every frame's PTS are kept, so VFR survives),
audio copied packet for packet (re-encoded to AAC, with a note, only where the container
cannot hold its codec: A-law from a security camera into .mp4), rotation kept, container metadata (GPS, device, creation
time) dropped unless asked to keep it.

Rotation: frames arrive as a viewer sees them (the reader applied the input's display
matrix, `pipeline.io.orientation`); each is turned back to the input's stored orientation
and the same display matrix is written, so the output is stored and displayed as the input.
"""

from __future__ import annotations

import os
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np

from engines.base import cpu_budget

from pipeline.core.errors import OutputError, reason
from pipeline.io.atomic import AtomicFile, writing
from pipeline.core.records import Frame, VideoInfo
from pipeline.io.orientation import to_stored

FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts"}
# Stream tags that say nothing about who or where: kept even when metadata is stripped.
_SAFE_STREAM_TAGS = ("language",)
# Matroska can hold a stream that starts before 0 (AAC's priming packet copied from an mp4
# sits at -21 ms); libavformat's default shifts every stream later instead, so mp4 → mkv
# moved the video by +21 ms. Kept as the input has it.
MUXER_OPTIONS = {"matroska": {"avoid_negative_ts": "disabled"}}
# x264's settings unless the run says otherwise (RunConfig and the command line take these).
DEFAULT_CRF = 20
DEFAULT_PRESET = "veryfast"
_TS_AUDIO = {"aac", "aac_latm", "mp2", "mp3", "ac3", "eac3", "dts", "truehd", "opus", "s302m"}
# FFmpeg's own default layout per channel count (`av_channel_layout_default`), which its CLI
# guesses for a stream that declares only a count (PCM in AVI): mp4/mov's PCM box needs one.
_DEFAULT_LAYOUT = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def encoder_threads() -> int:
    """x264 threads: 1 on small machines, where decode/detect/encode stages already fill
    the cores and x264's own frame threads only contend with the detector (measured +10% fps
    on 2 cores, benchmarks/results/throughput.md); 0 (x264's auto) on bigger ones."""
    return 1 if cpu_budget() <= 4 else 0


class VideoWriter:
    def __init__(
        self,
        output: str,
        info: VideoInfo,
        *,
        audio_streams: list = (),
        metadata: dict | None = None,
        keep_metadata: bool = False,
        codec: str = "libx264",
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        tune: str | None = None,
    ):
        self.format_name = fmt = FORMATS[os.path.splitext(output)[1].lower()]
        # MPEG-TS has no display matrix: a phone clip's picture is written upright instead
        # (as viewed), so the output still displays as the input did.
        self.upright = fmt == "mpegts" and bool(info.turns or info.mirror)
        if self.upright:
            sar = info.sample_aspect_ratio
            info = replace(info, width=info.display_width, height=info.display_height, rotation=0, mirror=False,
                           display_matrix=None, sample_aspect_ratio=1 / sar if sar and info.turns % 2 else sar)
        self.info = info
        self._ts_start: Fraction | None = None  # MPEG-TS: the earliest timestamp given to the muxer
        self.frames_written = 0
        self.audio_packets = 0
        self.container = None
        self._file = AtomicFile(output)  # removes its temp file itself if interrupted while made
        try:  # from here on, any exception (Ctrl-C and SIGTERM too) removes the temp file
            try:
                self.container = av.open(self._file.path, mode="w", format=fmt, options=MUXER_OPTIONS.get(fmt, {}))
            except (av.FFmpegError, OSError) as e:
                raise OutputError(f"cannot create output ({e}): {output}") from e
            self._setup(info, audio_streams, metadata or {}, keep_metadata, codec, crf, preset, tune)
        except BaseException:
            self.abort()
            raise

    def _setup(self, info, audio_streams, metadata, keep_metadata, codec, crf, preset, tune=None):
        odd = info.width % 2 or info.height % 2
        options = {}
        if codec in ("libx264", "libx265"):
            options = {"crf": str(crf), "preset": preset, "threads": str(encoder_threads())}
            if tune:
                options["tune"] = tune
        try:
            vs = self.container.add_stream(codec, rate=info.average_rate, options=options)
        except (av.FFmpegError, ValueError) as e:
            raise OutputError(f"video encoder {codec!r} is not available in this FFmpeg build ({e})") from e
        vs.width, vs.height = info.width, info.height  # stored size: frames are turned back in write()
        vs.pix_fmt = "yuv444p" if odd else "yuv420p"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = info.color
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        if info.display_matrix is not None:
            vs.set_display_matrix(list(info.display_matrix))  # the input's, exactly: mirror included
        elif info.rotation:
            vs.set_display_rotation(info.rotation)
        self.video_stream = vs
        self._audio_map = {}
        self._reencode: dict[int, object] = {}  # input stream index -> its AAC output stream
        self.reencoded: list[str] = []  # the codecs re-encoded to AAC, for the report and the note
        # MPEG-TS has no codec table for libavformat to query (its supported_codecs is empty),
        # so its audio codecs (ISO 13818-1 stream types FFmpeg maps) are listed here.
        fmt = self.format_name
        supported = _TS_AUDIO if fmt == "mpegts" else self.container.supported_codecs
        for src in audio_streams:
            ctx = src.codec_context
            name = ctx.name if ctx is not None else "unknown"
            layout = _DEFAULT_LAYOUT.get(ctx.channels, ctx.layout) if ctx is not None and ctx.layout.name.endswith(" channels") else None
            if name in supported:
                out = self.container.add_stream_from_template(src)
                if layout:
                    out.codec_context.layout = layout  # else movenc refuses PCM at the trailer, after all the work
            elif ctx is not None and ctx.sample_rate:
                # Checked up front (some muxers, MPEG-TS, would write an undecodable stream):
                # what the container cannot hold is re-encoded, never dropped or refused.
                out = self.container.add_stream("aac", rate=ctx.sample_rate, layout=layout or ctx.layout)
                out.time_base = Fraction(1, ctx.sample_rate)
                self._reencode[src.index] = out
                self.reencoded.append(name)
            else:
                raise OutputError(f"{fmt} output cannot hold the input's {name} audio, which cannot be decoded to re-encode it; use .mkv")
            if not keep_metadata:
                for k in list(out.metadata):
                    if k not in _SAFE_STREAM_TAGS:
                        del out.metadata[k]
            if src.language:
                out.metadata["language"] = src.language
            self._audio_map[src.index] = out
        if keep_metadata:
            self.container.metadata.update(metadata)
        if not keep_metadata:
            for k in list(vs.metadata):
                if k not in _SAFE_STREAM_TAGS:
                    del vs.metadata[k]
        # Open the encoder and write the header now, so a codec the container cannot hold
        # is a clear error before any frame is processed, not a failure at the first packet.
        try:
            self.container.start_encoding()
        except av.FFmpegError as e:
            audio = ", ".join(s.codec_context.name for s in audio_streams) or "none"
            raise OutputError(
                f"{self.container.format.name} output cannot hold these streams (video {codec}, audio {audio}): "
                f"{reason(e)}; try .mkv, which holds almost any codec"
            ) from e

    def write(self, frame: Frame) -> None:
        info = self.info
        if frame.image.shape[:2] != (info.display_height, info.display_width):
            # A frame in the wrong orientation would be encoded sideways (or refused deep in
            # libav): say so here, where the cause is clear.
            raise ValueError(
                f"VideoWriter expects frames as displayed, {info.display_width}x{info.display_height} "
                f"(stored {info.width}x{info.height}, display rotation {info.rotation}°); got "
                f"{frame.image.shape[1]}x{frame.image.shape[0]}"
            )
        for packet in frame.audio:
            self.write_audio(packet)
        image = to_stored(frame.image, info.turns, info.mirror)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        # back to YUV with the matrix and range the reader decoded with (and the stream is tagged with)
        primaries, trc, matrix, color_range = info.color
        vf = vf.reformat(format=self.video_stream.pix_fmt, dst_colorspace=matrix if matrix != 2 else None,
                         dst_color_range=color_range or None, dst_color_trc=trc, dst_color_primaries=primaries)
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        with writing(self._file.final_path):
            self._mux(self.video_stream.encode(vf))
        self.frames_written += 1

    def write_audio(self, packet) -> None:
        out = self._audio_map.get(packet.stream.index)
        if out is None:
            return
        if packet.dts is None:
            return  # a packet without timing cannot be interleaved; the muxer would refuse it
        if packet.stream.index in self._reencode:
            with writing(self._file.final_path):
                for frame in packet.decode():
                    self._mux_audio(out.encode(frame))
            return
        packet.stream = out
        with writing(self._file.final_path):
            self._mux_audio([packet])

    def _mux_audio(self, packets) -> None:
        self.audio_packets += self._mux(packets)

    def _mux(self, packets) -> int:
        if self.format_name == "mpegts":
            for p in packets:
                if p.dts is not None:
                    t = p.dts * p.time_base
                    self._ts_start = t if self._ts_start is None else min(self._ts_start, t)
        self.container.mux(packets)
        return len(packets)

    def finish(self) -> None:
        """Flushes the encoder and finalizes the container, still under its temp name: what
        can fail (a full disk at the trailer) fails before any output is renamed."""
        try:
            with writing(self._file.final_path):
                self._mux(self.video_stream.encode(None))
                for out in self._reencode.values():
                    self._mux_audio(out.encode(None))
                self.container.close()
            self.container = None
        except BaseException:
            self.abort()
            raise

    @property
    def notes(self) -> list[str]:
        """What the output could not keep as the input had it, one line each, for the console;
        the MPEG-TS shift only once `finish` has run."""
        notes = []
        if self.reencoded:
            names = ", ".join(self.reencoded)
            notes.append(f"note: audio re-encoded to AAC: {self.format_name} cannot hold {names} as it is (.mkv can)")
        if self.upright:
            notes.append("note: MPEG-TS has no display matrix: the picture is written upright, as viewed (.mp4/.mov/.mkv keep the matrix)")
        if self.ts_shift_s and self.container is None:
            notes.append(f"note: MPEG-TS holds no timestamp before 0: every stream starts {self.ts_shift_s * 1000:.0f} ms later "
                         f"than in the input, in sync (.mp4/.mov/.mkv keep the timestamps)")
        return notes

    @property
    def ts_shift_s(self) -> float:
        """How much later MPEG-TS starts every stream: the muxer moves the earliest decode
        time (B-frames' reordering delay, AAC's priming packet) to 0."""
        return float(-self._ts_start) if self._ts_start is not None and self._ts_start < 0 else 0.0

    @property
    def final_path(self) -> str:
        return self._file.final_path

    def commit(self) -> str:
        return self._file.commit()

    def close(self) -> str:
        """`finish` then `commit`: for a file that lands on its own (a live segment)."""
        self.finish()
        return self.commit()

    def abort(self) -> None:
        try:
            if self.container is not None:
                self.container.close()
        except Exception:
            pass
        self._file.discard()
