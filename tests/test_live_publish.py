"""Publishing the anonymized stream over RTSP (ANNOUNCE/RECORD), as to a relay like mediamtx:
the real CLI reads a loopback camera and publishes to a loopback recorder (both GStreamer,
tests/rtsp_server.py), and what the recorder received is read back with PyAV."""

from __future__ import annotations

import json
import subprocess

import av
import numpy as np
import pytest

from conftest import cli_argv
from rtsp_harness import RtspRecorder, RtspServer, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _publish(cam_url, out_url, *extra):
    return cli_argv(cam_url, "-o", out_url, "-q", *extra)


def _recorded(path):
    """(sizes, seconds, container duration) of the recorded file's frames, decoded with PyAV."""
    with av.open(str(path)) as c:
        frames = [(f.width, f.height, float(f.pts * f.time_base)) for f in c.decode(video=0)]
        duration = c.duration
    return {(w, h) for w, h, _ in frames}, np.array([t for *_, t in frames]), duration


def test_publish_to_rtsp_record(camera_file, tmp_path):
    rec_file, rep = tmp_path / "got.mkv", tmp_path / "live.json"
    with RtspServer(camera_file, loop=True) as cam, RtspRecorder(rec_file) as rec:
        res = subprocess.run(_publish(cam.url, rec.url, "--max-frames", 75, "--report", rep),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        rec.wait_recorded()  # the publisher's TEARDOWN finished the file, not the recorder's stop
        sizes, times, duration = _recorded(rec_file)
    lv = json.loads(rep.read_text())["live"]
    assert lv["frames_out"] == 75 and lv["stopped_by"] == "max_frames"
    assert len(times) >= 60 and sizes == {(320, 240)}
    assert np.all(np.diff(times) > 0)
    assert 0.5 * 74 / 25 < times[-1] - times[0] < 2 * 74 / 25  # about 3 s of stream, in stream time
    assert duration is not None  # finalized: Matroska's duration is written at EOS
