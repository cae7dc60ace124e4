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


def cli_argv(*args) -> list[str]:
    """The real command line's argv, for tests that start it themselves (Popen, signals)."""
    return [sys.executable, str(ROOT / "run_pipeline.py"), *map(str, args)]


def run_cli(*args, timeout=300, env_extra=None):
    """The real command line, in a subprocess, as a user runs it."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


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
    yield


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


@pytest.fixture(scope="session")
def quality_gate(tmp_path_factory):
    """`measure(case_name) -> (numbers, audit)`: one case of benchmarks/quality_gates.py, run
    once per session (the shared clip's case takes a minute or more), so that the gates and the
    audit tests read one run; skips with the reason when the case's clip is absent."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality_gates

    done: dict = {}

    def measure(name: str):
        case = quality_gates.case(name)
        missing = quality_gates.clip_missing(case.clip)
        if missing:
            pytest.skip(missing)
        if name not in done:
            done[name] = quality_gates.run_case(case, tmp_path_factory.mktemp(name))
        return done[name]

    return measure


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
