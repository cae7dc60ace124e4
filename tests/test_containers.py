"""Real-world containers in: WebM, Matroska whose streams start after 0, our own MKV output,
cut files, subtitles; and what the output keeps of the input's timing.

Every file is made here with PyAV (scikit-image's astronaut via pipeline/synthetic.py).
"""

from __future__ import annotations

import json
import os
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import read_video, run_cli
from pipeline.synthetic import make_video

FPS = 30


def _frames(n: int, tmp_path):
    src = make_video(str(tmp_path / "src.mp4"), frames=n, audio=False)
    with av.open(src.path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _tone(n_samples: int) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * 440 * np.arange(n_samples) / 48000)).astype(np.float32)


def make_webm(path, tmp_path, n: int = 30) -> str:
    """VP9 + Opus, as a browser records."""
    out = av.open(str(path), "w", format="webm")
    vs = out.add_stream("libvpx-vp9", rate=FPS, options={"deadline": "realtime", "cpu-used": "8", "crf": "35", "b": "0"})
    vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
    audio = out.add_stream("libopus", rate=48000, layout="mono")
    for i, img in enumerate(_frames(n, tmp_path)):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    tone = _tone(n * 48000 // FPS)
    for s in range(0, len(tone), 960):
        a = av.AudioFrame.from_ndarray(tone[None, s : s + 960], format="flt", layout="mono")
        a.sample_rate, a.pts = 48000, s
        out.mux(audio.encode(a))
    out.mux(audio.encode(None))
    out.close()
    return str(path)


def make_late_mkv(path, tmp_path, n: int = 60, start_s: int = 3) -> str:
    """Matroska with video and two AAC tracks that all start at `start_s` (a cut from a
    broadcast recording keeps its timestamps)."""
    out = av.open(str(path), "w", format="matroska")
    vs = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
    vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
    vs.time_base = vs.codec_context.time_base = Fraction(1, FPS)
    tracks = [out.add_stream("aac", rate=48000, layout="mono") for _ in range(2)]
    for i, img in enumerate(_frames(n, tmp_path)):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = start_s * FPS + i
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    tone = _tone(n * 48000 // FPS)
    for track in tracks:
        for s in range(0, len(tone), 1024):
            a = av.AudioFrame.from_ndarray(tone[None, s : s + 1024], format="fltp", layout="mono")
            a.sample_rate, a.pts = 48000, start_s * 48000 + s
            out.mux(track.encode(a))
        out.mux(track.encode(None))
    out.close()
    return str(path)


def _ok(res, out, frames: int) -> dict:
    assert res.returncode == 0, res.stderr
    got = read_video(out)
    assert len(got["frames"]) == frames
    return got


def test_a_vp9_opus_webm_is_accepted(tmp_path):
    src = make_webm(tmp_path / "in.webm", tmp_path)
    out = tmp_path / "o.mkv"
    got = _ok(run_cli(src, "-o", out, "--mode", "blur", "-q"), out, 30)
    assert got["audio_streams"] == 1 and got["audio_packets"] > 0


def test_matroska_whose_streams_start_late_and_our_own_mkv_output_are_accepted(tmp_path):
    src = make_late_mkv(tmp_path / "late.mkv", tmp_path)
    with av.open(src) as c:
        assert c.streams.video[0].start_time > 0 and len(c.streams.audio) == 2
    out = tmp_path / "o.mkv"
    got = _ok(run_cli(src, "-o", out, "--mode", "blur", "-q"), out, 60)
    assert got["audio_streams"] == 2
    again = tmp_path / "again.mkv"
    _ok(run_cli(out, "-o", again, "--mode", "blur", "-q"), again, 60)  # our own output, fed back in
    assert read_video(again)["times"] == got["times"], "timestamps survive a second pass"


def test_a_cut_matroska_is_still_refused(tmp_path):
    src = make_late_mkv(tmp_path / "late.mkv", tmp_path, n=90)
    data = open(src, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    res = run_cli(cut, "-o", tmp_path / "o.mkv", "--mode", "blur", "-q")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "truncated" in res.stderr, res.stderr
    assert not (tmp_path / "o.mkv").exists() and not [p for p in os.listdir(tmp_path) if ".partial" in p]


def test_mp4_to_mkv_keeps_the_inputs_start(synthetic, tmp_path):
    """AAC's priming packet sits before 0; the video must not be shifted to make room for it."""
    out = tmp_path / "o.mkv"
    res = run_cli(synthetic.path, "-o", out, "--mode", "blur", "-q")
    assert res.returncode == 0, res.stderr
    src, got = read_video(synthetic.path), read_video(out)
    assert got["times"][0] == src["times"][0] == 0
    assert [float(t) for t in got["times"]] == pytest.approx([float(t) for t in src["times"]], abs=1e-3)


def test_streams_that_are_not_carried_are_named_on_the_console(synthetic, tmp_path):
    ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (test extra) makes the subtitle track").get_ffmpeg_exe()
    import subprocess

    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nJohn Smith, 42 Main Street\n")
    src = tmp_path / "subs.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-i", synthetic.path, "-i", srt, "-map", "0", "-map", "1", "-c", "copy",
                    "-c:s", "mov_text", str(src)], check=True)
    res = run_cli(src, "-o", tmp_path / "o.mp4", "--mode", "blur", "--report", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert "note: not carried to the output: subtitle (mov_text)" in res.stderr
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert not c.streams.subtitles


@pytest.mark.parametrize("ext", ["mov", "mp4"])
def test_a_camera_timecode_track_is_dropped_with_a_note_and_the_video_anonymized(synthetic, tmp_path, ext):
    """A `tmcd` data track (most camera footage) has no codec context in PyAV: the run and the
    audit name it in the note and go on (they crashed on it)."""
    ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (test extra) writes the timecode track").get_ffmpeg_exe()
    import subprocess

    src = tmp_path / f"camera.{ext}"
    subprocess.run([ffmpeg, "-v", "error", "-i", synthetic.path, "-c", "copy", "-timecode", "01:00:00:00", str(src)], check=True)
    with av.open(str(src)) as c:
        assert [s.type for s in c.streams] == ["video", "audio", "data"]
    out = tmp_path / "o.mp4"
    res = run_cli(src, "-o", out, "--mode", "blur", "--max-frames", 10)
    assert res.returncode == 0, res.stderr
    assert "note: not carried to the output: data (timecode 01:00:00:00)" in res.stderr
    assert len(read_video(out)["frames"]) == 10
    res = run_cli("audit", src, out, "-o", tmp_path / "a.json", "--max-frames", 10, "--every", 5, "-q")
    assert res.returncode == 0, res.stderr


def test_a_rerun_removes_its_own_stale_temp_files_only(synthetic, tmp_path):
    """Only names with our marker and this output's hash, only stale ones, never an input:
    a user's file that merely looks like a temp file (the old pattern) stays."""
    from pipeline.io.atomic import temp_parts

    out = tmp_path / "o.mp4"
    _, prefix, suffix = temp_parts(str(out))
    stale, fresh = tmp_path / f"{prefix}abcd1234{suffix}", tmp_path / f"{prefix}efgh5678{suffix}"
    _, other_prefix, other_suffix = temp_parts(str(tmp_path / "o.x.mp4"))
    other = tmp_path / f"{other_prefix}abcd1234{other_suffix}"  # another output's (o.x.mp4) temp file
    lookalike = tmp_path / ".o.abcd1234.partial.mp4"  # a user's file in the old temp pattern
    for p in (stale, fresh, other, lookalike):
        p.write_bytes(b"half a video")
    old = time.time() - 2 * 3600
    for p in (stale, other, lookalike):
        os.utime(p, (old, old))
    res = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--max-frames", 3)
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and fresh.exists() and other.exists() and lookalike.exists(), "only this output's, only stale ones"
    assert "removed 1 stale temp file" in res.stderr


def test_an_input_named_like_a_stale_temp_file_is_never_removed(synthetic, tmp_path):
    import shutil

    from pipeline.io.atomic import temp_parts

    out = tmp_path / "o.mp4"
    _, prefix, suffix = temp_parts(str(out))
    video = tmp_path / f"{prefix}abcd1234{suffix}"
    shutil.copy(synthetic.path, video)
    old = time.time() - 2 * 3600
    os.utime(video, (old, old))
    res = run_cli(video, "-o", out, "--mode", "blur", "--max-frames", 3)
    assert res.returncode == 0, res.stderr
    assert video.exists() and out.exists()


def test_a_long_output_name_is_written(synthetic, tmp_path):
    """A legal name of 250 bytes: the temp file next to it must still fit in 255."""
    out = tmp_path / ("é" * 123 + ".mp4")
    assert len(out.name.encode()) == 250
    res = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--max-frames", 3, "-q")
    assert res.returncode == 0, res.stderr
    assert out.exists()




def _ffmpeg():
    return pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (test extra) writes the camera files").get_ffmpeg_exe()


def test_pcm_and_alaw_audio_reach_an_mp4_with_their_language(synthetic, tmp_path):
    """PCM from an AVI declares a channel count, no layout: mp4's PCM box needs one, and the
    run failed at the trailer after all the work. A-law (security cameras) mp4 cannot hold at
    all: re-encoded to AAC with a note. Both keep the track's language (it became `und`)."""
    import subprocess

    ffmpeg = _ffmpeg()
    pcm, alaw = tmp_path / "cam.avi", tmp_path / "cam.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", synthetic.path, "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-ac", "2", str(pcm)], check=True)
    subprocess.run([ffmpeg, "-v", "error", "-i", synthetic.path, "-c:v", "copy", "-c:a", "pcm_alaw",
                    "-metadata:s:a:0", "language=fra", str(alaw)], check=True)
    for src, codec, note in ((pcm, "pcm_s16le", False), (alaw, "aac", True)):
        out = tmp_path / f"{src.stem}_{src.suffix[1:]}.mp4"
        res = run_cli(src, "-o", out, "--mode", "blur", "--report", tmp_path / "r.json")
        assert res.returncode == 0, res.stderr
        assert ("note: audio re-encoded to AAC: mp4 cannot hold pcm_alaw" in res.stderr) == note, res.stderr
        with av.open(str(src)) as c:
            samples_in = sum(f.samples for f in c.decode(audio=0))
        with av.open(str(out)) as c:
            a = c.streams.audio[0]
            assert a.codec_context.name == codec and a.language == ("fra" if src is alaw else "und")
            samples = sum(f.samples for f in c.decode(audio=0))
        assert abs(samples - samples_in) <= 1024, "the whole track, within one AAC frame"


def test_a_damaged_transport_stream_packet_is_counted(synthetic, tmp_path):
    """A picture lost in transport leaves no error, only a hole in the timestamps: counted
    (decode_errors said 0)."""
    import subprocess

    from pipeline.io.video_reader import VideoReader

    ts = tmp_path / "cam.ts"
    subprocess.run([_ffmpeg(), "-v", "error", "-i", synthetic.path, "-an", "-c", "copy", str(ts)], check=True)
    with av.open(str(ts)) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(video=0) if p.size][20]
    data = bytearray(ts.read_bytes())
    data[pos : pos + size] = bytes(size)
    ts.write_bytes(data)
    with VideoReader(str(ts)) as reader:
        n = sum(1 for _ in reader.frames())
    assert n < synthetic.frames and reader.decode_errors >= synthetic.frames - n


def test_the_main_video_stream_is_chosen_and_its_pixel_shape_and_colour_tags_kept(synthetic, tmp_path):
    """A camera file whose first video stream is a 160x90 preview and whose second (the
    default) is the recording, 480x360 of 4:3 pixels, BT.709, full range: the recording is
    read, as FFmpeg would choose, and said; the output keeps its SAR and colour tags (both
    were dropped: a 4:3 clip came out 16:9-ish wide, a full-range one washed out)."""
    import subprocess

    src = tmp_path / "camera.mkv"
    subprocess.run([_ffmpeg(), "-v", "error", "-i", synthetic.path, "-i", synthetic.path, "-map", "1:v", "-map", "0:v", "-map", "0:a",
                    "-filter:v:0", "scale=160:90", "-filter:v:1", "scale=480:360:out_color_matrix=bt709:out_range=full,setsar=4/3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-colorspace:v:1", "bt709", "-color_primaries:v:1", "bt709",
                    "-color_trc:v:1", "bt709", "-color_range:v:1", "pc", "-disposition:v:0", "0", "-disposition:v:1", "default",
                    "-c:a", "copy", str(src)], check=True)
    out = tmp_path / "o.mp4"
    res = run_cli(src, "-o", out, "--mode", "blur", "--max-frames", 5)
    assert res.returncode == 0, res.stderr
    assert "note: video stream #1 (h264 480x360) chosen of 2 video streams" in res.stderr, res.stderr
    tags = lambda cc: (cc.width, cc.height, cc.sample_aspect_ratio, cc.colorspace, cc.color_range)  # noqa: E731
    with av.open(str(src)) as c:
        want = tags(c.streams.video[1].codec_context)
        first_in = next(c.decode(video=1))
    with av.open(str(out)) as c:
        got = tags(c.streams.video[0].codec_context)
        first_out = next(c.decode(video=0))
    assert want == (480, 360, Fraction(4, 3), 1, 2) and got == want
    # The colours round-trip: decoded as a viewer does (tags honoured), the background matches.
    a, b = (f.reformat(format="rgb24", src_color_range=f.color_range).to_ndarray()[250:].astype(int) for f in (first_in, first_out))
    assert np.abs(a - b).mean() < 2.0


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on loopback serving `tmp_path`, with byte ranges (as nginx or S3
    serve files: an mp4's index may sit at its end)."""
    import functools
    import http.server
    import re
    import threading

    class Ranges(http.server.SimpleHTTPRequestHandler):
        def send_head(self):
            path = self.translate_path(self.path)
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if not os.path.isfile(path) or not m:
                return super().send_head()
            size = os.path.getsize(path)
            start, end = int(m[1]), int(m[2] or size - 1)
            f = open(path, "rb")
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            return f

        def copyfile(self, src, dst):
            try:
                super().copyfile(src, dst)
            except (BrokenPipeError, ConnectionResetError):
                pass  # FFmpeg closes a ranged read once it has what it needs

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Ranges, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_finite_http_file_is_read_as_a_file(synthetic, tmp_path, http_folder):
    """It was taken for a live stream: its end was a drop to reconnect to, and the clip
    repeated forever without its audio."""
    import shutil

    from pipeline.live import is_stream_url

    shutil.copy(synthetic.path, tmp_path / "clip.mp4")
    url = f"{http_folder}/clip.mp4"
    assert not is_stream_url(url) and is_stream_url("rtsp://127.0.0.1:9/cam")
    out = tmp_path / "o.mp4"
    res = run_cli(url, "-o", out, "--mode", "blur", "-q", "--report", tmp_path / "r.json", timeout=120)
    assert res.returncode == 0, res.stderr
    got = read_video(out)
    assert len(got["frames"]) == synthetic.frames and got["audio_packets"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["input"] == url
