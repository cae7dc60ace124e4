"""Container/codec facts the output must keep: size, timestamps, rotation, audio, metadata."""


import av
import numpy as np
import pytest

from conftest import read_video, run_cli
from pipeline.synthetic import make_video


def _run(src, out, *extra):
    res = run_cli(src, "-o", out, "--mode", "blur", "-q", *extra)
    assert res.returncode == 0, res.stderr
    return read_video(src), read_video(out)


def test_odd_size_is_kept_without_padding(tmp_path):
    v = make_video(str(tmp_path / "odd.mkv"), width=321, height=241, frames=12)
    src, dst = _run(v.path, tmp_path / "out.mp4")
    assert dst["size"] == src["size"] == (321, 241)
    assert len(dst["frames"]) == 12


def test_variable_frame_rate_timestamps_survive(tmp_path):
    v = make_video(str(tmp_path / "vfr.mkv"), frames=30, vfr=True)
    src, dst = _run(v.path, tmp_path / "out.mkv")
    gaps = {b - a for a, b in zip(src["times"], src["times"][1:])}
    assert len(gaps) > 1, "fixture should be VFR"
    assert dst["times"] == src["times"]


@pytest.mark.parametrize("ext", ["mov", "ts", "mkv"])
def test_containers_round_trip(tmp_path, ext):
    v = make_video(str(tmp_path / f"in.{ext}"), frames=15)
    src, dst = _run(v.path, tmp_path / f"out.{ext}")
    assert len(dst["frames"]) == len(src["frames"]) == 15
    if ext == "ts":
        # MPEG-TS cannot store a negative DTS, so when x264's B-frame delay reaches below
        # zero the muxer shifts every stream by the same constant (A/V sync unchanged).
        assert [t - dst["times"][0] for t in dst["times"]] == [t - src["times"][0] for t in src["times"]]
    else:
        assert dst["times"] == src["times"]
    assert dst["audio_streams"] == 1


def test_hevc_input_is_decoded(tmp_path):
    if "libx265" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no libx265 encoder to make an HEVC input")
    v = make_video(str(tmp_path / "hevc.mkv"), frames=10, codec="libx265", audio=False)
    src, dst = _run(v.path, tmp_path / "out.mp4")
    assert len(dst["frames"]) == 10 and dst["audio_streams"] == 0


def test_rotation_display_matrix_is_kept(tmp_path):
    v = make_video(str(tmp_path / "rot.mp4"), frames=8, rotation=90)
    src, dst = _run(v.path, tmp_path / "out.mp4")
    assert src["rotation"] == 90
    assert dst["rotation"] == 90


GPS = {"location": "+48.8584+002.2945/", "make": "Acme Dashcam", "model": "DC-1", "creation_time": "2024-05-01T10:00:00.000000Z"}


def test_metadata_is_stripped_by_default_and_kept_on_request(tmp_path):
    v = make_video(str(tmp_path / "meta.mov"), frames=6, metadata=GPS)
    assert read_video(v.path)["metadata"].get("location") == GPS["location"]
    _, stripped = _run(v.path, tmp_path / "strip.mov")
    assert not set(GPS) & set(stripped["metadata"]), stripped["metadata"]
    _, kept = _run(v.path, tmp_path / "keep.mov", "--keep-metadata")
    assert kept["metadata"].get("location") == GPS["location"]
    assert kept["metadata"].get("make") == GPS["make"]


def test_corrupt_packets_are_skipped_and_counted(tmp_path, synthetic):
    """Garbage in a few video packets: the run finishes, the report counts the bad packets."""
    bad = tmp_path / "corrupt.mkv"
    rng = np.random.default_rng(1)
    with av.open(synthetic.path) as src, av.open(str(bad), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        n = 0
        for p in src.demux():
            if p.dts is None:
                continue
            if p.stream.type == "video":
                n += 1
                if n in (10, 25):
                    q = av.Packet(rng.integers(0, 256, max(p.size, 64), dtype=np.uint8).tobytes())
                    q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                    q.stream = streams[p.stream.index]
                    dst.mux(q)
                    continue
            p.stream = streams[p.stream.index]
            dst.mux(p)
    rep = tmp_path / "r.json"
    res = run_cli(bad, "-o", tmp_path / "out.mp4", "-q", "--report", rep)
    assert res.returncode == 0, res.stderr
    import json

    report = json.loads(rep.read_text())
    assert report["decode_errors"] >= 1
    assert report["video"]["frames_out"] >= synthetic.frames - 2 * 3  # only around the bad packets
    assert len(read_video(tmp_path / "out.mp4")["frames"]) == report["video"]["frames_out"]


def test_max_frames_bounds_the_run(tmp_path, synthetic):
    _, dst = _run(synthetic.path, tmp_path / "out.mp4", "--max-frames", "7")
    assert len(dst["frames"]) == 7


def _with_pcm_audio(src_path, out_path):
    """Remux a video-only clip and add raw PCM audio, a codec MPEG-TS cannot hold."""
    with av.open(src_path) as i, av.open(str(out_path), "w") as o:
        vs = o.add_stream_from_template(i.streams.video[0])
        a = o.add_stream("pcm_s16le", rate=48000, layout="mono")
        for p in i.demux():
            if p.dts is not None:
                p.stream = vs
                o.mux(p)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        o.mux(a.encode(f))
        o.mux(a.encode(None))


def test_audio_the_output_container_cannot_hold_is_re_encoded_and_mkv_copies_it(tmp_path):
    """MPEG-TS cannot hold PCM: AAC with a note (it was refused; FFmpeg's muxer would have
    written an undecodable stream). Matroska holds it: copied packet for packet."""
    v = make_video(str(tmp_path / "v.mkv"), frames=8, audio=False)
    pcm = tmp_path / "pcm.mkv"
    _with_pcm_audio(v.path, pcm)
    res = run_cli(pcm, "-o", tmp_path / "out.ts")
    assert res.returncode == 0 and "note: audio re-encoded to AAC: mpegts cannot hold pcm_s16le" in res.stderr, res.stderr
    with av.open(str(tmp_path / "out.ts")) as c:
        assert c.streams.audio[0].codec_context.name == "aac" and sum(f.samples for f in c.decode(audio=0)) >= 16000
    src, dst = _run(pcm, tmp_path / "out.mkv")
    assert dst["audio_streams"] == 1 and dst["audio_packets"] == src["audio_packets"]


def test_resolution_change_mid_stream_keeps_the_first_size(tmp_path):
    """Two H.264 segments of different sizes back to back in one MPEG-TS (as a camera
    switching mode does): every frame is written, at the first segment's size."""
    a = make_video(str(tmp_path / "a.ts"), width=320, height=240, frames=10, audio=False)
    b = make_video(str(tmp_path / "b.ts"), width=640, height=360, frames=10, audio=False, seed=1)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(open(a.path, "rb").read() + open(b.path, "rb").read())
    src, dst = _run(joined, tmp_path / "out.mkv")
    assert {f.shape[:2] for f in src["frames"]} == {(240, 320), (360, 640)}
    assert len(dst["frames"]) == len(src["frames"]) and dst["size"] == (320, 240)


def test_cover_art_is_not_mistaken_for_the_video(tmp_path):
    v = make_video(str(tmp_path / "v.mp4"), frames=10, audio=False)
    covered = tmp_path / "covered.mp4"
    with av.open(v.path) as i, av.open(str(covered), "w") as o:
        cover = o.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        vs = o.add_stream_from_template(i.streams.video[0])
        pic = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24").reformat(format="yuvj420p")
        pic.pts = 0
        o.mux(cover.encode(pic))
        o.mux(cover.encode(None))
        for p in i.demux():
            if p.dts is not None:
                p.stream = vs
                o.mux(p)
    rep = tmp_path / "r.json"
    res = run_cli(covered, "-o", tmp_path / "out.mp4", "-q", "--report", rep)
    assert res.returncode == 0, res.stderr
    import json

    report = json.loads(rep.read_text())
    assert (report["video"]["width"], report["video"]["frames_out"]) == (320, 10)
    assert report["video"]["other_streams_dropped"] == 1


def test_hardware_frames_convert_to_the_software_pixels(synthetic):
    """NVDEC's NV12 frame (emulated here: the software frame repacked, lossless) gives the
    software decoder's RGB pixels exactly; converted directly it would not."""
    from pipeline.io.video_reader import rgb24

    with av.open(synthetic.path) as c:
        frame = next(c.decode(video=0))
    want = frame.to_ndarray(format="rgb24")
    nv12 = frame.reformat(format="nv12")
    assert np.array_equal(rgb24(nv12), want)
    assert np.abs(nv12.to_ndarray(format="rgb24").astype(int) - want).max() > 0, "the direct conversion differs"


def test_a_hardware_decoder_that_cannot_open_falls_back_to_software(synthetic, tmp_path):
    from pipeline.device.select import cuda_devices
    from pipeline.io.video_reader import VideoReader

    if cuda_devices():
        pytest.skip("this machine has a GPU: NVDEC may open (tests/test_gpu.py compares it)")
    with VideoReader(synthetic.path, hwaccel="cuda") as r:
        frames = [f.image for f in r.frames()]
        assert r.hwaccel is None and r.hwaccel_fallback.startswith("cuda decoding unavailable")
    assert np.array_equal(np.stack(frames), np.stack(read_video(synthetic.path)["frames"]))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(Exception, match="not a readable video container"):
        VideoReader(str(bad), hwaccel="cuda").open()
