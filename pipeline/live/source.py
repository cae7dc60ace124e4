"""A network stream as frames: capture thread, newest-first buffer, reconnect with backoff.

Capture runs on its own thread and never waits for the pipeline: frames go into a small
buffer that drops its *oldest* frame when full, so a slow pipeline sees fresh frames and
latency stays bounded instead of growing with the backlog (the drop happens before any
expensive stage, and a dropped frame is never output, so nothing skips anonymization).

Frames are turned upright by the stream's display matrix, as in the file reader
(`pipeline.io.orientation`): the pipeline must see faces as a viewer would.

Timestamps are the capture clock (time.monotonic, 1/90000 s units from the first frame),
not the source's PTS: a camera's PTS restart at every reconnect, while the capture clock
keeps the output monotonic and shows a source outage as what it was, a gap in time.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av

from pipeline.core.errors import InvalidInputError, reason
from pipeline.core.records import Frame, VideoInfo
from pipeline.io.orientation import read_orientation, to_display
from pipeline.io.video_reader import frame_color, rgb24

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
# Frames captured in a burst (after a stall: a loaded machine, a network hiccup) still get
# timestamps at least 1 ms apart: Matroska and FLV store milliseconds, and two frames one tick
# apart would land on the same time there (seen: an RTSP recording into .mkv under load).
MIN_STEP = round(Fraction(1, 1000) / TIME_BASE)
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp", "http", "https")
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 2.0
IO_TIMEOUT_S = 5.0  # a read that stalls this long counts as a lost source


class StopEvent(threading.Event):
    """Set to end a live run gracefully; `reason` says who asked (e.g. "SIGTERM")."""

    reason: str | None = None

    def request(self, who: str) -> None:
        self.reason = self.reason or who
        self.set()


def is_stream_url(path: str) -> bool:
    """A live source. An http(s) URL is one only when it does not serve a finite file: a
    file's end is not a dropped stream to reconnect to (the clip looped forever, without its
    audio), and the live flags (`nobuffer`) broke a file with a single keyframe."""
    scheme, sep, _ = str(path).partition("://")
    if not sep or scheme.lower() not in LIVE_SCHEMES:
        return False
    return not (scheme.lower() in ("http", "https") and is_finite_url(str(path)))


def is_finite_url(url: str, timeout_s: float = IO_TIMEOUT_S) -> bool:
    """True when the URL serves a file with a known duration (mp4, mkv, an HLS playlist with
    its end): it is read as a file is. A live feed (MJPEG, TS or FLV over HTTP, live HLS)
    declares none; a URL that cannot be opened is left to the live path, which retries it."""
    us = str(int(timeout_s * 1e6))
    try:
        with av.open(url, options={"rw_timeout": us}, timeout=(timeout_s, timeout_s)) as c:
            return c.duration is not None and c.duration > 0
    except (av.FFmpegError, OSError):
        return False


def open_options(url: str, transport: str = "tcp", timeout_s: float = IO_TIMEOUT_S) -> dict:
    """FFmpeg options so that a dead source errors out instead of blocking a read forever."""
    us = str(int(timeout_s * 1e6))
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("rtsp"):
        return {"rtsp_transport": transport, "timeout": us, "fflags": "nobuffer", "flags": "low_delay"}
    if scheme.startswith("rtmp"):
        return {"rw_timeout": us, "fflags": "nobuffer"}
    return {"timeout": us, "rw_timeout": us, "fflags": "nobuffer"}


@dataclass
class Gap:
    start_s: float  # seconds since the run started
    end_s: float | None = None
    reason: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.end_s is None else round(self.end_s - self.start_s, 3)

    def to_dict(self) -> dict:
        return {"start_s": round(self.start_s, 3), "end_s": None if self.end_s is None else round(self.end_s, 3),
                "seconds": self.seconds, "reason": self.reason}


@dataclass
class SourceStats:
    frames_captured: int = 0
    dropped_buffer_full: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    gaps: list[Gap] = field(default_factory=list)


class LatestBuffer:
    """A bounded FIFO that drops its oldest item when full, and counts the drops."""

    def __init__(self, size: int):
        self._items: collections.deque = collections.deque()
        self._size = size
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and drained: nothing more will come."""
        with self._cond:
            return self._closed and not self._items

    def get(self, timeout: float | None = None):
        """The oldest item kept; None once closed and empty (or on timeout)."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._items.popleft() if self._items else None


class LiveSource:
    """`open()` connects (retrying within `reconnect_timeout_s`); then `frames()` until stopped.

    `reconnect_timeout_s` bounds how long the source may be gone, at start and after a drop
    (0: forever). The source ending normally (EOF) is treated as a drop too: a camera stream
    has no end, so EOF means the server went away or restarted.
    """

    def __init__(self, url: str, *, transport: str = "tcp", reconnect_timeout_s: float = 60.0,
                 buffer_frames: int = 2, stop: StopEvent | None = None, io_timeout_s: float = IO_TIMEOUT_S):
        self.url = url
        self.transport = transport
        self.reconnect_timeout_s = reconnect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.stop = stop or StopEvent()
        self.stats = SourceStats()
        self.buffer = LatestBuffer(buffer_frames)
        self.info: VideoInfo | None = None
        self.error: BaseException | None = None
        self.ended_by: str | None = None  # "stop" | "source_lost"
        self._container = None
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._last_pts = -MIN_STEP  # the first frame is at 0
        self._index = 0
        self._started = time.monotonic()

    # -- the VideoReader-like surface the report reads ---------------------------------------
    @property
    def frames_read(self) -> int:
        return self.stats.frames_captured

    decode_errors = property(lambda self: self.stats.decode_errors)
    timestamp_fixes = 0
    rotation = property(lambda self: self.info.rotation if self.info is not None else 0)
    other_streams = 0
    truncated = False
    trailing_audio = ()  # a live run carries no audio
    hwaccel = hwaccel_fallback = None  # decoded in software
    notes = ()

    def open(self) -> "LiveSource":
        first_error = self._connect_with_retry(
            time.monotonic() + self.reconnect_timeout_s if self.reconnect_timeout_s else None)
        if self._container is None:
            raise InvalidInputError(f"cannot open stream ({first_error}): {self.url}")
        vs = self._container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        self._first_frame = self._next_decoded(vs)
        if self._first_frame is None:
            self.close()
            raise InvalidInputError(f"stream has a video track but no decodable frame: {self.url}")
        h, w = self._first_frame.height, self._first_frame.width
        rotation, mirror, matrix = read_orientation(self._first_frame, self.url)
        self.info = VideoInfo(path=self.url, width=w, height=h, time_base=TIME_BASE, average_rate=rate, frames_hint=0,
                              duration_s=None, codec=vs.codec_context.name, pix_fmt=vs.codec_context.pix_fmt,
                              audio_streams=0, format_name=self._container.format.name,
                              rotation=rotation, mirror=mirror, display_matrix=matrix, color=frame_color(self._first_frame),
                              sample_aspect_ratio=vs.codec_context.sample_aspect_ratio or None)
        self._thread = threading.Thread(target=self._capture, name="anonswap-capture", daemon=True)
        self._thread.start()
        return self

    def frames(self):
        """Frames as the pipeline can take them; ends on stop, or when the source is lost."""
        while True:
            item = self.buffer.get(timeout=0.2)
            if item is not None:
                yield item
            elif self.buffer.finished:  # the capture thread closes it when it ends, for any reason
                return

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.io_timeout_s + 2)
            if self._thread.is_alive():
                return  # still inside a read: closing the container under it would crash FFmpeg
        self._close_container()

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    # -- capture thread --------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            av_frame = self._first_frame
            self._first_frame = None
            gap, deadline = None, None
            while not self.stop.is_set():
                if av_frame is not None:
                    if gap is not None:  # the outage lasts from the last frame to the next one
                        gap.end_s, gap = time.monotonic() - self._started, None
                    self._emit(av_frame)
                    av_frame = self._next_decoded(self._container.streams.video[0])
                    continue
                # The source is gone (error, stall past the I/O timeout, or EOF): reconnect.
                # A server that accepts the connection but sends no frame does not reset the
                # deadline: it counts from the last frame, not from the last connection.
                if gap is None:
                    last = self._last_frame_at or time.monotonic()
                    gap = Gap(last - self._started, reason=self._last_error or "end of stream")
                    self.stats.gaps.append(gap)
                    deadline = last + self.reconnect_timeout_s if self.reconnect_timeout_s else None
                    log.warning("stream lost (%s); reconnecting", gap.reason)
                self._close_container()
                self._pending = []
                self._connect_with_retry(deadline)
                if self._container is None:
                    gap.end_s = time.monotonic() - self._started
                    if not self.stop.is_set():
                        self.ended_by = "source_lost"
                    break
                self.stats.reconnects += 1
                av_frame = self._next_decoded(self._container.streams.video[0])
            if gap is not None and gap.end_s is None:
                gap.end_s = time.monotonic() - self._started
            if self.ended_by is None:
                self.ended_by = "stop"
        except BaseException as e:  # handed to the pipeline through `error`
            self.error = e
        finally:
            self.buffer.close()

    def _emit(self, av_frame) -> None:
        now = time.monotonic()
        self._last_frame_at = now
        if self._t0 is None:
            self._t0 = now
        pts = max(round((now - self._t0) / TIME_BASE), self._last_pts + MIN_STEP)
        self._last_pts = pts
        size = {}
        if (av_frame.height, av_frame.width) != (self.info.height, self.info.width):
            size = {"width": self.info.width, "height": self.info.height}  # the encoder's size is fixed
        # The first frame's orientation holds for the run, as its size does (the encoder's is fixed).
        image = to_display(rgb24(av_frame, size), self.info.turns, self.info.mirror)
        self.stats.frames_captured += 1
        self.buffer.put(Frame(self._index, pts, TIME_BASE, image, data={"captured": now}))
        self._index += 1

    _last_error: str | None = None
    _last_frame_at: float | None = None
    _pending: list = []

    def _next_decoded(self, vs):
        """The next decoded frame, or None when the source failed or ended."""
        if self._pending:
            return self._pending.pop(0)
        while not self.stop.is_set():
            try:
                packet = next(self._demux)
            except StopIteration:
                self._last_error = "end of stream"
                return None
            except (av.FFmpegError, OSError) as e:
                self._last_error = reason(e)
                return None
            if not packet.size:
                continue
            try:
                frames = vs.decode(packet)
            except av.FFmpegError:
                self.stats.decode_errors += 1  # a damaged packet after a reconnect: skip it
                continue
            if frames:
                self._pending = list(frames[1:])
                return frames[0]
        return None

    def _connect_with_retry(self, deadline: float | None) -> str | None:
        """Opens the URL, retrying with backoff until `deadline` (None: forever) or a stop."""
        delay = BACKOFF_START_S
        first_error = None
        while not self.stop.is_set():
            try:
                self._container = av.open(self.url, mode="r", options=open_options(self.url, self.transport, self.io_timeout_s),
                                          timeout=(self.io_timeout_s, self.io_timeout_s), metadata_errors="ignore")
                if not self._container.streams.video:
                    self._close_container()
                    raise InvalidInputError(f"stream has no video track: {self.url}")
                vs = self._container.streams.video[0]
                vs.thread_type = "AUTO"
                self._demux = self._container.demux(vs)
                return None
            except InvalidInputError:
                raise
            except av.error.ProtocolNotFoundError:  # retrying cannot help: e.g. srt:// in PyAV's wheel (no libsrt)
                scheme = self.url.split("://", 1)[0]
                raise InvalidInputError(f"this FFmpeg build cannot open {scheme}:// streams (protocol not found): {self.url}") from None
            except (av.FFmpegError, OSError) as e:
                first_error = first_error or reason(e)
                self._last_error = reason(e)
            if deadline is not None and time.monotonic() + delay > deadline:
                return first_error
            self.stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        return first_error

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
