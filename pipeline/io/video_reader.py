"""Streaming decode with PyAV: one frame at a time, exact PTS, corrupt packets skipped.

Frames come out as a viewer sees them: a clip with a display matrix (a portrait phone clip,
stored sideways) is turned upright here, so that every stage and the audit look at faces the
right way up (`pipeline.io.orientation`); `info.width`/`height` stay the stored size.

`open()` validates the input before any output exists: it must open, have a video stream
and yield at least one decodable frame. Audio packets are demuxed in the same pass and ride
along on the next video frame, so the muxer can copy them without reading the file twice
(which a live source could not do).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from fractions import Fraction
from typing import Iterator

import av

from pipeline.core.errors import InputNotFoundError, InvalidInputError, reason
from pipeline.core.records import Frame, VideoInfo
from pipeline.io.orientation import read_orientation, to_display

log = logging.getLogger(__name__)

# One PyAV exception base is enough: every libav error surfaces as av.FFmpegError.
_AV_ERRORS = (av.FFmpegError,)
NETWORK_TIMEOUT_S = 30.0  # a URL read as a file: a server silent this long is an error, not a hang
CLOSE_WAIT_S = 5.0  # how long close() waits for a demux/decode call in flight on another thread


class VideoReader:
    def __init__(self, path: str, *, max_frames: int | None = None, hwaccel: str | None = None):
        """`hwaccel`: an FFmpeg hardware device type ("cuda": NVDEC) to decode on, falling back
        to software decoding when that device cannot take the stream (`hw_decoder` decides)."""
        self.path = str(path)
        self.url = "://" in self.path  # a finite http(s) file: FFmpeg's to open, with a network timeout
        self.max_frames = max_frames
        self.hwaccel = hwaccel
        self.hwaccel_fallback: str | None = None  # why the hardware decoder asked for was not used
        self.decode_errors = 0  # damaged packets: flagged by the demuxer, rejected or swallowed by the decoder
        self.timestamp_fixes = 0  # frames whose PTS was missing or not increasing
        self.trailing_audio: list = []  # audio packets demuxed after the last video frame
        self.truncated = False
        self.frames_read = 0
        self.other_streams = 0  # subtitle/data/attachment streams, not carried to the output
        self.dropped_streams: list[str] = []
        self.stream_note: str | None = None  # which video stream was read, when there was a choice
        self._pending_audio: list = []
        self.container = None
        self.info: VideoInfo | None = None
        self.audio_streams: list = []
        self.metadata: dict[str, str] = {}
        self._frames_iter: Iterator[Frame] | None = None
        self._first: Frame | None = None
        # Held around every libav call on the container: the decode stage's thread demuxes and
        # decodes while the run may close the reader on another thread (an error, Ctrl-C).
        self._libav = threading.Lock()
        self.left_open = False  # close() found a call still in flight and did not free the container
        self._closing = False

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> "VideoReader":
        """Opens on the hardware decoder when one was asked for; if it cannot open the file or
        produce its first frame (no device, a codec NVDEC lacks, a driver error), the file is
        opened again in software and `hwaccel_fallback` says why: a decoder is never a reason
        to refuse a readable video."""
        if not self.url:
            if not os.path.exists(self.path):
                raise InputNotFoundError(f"input not found: {self.path}")
            if os.path.isdir(self.path):
                raise InvalidInputError(f"input is a directory, not a video file: {self.path}")
        if not self.hwaccel:
            return self._open(None)
        try:
            return self._open(self.hwaccel)
        except (InvalidInputError, OSError, *_AV_ERRORS) as e:
            self.close()
            why = reason(e.__cause__ or e)
        self._open(None)  # a file bad in software too fails here, with its own one-line error
        self.hwaccel_fallback = f"{self.hwaccel} decoding unavailable ({why}); decoded in software"
        log.warning("%s: %s", self.path, self.hwaccel_fallback)
        self.hwaccel = None
        return self

    def _open(self, hwaccel: str | None) -> "VideoReader":
        self.decode_errors = self.timestamp_fixes = self.frames_read = 0
        self.truncated = False
        try:
            hw = {}
            if hwaccel:
                from av.codec.hwaccel import HWAccel

                hw = {"hwaccel": HWAccel(hwaccel, allow_software_fallback=True)}
            network = {"options": {"rw_timeout": str(int(NETWORK_TIMEOUT_S * 1e6))}, "timeout": NETWORK_TIMEOUT_S} if self.url else {}
            self.container = av.open(self.path, mode="r", metadata_errors="ignore", **hw, **network)
        except PermissionError as e:
            raise InvalidInputError(f"input is not readable (permission denied): {self.path}") from e
        except _AV_ERRORS as e:
            raise InvalidInputError(f"input is not a readable video container ({reason(e)}): {self.path}") from e
        # Cover art is stored as a one-picture video stream: it is not the video.
        videos = [s for s in self.container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            self.close()
            raise InvalidInputError(f"input has no video stream (streams: {', '.join(kinds)}): {self.path}")
        vs = _choose_video(videos)
        self.stream_note = (  # a camera's thumbnail track or an editor's second angle: say which was taken
            f"note: video stream #{vs.index} ({_stream_kind(vs)} {vs.codec_context.width}x{vs.codec_context.height}) "
            f"chosen of {len(videos)} video streams" if len(videos) > 1 else None
        )
        vs.thread_type = "AUTO"  # frame + slice threads; decode is rarely the bottleneck then
        self.audio_streams = list(self.container.streams.audio)
        others = [s for s in self.container.streams if s is not vs and s.type != "audio"]
        self.other_streams = len(others)
        # "subtitle (mov_text)", "video (mjpeg)" for cover art, "data (timecode 01:00:00:00)", …: named in the run's note
        self.dropped_streams = [f"{s.type} ({_stream_kind(s)})" for s in others]
        self.metadata = dict(self.container.metadata)
        tb = vs.time_base or Fraction(1, 90000)
        duration = None
        if vs.duration is not None:
            duration = float(vs.duration * tb)
        elif self.container.duration is not None:
            duration = self.container.duration / av.time_base
        self.info = VideoInfo(
            path=self.path,
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            time_base=tb,
            average_rate=vs.average_rate or vs.guessed_rate,
            frames_hint=vs.frames or 0,
            duration_s=duration,
            codec=vs.codec_context.name,
            pix_fmt=vs.codec_context.pix_fmt,
            audio_streams=len(self.audio_streams),
            format_name=self.container.format.name,
            sample_aspect_ratio=vs.codec_context.sample_aspect_ratio or vs.sample_aspect_ratio or None,
        )
        self._video_stream = vs
        self._frames_iter = self._decode()
        # Decode the first frame now: a file that opens but cannot produce a picture is bad
        # input, and must be refused before an output file is created.
        try:
            self._first = next(self._frames_iter)
        except StopIteration:
            fmt = self.container.format.name
            self.close()
            if "mp4" in fmt.split(",") and _is_pipe(self.path):
                raise InvalidInputError(
                    f"input is a pipe, and this mp4/mov keeps its index after the media, which a pipe cannot seek back to: "
                    f"give the file itself, or write it with -movflags +faststart (or as .mkv or .ts): {self.path}") from None
            why = f"{self.decode_errors} corrupt packets" if self.decode_errors else "no packet of it could be read"
            raise InvalidInputError(f"input has a video stream but no decodable frame ({why}): {self.path}") from None
        return self

    @property
    def notes(self) -> list[str]:
        """What the run should say about how it read this input, one line each."""
        notes = [self.stream_note] if self.stream_note else []
        if self.dropped_streams:
            # Subtitles can name or quote the people whose faces are removed: never carried,
            # and said on the console rather than only in the report.
            notes.append(f"note: not carried to the output: {', '.join(self.dropped_streams)} (video and audio only)")
        if self.hwaccel_fallback:
            notes.append(f"note: {self.hwaccel_fallback}")
        return notes

    @property
    def rotation(self) -> int:
        """The input's display-matrix rotation (see `VideoInfo.rotation`), for the report."""
        return self.info.rotation if self.info is not None else 0

    def __enter__(self) -> "VideoReader":
        return self.open() if self.container is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Closes the container, but never under a demux/decode call still running on another
        thread (freeing FFmpeg's context there crashes the process): after `wait_s` it is left
        open, `left_open` is set, and that thread stops at its next call."""
        if not self._libav.acquire(timeout=wait_s):
            self.left_open = True
            log.warning("decoder still busy after %.0f s; leaving %s open", wait_s, self.path)
            self._closing = True
            return
        try:
            if self.container is not None:
                self.container.close()
                self.container = None
        finally:
            self._libav.release()

    # -- decoding --------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        """Yields frames in presentation order, at most `max_frames`."""
        if self._first is None:
            raise RuntimeError("VideoReader.open() must be called before frames()")
        count = 0
        first, self._first = self._first, None
        for frame in _chain(first, self._frames_iter):
            yield frame
            count += 1
            if self.max_frames is not None and count >= self.max_frames:
                return

    def _decode(self) -> Iterator[Frame]:
        tb = self.info.time_base
        step = _frame_step(self.info.average_rate, tb)
        last_pts: int | None = None
        # MPEG-TS has no index: a packet lost in transport vanishes without an error and leaves
        # only a hole in the timestamps (camera and broadcast TS run at a constant rate).
        gaps = 0 if self.info.format_name == "mpegts" and step > 1 else None
        for index, av_frame in enumerate(self._av_frames()):
            if index == 0:
                # The first picture decides the stored size (the codec context may not know
                # it yet) and the orientation, both fixed for the whole video.
                self.info.width, self.info.height = av_frame.width, av_frame.height
                self.info.rotation, self.info.mirror, self.info.display_matrix = read_orientation(av_frame, self.path)
                self.info.color = frame_color(av_frame)
            pts = av_frame.pts
            if gaps is not None and pts is not None and last_pts is not None and pts - last_pts > 1.5 * step:
                gaps += round((pts - last_pts) / step) - 1
            if pts is None or (last_pts is not None and pts <= last_pts):
                # The encoder needs strictly increasing PTS; repair rather than drop the frame.
                pts = (last_pts + step) if last_pts is not None else 0
                self.timestamp_fixes += 1
            last_pts = pts
            audio, self._pending_audio = self._pending_audio, []
            # Scaled to the first frame's size: a mid-stream resolution change must not
            # break the fixed-size encoder (a no-op when the size is unchanged).
            size = {} if index == 0 else {"width": self.info.width, "height": self.info.height}
            self.frames_read += 1
            image = to_display(rgb24(av_frame, size), self.info.turns, self.info.mirror)
            yield Frame(index, pts, tb, image, audio)
        self.trailing_audio, self._pending_audio = self._pending_audio, []
        self.decode_errors = max(self.decode_errors, gaps or 0)
        if last_pts is not None and self._ends_early(last_pts * tb + Fraction(step) * tb):
            self.truncated = True

    def _ends_early(self, decoded_end: Fraction) -> bool:
        """True when the container promised noticeably more video than could be decoded.

        A cut mp4/mkv demuxes to a clean EOF, so the declared duration is the only witness:
        the video stream's own (mp4 header, Matroska DURATION tag), tight; else the
        container's, loose, since audio may legitimately outlast the video. MPEG-TS declares
        none (its duration is estimated from the file size): a cut TS is a valid stream, as
        it is for a live recording.
        """
        vs = self._video_stream
        tb = self.info.time_base
        frame = Fraction(_frame_step(self.info.average_rate, tb)) * tb
        # mp4's stream duration counts from the stream's start; Matroska's DURATION tag (what
        # FFmpeg's muxer writes there) is the time the stream ends, its start already included.
        if vs.duration is not None:
            declared = (vs.duration + (vs.start_time or 0)) * tb
        else:
            declared = _parse_duration_tag(vs.metadata.get("DURATION"))
        if declared is not None:
            tolerance = max(Fraction(1, 4), 3 * frame, declared / 100)
        elif self.container.duration is not None and self.info.format_name != "mpegts":
            declared = Fraction(self.container.duration + (self.container.start_time or 0), av.time_base)
            tolerance = max(Fraction(1), declared / 50)
        else:
            return False
        return decoded_end < declared - tolerance

    def _av_frames(self):
        """Decoded PyAV frames; audio packets met on the way go to `_pending_audio`."""
        vs = self._video_stream
        audio_ids = {s.index for s in self.audio_streams}
        self._pending_audio = []
        sent = made = 0  # video packets given to the decoder, pictures it gave back
        demux = self.container.demux([vs, *self.audio_streams])
        while True:
            try:
                with self._libav:
                    if self.container is None or self._closing:
                        return  # closed under us: stop without touching the freed container
                    packet = next(demux)
            except StopIteration:
                break
            except _AV_ERRORS as e:
                # The demuxer itself gave up before the end: the container is truncated or
                # broken past repair. Stop here; the caller decides whether that is fatal.
                if self.frames_read:  # before the first picture, open() refuses the input in its own one line
                    log.warning("demux stopped early: %s", reason(e))
                self.truncated = True
                break
            if packet.stream.index in audio_ids:
                if packet.size:
                    self._pending_audio.append(packet)
                continue
            if not packet.size:
                continue  # demuxer's end-of-stream marker; the decoder is flushed below
            if packet.is_corrupt:
                # MPEG-TS flags a packet whose transport packets went missing; the decoder
                # may still return a picture (concealed) or none, without an error.
                self.decode_errors += 1
            sent += 1
            try:
                with self._libav:
                    if self.container is None or self._closing:
                        return
                    decoded = vs.decode(packet)
            except _AV_ERRORS:
                self.decode_errors += 1
                continue
            made += len(decoded)
            yield from decoded
        try:
            with self._libav:
                if self.container is None or self._closing:
                    return
                decoded = vs.decode(None)  # B-frame delay
        except _AV_ERRORS:
            self.decode_errors += 1
            return
        made += len(decoded)
        # A frame-threaded decoder drops a picture it cannot decode without raising: one
        # packet, one picture (for the codecs we read), so the shortfall is lost frames.
        self.decode_errors = max(self.decode_errors, sent - made)
        yield from decoded


def _choose_video(videos: list):
    """FFmpeg's own choice (its CLI's automatic mapping): the default-disposition stream, else
    the largest picture; ties to the first. A stream of one frame (a thumbnail, a poster JPEG
    that is not flagged as cover art) only when there is nothing else."""
    def score(s):
        one_frame = s.frames == 1
        default = bool(s.disposition & av.stream.Disposition.default)
        return (not one_frame, default, s.codec_context.width * s.codec_context.height, -s.index)

    return max(videos, key=score)


def _stream_kind(stream) -> str:
    """What a stream we do not carry holds, for the note: its codec, or for a data stream
    (a camera's timecode `tmcd`, chapters, telemetry), which has no codec context in PyAV,
    the timecode it starts at, else its handler's name."""
    if stream.codec_context is not None:
        return stream.codec_context.name
    tags = stream.metadata
    return f"timecode {tags['timecode']}" if "timecode" in tags else tags.get("handler_name") or "?"


def hw_decoder(device, available: tuple[str, ...] | None = None) -> str | None:
    """The FFmpeg hardware decoder for this run's device: NVDEC ("cuda") when the frames go to
    an NVIDIA GPU anyway and this FFmpeg build has it, else None (software decoding). The
    decoded picture still comes back to the host, where the encoder and the host stages
    need it; keeping it on the GPU (PyAV's `is_hw_owned`, NV12 → RGB on the device) is the
    next step, not taken yet. `available`: the build's device types (tests pass their own)."""
    if not getattr(device, "is_cuda", False):
        return None
    if available is None:
        from av.codec.hwaccel import hwdevices_available

        available = tuple(hwdevices_available())
    return "cuda" if "cuda" in available else None


# NVDEC hands back NV12 (P010 for 10-bit video): the software decoder's yuv420p(10le) samples,
# with the chroma planes interleaved. Repacked first (lossless), a hardware frame takes the
# software frame's RGB conversion; converted directly, swscale's NV12 path differs by a mean
# of ~0.9 grey levels (up to 42).
_PLANAR = {"nv12": "yuv420p", "p010le": "yuv420p10le", "p016le": "yuv420p16le"}


def rgb24(av_frame, size: dict | None = None):
    """The frame as (H, W, 3) uint8 RGB, the same pixels whichever decoder produced it, with
    the frame's own matrix and range (swscale's default is limited range: a full-range
    phone clip came out washed out)."""
    planar = _PLANAR.get(av_frame.format.name)
    if planar:
        av_frame = av_frame.reformat(format=planar)
    return av_frame.reformat(format="rgb24", src_color_range=av_frame.color_range, **(size or {})).to_ndarray()


def frame_color(av_frame) -> tuple[int, int, int, int]:
    """The picture's colour tags as `VideoInfo.color` keeps them."""
    return av_frame.color_primaries, av_frame.color_trc, av_frame.colorspace, av_frame.color_range


def _is_pipe(path: str) -> bool:
    """A FIFO or socket (`cat clip | run_pipeline.py /dev/stdin`): read once, no seeking."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _chain(first, rest):
    yield first
    yield from rest


def _frame_step(rate: Fraction | None, tb: Fraction) -> int:
    """PTS increment of one frame, used only to fill in a missing or repeated timestamp."""
    if rate and rate > 0:
        return max(1, round(1 / (rate * tb)))
    return 1


def _parse_duration_tag(text: str | None) -> Fraction | None:
    """Matroska's per-stream "HH:MM:SS.nnnnnnnnn" DURATION tag, exactly."""
    if not text:
        return None
    try:
        h, m, sec = text.split(":")
        whole, _, frac = sec.partition(".")
        return Fraction(int(h) * 3600 + int(m) * 60 + int(whole)) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    except ValueError:
        return None
