"""Every bad input or output: one-line error, exit status 2, nothing at the output path."""

import os

import av
import numpy as np
import pytest

from conftest import no_leftovers, run_cli


def _audio_only(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        f.pts = 0
        c.mux(s.encode(f))
        c.mux(s.encode(None))


def _cases(tmp_path, synthetic):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    wav = tmp_path / "sound.wav"
    _audio_only(wav)
    data = open(synthetic.path, "rb").read()
    cut_mp4 = tmp_path / "cut.mp4"  # moov atom at the end: cut in half, unreadable
    cut_mp4.write_bytes(data[: len(data) // 2])
    cut_mkv = tmp_path / "cut.mkv"
    with av.open(synthetic.path) as src, av.open(str(tmp_path / "full.mkv"), "w") as dst:
        m = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for p in src.demux():
            if p.dts is not None:
                p.stream = m[p.stream.index]
                dst.mux(p)
    full = (tmp_path / "full.mkv").read_bytes()
    cut_mkv.write_bytes(full[: len(full) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    good = synthetic.path
    return {
        "missing input": ([tmp_path / "nope.mp4", "-o", out_dir / "o.mp4"], "input not found"),
        "directory input": ([tmp_path, "-o", out_dir / "o.mp4"], "directory"),
        "not a video": ([text, "-o", out_dir / "o.mp4"], "not a readable video"),
        "no video stream": ([wav, "-o", out_dir / "o.mp4"], "no video stream"),
        "truncated mp4": ([cut_mp4, "-o", out_dir / "o.mp4"], "not a readable video"),
        "truncated mkv": ([cut_mkv, "-o", out_dir / "o.mkv"], "truncated"),
        "output folder missing": ([good, "-o", tmp_path / "no" / "o.mp4"], "does not exist"),
        "output under a file": ([good, "-o", text / "o.mp4"], "does not exist"),
        "output equals input": ([good, "-o", good], "-o would overwrite an input"),
        "unsupported extension": ([good, "-o", out_dir / "o.gif"], "unsupported output extension"),
        "report beside nowhere": ([good, "-o", out_dir / "o.mp4", "--report", tmp_path / "no" / "r.json"], "--report: folder does not exist"),
        # 100000 allocated until a MemoryError; the 320x240 clip allows 4096
        "detect size too large": ([good, "-o", out_dir / "o.mp4", "--report", out_dir / "r.json", "--detect-size", 4097],
                                  "--detect-size 4097 is more than this 320x240 video can use (at most 4096"),
    }, out_dir


CASES = [
    "missing input", "directory input", "not a video", "no video stream", "truncated mp4", "truncated mkv",
    "output folder missing", "output under a file", "output equals input", "unsupported extension", "report beside nowhere",
    "detect size too large",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(tmp_path, synthetic, case):
    cases, out_dir = _cases(tmp_path, synthetic)
    args, message = cases[case]
    before = os.path.getsize(synthetic.path)
    res = run_cli(*args)  # not quiet: notes must not add lines to an error
    assert res.returncode == 2, (case, res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    if case == "truncated mkv":
        # Only the end of the stream shows a cut Matroska file: the progress bar ran first.
        lines = [l for l in res.stderr.replace("\r", "\n").splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, f"expected one line, got: {res.stderr}"
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert list(out_dir.iterdir()) == [], f"left behind: {list(out_dir.iterdir())}"
    assert not no_leftovers(tmp_path)
    assert os.path.getsize(synthetic.path) == before  # input untouched (output == input case)


def test_an_mp4_from_a_pipe_says_why_it_cannot_be_read(tmp_path, synthetic):
    """`cat clip.mp4 | run_pipeline.py /dev/stdin`: the index sits after the media, which a
    pipe cannot seek back to (it said "0 corrupt packets"). A TS through the same pipe works."""
    import shutil
    import threading

    def piped(src):
        fifo = tmp_path / "pipe"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)

        def feed():
            try:
                with open(fifo, "wb") as w, open(src, "rb") as r:
                    shutil.copyfileobj(r, w)
            except BrokenPipeError:
                pass  # the reader gave up early

        threading.Thread(target=feed, daemon=True).start()
        return fifo

    res = run_cli(piped(synthetic.path), "-o", tmp_path / "o.mp4", "--mode", "blur")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "input is a pipe, and this mp4/mov keeps its index after the media" in res.stderr and "-movflags +faststart" in res.stderr
    assert not (tmp_path / "o.mp4").exists()
    ts = tmp_path / "clip.ts"
    with av.open(synthetic.path) as src, av.open(str(ts), "w") as dst:
        m = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for p in src.demux():
            if p.dts is not None:
                p.stream = m[p.stream.index]
                dst.mux(p)
    res = run_cli(piped(ts), "-o", tmp_path / "o.mp4", "--mode", "blur", "-q")
    assert res.returncode == 0 and len(av.open(str(tmp_path / "o.mp4")).streams.video) == 1, res.stderr


def test_flags_that_do_nothing_for_this_input_are_said(tmp_path, synthetic):
    """They were accepted silently, as if they were settings of this run."""
    from pipeline.device.select import resolve

    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--mode", "blur", "--max-frames", 2,
                  "--segment-seconds", 5, "--retries", 4, "--precision", "fp16")
    assert res.returncode == 0, res.stderr
    expected = [("--segment-seconds", "live runs only"), ("--retries", "fleet runs only")]
    if resolve("auto").host:  # on a GPU, auto is the torch path, where fp16 is a setting
        expected.append(("--precision fp16", "the torch data path"))
    for flag, what in expected:
        assert f"note: {flag} applies to {what}" in res.stderr, res.stderr
    res = run_cli(synthetic.path, "-o", tmp_path / "o2.mp4", "--mode", "blur", "--max-frames", 2, "--retries", 2)  # the default
    assert "note:" not in res.stderr, res.stderr


def test_unwritable_output_folder(tmp_path, synthetic):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; permission bits cannot make a folder unwritable")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run_cli(synthetic.path, "-o", ro / "o.mp4", "-q")
        assert res.returncode == 2 and "not writable" in res.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_failure_mid_run_leaves_no_output(tmp_path, synthetic):
    """A stage that fails half-way (here: the detector) removes the temp file; nothing is renamed."""
    from pipeline import RunConfig, anonymize_video
    from pipeline.detect.retinaface import RetinaFaceDetector
    from pipeline.core.errors import StageError

    class BreaksAtFrame20(RetinaFaceDetector):
        seen = 0

        def detect(self, images):
            self.seen += len(images)
            if self.seen > 20:
                raise RuntimeError("engine fell over")
            return super().detect(images)

    out = tmp_path / "o.mp4"
    with pytest.raises(StageError, match="detect stage failed: RuntimeError: engine fell over"):
        anonymize_video(synthetic.path, str(out), RunConfig(mode="blur"), boxes_path=str(tmp_path / "b.jsonl"),
                        report_path=str(tmp_path / "r.json"), detector=BreaksAtFrame20(), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delay, sig, status", [(0.0, "SIGTERM", 143), (0.3, "SIGHUP", 129), (1.0, "SIGTERM", 143)])
def test_a_signal_mid_run_leaves_nothing_behind(tmp_path, delay, sig, status):
    """An operator stopping a long run, or the terminal closing (SIGHUP), at several moments: the
    temp output is removed, no final file appears, and the status is the shell's 128 + signal."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    from pipeline.synthetic import make_video

    src = make_video(str(tmp_path / "long.mp4"), width=640, height=360, frames=400, audio=False)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_pipeline.py"), src.path, "-o", str(out_dir / "o.mp4"), "-q"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(out_dir.iterdir()), "the run never started writing"
    time.sleep(delay)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and "interrupted" in err, (proc.returncode, err)
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path):
    """While the command still imports its libraries (seconds, before its own handler):
    one line and status 130 (it was a KeyboardInterrupt traceback)."""
    import signal
    import subprocess
    import sys
    import time

    import cv2
    from skimage import data

    from conftest import ROOT

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), np.roll(data.astronaut()[..., ::-1], 7 * i, axis=1))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_pipeline.py"), "gallery", "build", str(tmp_path), "-o", str(tmp_path / "g.npz")],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.count("\n") == 1 and err.startswith("error: interrupted"), err
    assert not (tmp_path / "g.npz").exists()


def test_cli_error_is_one_line_even_when_the_message_is_not(capsys):
    """FFmpeg and OS messages can carry newlines; the CLI's error stays one record for log scrapers."""
    from pipeline.core.errors import InvalidInputError, fail

    assert fail(InvalidInputError("cannot decode\n  at packet 12\n")) == 2
    assert capsys.readouterr().err == "error: cannot decode at packet 12\n"
