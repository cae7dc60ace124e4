"""The loopback RTSP camera itself: real time, a clean end when it crashes, and back on the
same address after a restart. The stream tests and benchmarks rely on all three."""

import time
from fractions import Fraction

import av
import pytest

from pipeline.synthetic import make_video
from rtsp_harness import RtspServer, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}  # FFmpeg's rtsp `timeout`: socket I/O, in µs
FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtsp") / "clip.mp4"
    make_video(str(path), width=320, height=240, frames=75, fps=Fraction(FPS), audio=True)
    return path


def read_frames(url, n):
    """(frames, seconds from connecting to the n-th frame). A session starts at the file's first
    frame, so the n-th cannot come sooner than (n-1)/fps after connecting unless the server
    runs faster than the clock; FFmpeg's probing buffers the first second, so count from open."""
    t0 = time.monotonic()
    frames = []
    with av.open(url, options=OPTIONS) as c:
        for frame in c.decode(video=0):
            frames.append(frame)
            if len(frames) == n:
                break
    return frames, time.monotonic() - t0


def test_real_time_crash_and_restart(clip):
    with RtspServer(clip) as cam:
        frames, took = read_frames(cam.url, 40)
        assert len(frames) == 40
        assert {(f.width, f.height) for f in frames} == {(320, 240)}
        assert 39 / FPS * 0.8 < took < 15, took  # paced by the clock, not as fast as possible

        # a crash mid-stream: the client's read must end (EOF or error) soon, never hang
        with av.open(cam.url, options=OPTIONS) as container:
            frames = container.decode(video=0)
            next(frames)
            cam.kill()
            t0, got = time.monotonic(), 1
            try:
                for _ in frames:
                    got += 1
            except av.FFmpegError:
                pass
            assert time.monotonic() - t0 < 12  # a stalled server would take 2x the 5 s timeout
            assert got < 75, "the stream ran to the clip's end although the server died"

        cam.restart()  # same port at once, although the killed server's sockets linger
        frames, _ = read_frames(cam.url, 10)
        assert len(frames) == 10 and frames[0].width == 320


def test_loop_never_runs_out(clip):
    with RtspServer(clip, loop=True) as cam:
        frames, took = read_frames(cam.url, 100)  # the clip has 75
    assert len(frames) == 100
    pts = [f.pts for f in frames[1:]]  # the first carries no pts over RTSP
    assert all(b > a for a, b in zip(pts, pts[1:])), "time must keep running across the seam"
    assert took > 99 / FPS * 0.8, took
