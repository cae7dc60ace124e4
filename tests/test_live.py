"""Live runs against a real RTSP server on loopback (GStreamer, tests/rtsp_server.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import av
import cv2
import numpy as np
import pytest

from conftest import cli_argv, no_leftovers, read_video, run_cli
from pipeline.run.loop import LatencyStats
from pipeline.live.sinks import segment_path
from pipeline.live.source import LatestBuffer, is_stream_url
from rtsp_harness import RtspServer, free_port, unavailable_reason

needs_rtsp = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _live(url, out, *extra):
    return cli_argv(url, "-o", out, "-q", *extra)


def _boxes(path):
    return [json.loads(line) for line in open(path)]


def _sharpness(image, box):
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    crop = image[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    if crop.shape[0] < 8 or crop.shape[1] < 8:
        return None
    return float(cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


TEXTURED = 10.0  # Laplacian variance of a source face below which blur has nothing to smooth


@needs_rtsp
def test_shared_clip_200_frames_anonymized(shared_clip, tmp_path):
    """The shared clip streamed live: 200 frames out, every covered face blurred compared with
    the same face in the source frame it came from. Faces with next to no texture in the source
    (the dark audience shot, Laplacian variance about 3) are left out of the comparison: blur
    cannot make them measurably smoother, and `--recall fast` covers many of them, so with
    them the median compared the dark frames' share of the sample, not the blur."""
    out, rep, boxes = tmp_path / "live.mp4", tmp_path / "live.json", tmp_path / "live.jsonl"
    with RtspServer(shared_clip, loop=True) as cam:
        res = subprocess.run(_live(cam.url, out, "--max-frames", 200, "--report", rep, "--boxes", boxes),
                             capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(rep.read_text())
    lv = r["live"]
    assert lv["frames_out"] == 200 and lv["stopped_by"] == "max_frames"
    assert lv["latency_ms"]["frames"] == 200 and 0 < lv["latency_ms"]["p50"] <= lv["latency_ms"]["p95"]
    got = read_video(out)
    src = read_video(shared_clip)
    assert len(got["frames"]) == 200 and got["size"] == src["size"]
    rows = _boxes(boxes)
    assert len(rows) == 200 and r["faces"]["anonymized"] > 100
    # Find each output frame's source frame (nearest thumbnail), then compare face sharpness.
    small = lambda im: cv2.resize(im, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)  # noqa: E731
    src_small = np.stack([small(f) for f in src["frames"]])
    before, after = [], []
    for frame, row in zip(got["frames"], rows):
        k = int(np.argmin(((src_small - small(frame)) ** 2).mean(axis=(1, 2, 3))))
        for face in row["faces"]:
            a, b = _sharpness(src["frames"][k], face["box"]), _sharpness(frame, face["box"])
            if a is not None and a >= TEXTURED and (face["box"][2] - face["box"][0]) >= 24:
                before.append(a)
                after.append(b)
    assert len(before) > 50
    assert np.median(after) < 0.25 * np.median(before), (np.median(after), np.median(before))


@needs_rtsp
def test_reconnect_keeps_output_valid_and_reports_the_gap(camera_file, tmp_path):
    """The camera crashes and comes back on the same address, at another resolution: the
    run reconnects, reports the gap, and the output stays one valid file at the first size."""
    from pipeline.synthetic import make_video

    other = tmp_path / "cam_480.mp4"
    make_video(str(other), width=480, height=360, frames=100, fps=25, audio=False, seed=3)
    out, rep, boxes = tmp_path / "live.mp4", tmp_path / "live.json", tmp_path / "live.jsonl"
    with RtspServer(camera_file, loop=True) as cam:
        proc = subprocess.Popen(_live(cam.url, out, "--max-frames", 120, "--report", rep, "--boxes", boxes),
                                stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: list(tmp_path.glob(".live.*.partial.mp4")), 60)  # frames are flowing
        time.sleep(1.0)
        cam.kill()
        time.sleep(2.0)
        with RtspServer(other, port=cam.port, loop=True):
            _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    lv = json.loads(rep.read_text())["live"]
    assert lv["reconnects"] >= 1 and lv["frames_out"] == 120
    gap = lv["gaps"][0]
    assert gap["seconds"] >= 1.5 and gap["end_s"] > gap["start_s"]
    got = read_video(out)
    assert len(got["frames"]) == 120 and got["size"] == (320, 240)
    times = np.array([float(t) for t in got["times"]])
    assert np.all(np.diff(times) > 0)
    assert np.diff(times).max() >= 1.5  # the outage is a jump in time, not a broken file
    rows = _boxes(boxes)
    assert sum(bool(r["faces"]) for r in rows) >= 0.9 * len(rows)  # faces kept being covered after it


@needs_rtsp
def test_sigterm_finalizes_segments(camera_file, tmp_path):
    """Segments of a CenterFace run: each whole, and the report names the detector, so the
    audit refuses CenterFace as its independent leak detector, as for a file run (the live
    report had no `detector` key and the audit took RetinaFace for the run's)."""
    from pipeline.audit.leak_detector import DependentDetectorError, check_independent, run_detectors_from_report

    out = tmp_path / "seg.mp4"
    rep = tmp_path / "seg.json"
    with RtspServer(camera_file, loop=True) as cam:
        proc = subprocess.Popen(_live(cam.url, out, "--segment-seconds", 1, "--report", rep, "--detector", "centerface"),
                                stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: (tmp_path / "seg_00002.mp4").exists(), 60)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lv = json.loads(rep.read_text())["live"]
    assert lv["stopped_by"] == "SIGTERM"
    segs = sorted(tmp_path.glob("seg_*.mp4"))
    assert [s.name for s in segs] == [f"seg_{i:05d}.mp4" for i in range(len(segs))] and len(segs) >= 3
    counts = [len(read_video(s)["frames"]) for s in segs]  # each segment plays on its own
    assert sum(counts) == lv["frames_out"] and all(c > 0 for c in counts)
    assert [o["frames"] for o in lv["outputs"]] == counts
    for s in segs[:-1]:
        t = read_video(s)["times"]
        # About a second each, from 0; CenterFace on two busy cores drops frames, so a
        # segment's last one may come a few frames before its second is up (0.76 s seen).
        assert float(t[0]) == 0 and 0.5 <= float(t[-1]) <= 1.5
    assert not no_leftovers(tmp_path)
    with pytest.raises(DependentDetectorError):
        check_independent("centerface", run_detectors_from_report(str(rep)), allow_dependent=False)
    # One settings function for every kind of run: the same keys as a file run's report.
    settings = json.loads(rep.read_text())["settings"]
    from pipeline import RunConfig, anonymize_video

    file_run = anonymize_video(str(camera_file), str(tmp_path / "file.mp4"), RunConfig(mode="blur", detector="centerface", max_frames=2),
                               progress=False, log=lambda m: None)["settings"]
    assert set(settings) == set(file_run) and set(settings["engines"]) == set(file_run["engines"])
    assert settings["detector"] == file_run["detector"] == "centerface" and settings["live"]["segment_seconds"] == 1
    assert file_run["live"] is None and settings["batch_size"] == 1


@needs_rtsp
def test_source_gone_for_good_exits_1_with_output_kept(camera_file, tmp_path):
    out, rep = tmp_path / "live.mp4", tmp_path / "live.json"
    cam = RtspServer(camera_file, loop=True).start()
    try:
        proc = subprocess.Popen(_live(cam.url, out, "--reconnect-timeout", 2, "--report", rep), stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: list(tmp_path.glob(".live.*.partial.mp4")), 60)
        time.sleep(1.0)
    finally:
        cam.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "stream lost" in err
    lv = json.loads(rep.read_text())["live"]
    assert lv["stopped_by"] == "source_lost" and lv["gaps"][-1]["seconds"] >= 1.5
    assert len(read_video(out)["frames"]) == lv["frames_out"] > 0


@needs_rtsp
def test_slow_pipeline_drops_frames_instead_of_lagging(camera_file, tmp_path):
    """A detector far too slow for 25 fps (8× upscaled input): frames are dropped before
    detection, latency stays bounded, and every captured frame is either output or dropped."""
    out, rep = tmp_path / "live.mp4", tmp_path / "live.json"
    with RtspServer(camera_file, loop=True) as cam:
        res = subprocess.run(_live(cam.url, out, "--max-frames", 15, "--detect-size", 2560, "--max-latency-ms", 200,
                                   "--report", rep), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lv = json.loads(rep.read_text())["live"]
    assert lv["dropped"]["total"] > 0 and lv["frames_out"] == 15
    in_flight = lv["frames_captured"] - lv["frames_out"] - lv["dropped"]["total"]
    assert 0 <= in_flight <= 8  # capture buffer + stage queues, no hidden backlog
    # Fixed bounds, from this test's settings. A frame that is output was at most 200 ms old
    # when its detection started (--max-latency-ms 200: older ones are dropped there); then it
    # spends one detection at 2560×1920 (the 320×240 camera upscaled 8×) and < 100 ms of
    # anonymize, encode and queue hops. The detection is CPU speed: 350–900 ms a frame on 2
    # cores, about twice that with another test worker on the cores, and the first, cold frame
    # more. So the typical frame (p50) gets 1500 ms for its detection, and the slowest (with
    # 15 frames p95 is the maximum: the cold first frame, 2.06 s seen under CI load on
    # 2026-12-07) twice that. Idle runs that day: p50 440–550 ms, max 0.8–1.1 s (the code
    # before the one run loop: 470–550 ms, 1.0–1.5 s). What the bounds still catch: latency
    # that grows with the backlog (no drop: the typical frame would be ~7 detections late) and
    # a kept frame held behind several more detections.
    assert lv["latency_ms"]["p50"] < 200 + 1500 + 100, lv["latency_ms"]
    assert lv["latency_ms"]["max"] < 200 + 2 * 1500 + 100, lv["latency_ms"]


def test_unreachable_stream_is_one_line_exit_2(tmp_path):
    out = tmp_path / "live.mp4"
    res = run_cli(f"rtsp://127.0.0.1:{free_port()}/nothing", "-o", out, "--reconnect-timeout", "1", timeout=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open stream"), res.stderr
    assert list(tmp_path.iterdir()) == []


@needs_rtsp
def test_publish_to_udp_mpegts(camera_file, tmp_path):
    """Publish the anonymized stream to a URL, read back by a real FFmpeg client."""
    port = free_port()
    got: list = []

    def receive():
        with av.open(f"udp://127.0.0.1:{port}?timeout=20000000", options={"fifo_size": "1000000"}, timeout=30) as c:
            for f in c.decode(video=0):
                got.append(f.to_ndarray(format="rgb24").shape)
                if len(got) >= 20:
                    return

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    time.sleep(0.5)
    with RtspServer(camera_file, loop=True) as cam:
        res = subprocess.run(_live(cam.url, f"udp://127.0.0.1:{port}?pkt_size=1316", "--max-frames", 75),
                             capture_output=True, text=True, timeout=120)
    t.join(timeout=30)
    assert res.returncode == 0, res.stderr
    assert len(got) >= 20 and got[0] == (240, 320, 3)


def test_latest_buffer_drops_oldest():
    b = LatestBuffer(2)
    for i in range(5):
        b.put(i)
    assert b.dropped == 3 and b.get(0) == 3 and b.get(0) == 4 and b.get(0.01) is None
    b.close()
    assert b.get() is None


def test_latency_percentiles_and_helpers():
    s = LatencyStats()
    for ms in range(1, 101):
        s.add(ms + 0.2)
    d = s.to_dict()
    assert abs(d["p50"] - 50) <= 1.5 and abs(d["p95"] - 95) <= 1.5 and d["max"] == 100.2 and d["frames"] == 100
    assert LatencyStats().to_dict()["p50"] is None
    assert is_stream_url("rtsp://cam/1") and is_stream_url("SRT://x:1") and not is_stream_url("clip.mp4")
    assert segment_path("/a/out.mp4", 3) == "/a/out_00003.mp4"


def _wait_for(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_protocol_this_ffmpeg_lacks_fails_at_once(tmp_path):
    """srt:// without libsrt (PyAV's wheel): one line, exit 2, no waiting for the reconnect timeout."""
    import av

    try:
        av.open(f"srt://127.0.0.1:{free_port()}?mode=listener", timeout=0.5)
        pytest.skip("this FFmpeg build has SRT")
    except av.error.ProtocolNotFoundError:
        pass
    except av.FFmpegError:
        pytest.skip("this FFmpeg build has SRT")
    t = time.monotonic()
    res = run_cli(f"srt://127.0.0.1:{free_port()}", "-o", tmp_path / "o.mp4", "--reconnect-timeout", "30", timeout=60)
    assert res.returncode == 2 and time.monotonic() - t < 25
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "protocol not found" in res.stderr
    assert list(tmp_path.iterdir()) == []
