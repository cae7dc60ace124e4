"""A loopback RTSP camera for tests and benchmarks, from the project's python.

The server (tests/rtsp_server.py) needs GStreamer's Python bindings, which only Debian's
/usr/bin/python3 has, so it runs as a child process; this module starts, crashes and
restarts it and makes sure no child outlives the caller.

    with RtspServer("clip.mp4", loop=True) as cam:
        container = av.open(cam.url, options={"rtsp_transport": "tcp", "timeout": "5000000"})

The other way round, a relay that accepts a published stream (ANNOUNCE/RECORD) and writes
what it receives to a Matroska file:

    with RtspRecorder(tmp / "got.mkv") as rec:
        ...publish to rec.url...
        rec.wait_recorded()  # the publisher has gone and the file is finished
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
            "gstreamer1.0-plugins-ugly gstreamer1.0-libav")

_CHECK = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstPbutils", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstPbutils, GstRtspServer
Gst.init(None)
need = ["x264enc", "rtph264pay", "decodebin", "videoconvert", "appsrc", "appsink",
        "rtph264depay", "h264parse", "matroskamux", "filesink"]
missing = [e for e in need if Gst.ElementFactory.find(e) is None]
if not any(Gst.ElementFactory.find(e) for e in ("avdec_h264", "openh264dec")):
    missing.append("an H.264 decoder (avdec_h264)")
print(" ".join(missing))
"""


@functools.cache
def unavailable_reason() -> str | None:
    """None when the RTSP server can run here, else why not (for pytest.skip)."""
    hint = f"install: apt-get install {PACKAGES}"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"RTSP server needs {SYSTEM_PYTHON} with GStreamer; {hint}"
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"GStreamer check failed ({e}); {hint}"
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} lacks GStreamer RTSP server bindings ({last}); {hint}"
    if r.stdout.strip():
        return f"GStreamer elements missing: {r.stdout.strip()}; {hint}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_running: set[RtspServer] = set()
atexit.register(lambda: [s.stop() for s in list(_running)])


class RtspServer:
    """One RTSP camera serving `file` at rtsp://127.0.0.1:port/mount. Each client session
    starts the file from its beginning; `loop` makes the stream endless. The port is kept
    across restart(), as a camera that reboots keeps its address.

    With `record=PATH` instead of a file it accepts a published H.264 stream at the same URL
    and writes it to PATH (Matroska, whatever the extension); see RtspRecorder."""

    def __init__(self, file=None, port: int | None = None, mount: str = "/stream", loop: bool = False,
                 fps: float | None = None, *, record=None):
        if (file is None) == (record is None):
            raise ValueError("RtspServer needs exactly one of: a file to serve, record=PATH")
        if record is not None and (loop or fps):
            raise ValueError("loop and fps are for serving a file, not for record=")
        self.file = None if file is None else str(file)
        self.record = None if record is None else str(record)
        self.port, self.mount, self.loop, self.fps = port or free_port(), mount, loop, fps
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None  # launch to READY, of the last start

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> RtspServer:
        if self.running:
            return self
        what = ["--record", self.record] if self.record is not None else ["--file", self.file]
        cmd = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--mount", self.mount, *what, "--exit-on-stdin-eof"]
        cmd += ["--loop"] if self.loop else []
        cmd += ["--fps", str(self.fps)] if self.fps else []
        # stderr to a file: GStreamer warnings must never fill a pipe and stall the server
        self._stderr = tempfile.TemporaryFile()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        _running.add(self)
        line = b""
        while not line.endswith(b"\n"):
            left = t0 + timeout - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self._fail(f"no READY within {timeout:g}s")
            chunk = os.read(self.proc.stdout.fileno(), 256)
            if not chunk:
                self._fail(f"exited with {self.proc.wait()}")
            line += chunk
        if line.split() != [b"READY", str(self.port).encode()]:
            self._fail(f"said {line!r}")
        self.startup_s = time.monotonic() - t0
        return self

    def stderr(self) -> str:
        """What the server has written to stderr so far (this start's)."""
        # pread: the child writes through the same open file, so its offset must not move
        fd, size = self._stderr.fileno(), os.fstat(self._stderr.fileno()).st_size
        return os.pread(fd, size, 0).decode(errors="replace")

    def _fail(self, what: str):
        self.kill()
        err = self.stderr().strip()
        raise RuntimeError(f"RTSP server on port {self.port} {what}: {err[-2000:] or '(no stderr)'}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM; a recorder first finishes an open recording (at most 3 s)."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A crash: no goodbye to the clients, sockets torn down by the kernel."""
        self._end(signal.SIGKILL, timeout=5.0)

    def _end(self, sig, timeout: float) -> None:
        proc, self.proc = self.proc, None
        _running.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()

    def restart(self, timeout: float = 20.0) -> RtspServer:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RtspRecorder(RtspServer):
    """A relay on loopback that a publisher pushes to (RTSP ANNOUNCE/RECORD, TCP or UDP), as
    mediamtx would be: the H.264 it receives is written unchanged to `path` as Matroska. The
    file is finished when the publisher sends TEARDOWN or its connection drops (even if it was
    killed), and on stop(); after kill() it is unfinished but reads back up to its last frames.
    One publisher at a time; the next one starts `path` over."""

    def __init__(self, path, port: int | None = None, mount: str = "/publish"):
        super().__init__(port=port, mount=mount, record=path)

    @property
    def path(self) -> Path:
        return Path(self.record)

    def recorded(self) -> int:
        """How many publish sessions have ended, their file finished, since the last start."""
        return self.stderr().count("RECORDED ") if self.running else 0

    def wait_recorded(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until the n-th publish session has ended and its file is finished."""
        deadline = time.monotonic() + timeout
        while self.recorded() < n:
            if not self.running:
                self._fail("exited before the recording was finished")
            if time.monotonic() > deadline:
                raise TimeoutError(f"recording {self.record} not finished within {timeout:g}s: {self.stderr()[-2000:]}")
            time.sleep(0.05)
