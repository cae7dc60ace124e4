"""The device path on a CUDA GPU: what tests/test_device_path.py and tests/test_device_logic.py
hold on the CPU, run where it matters (pinned streams, CUDA graphs, float16, NVDEC).

Every test here needs CUDA and skips without it, saying so: CI has no GPU, and the device kit
(benchmarks/gpu/run_on_device.sh) runs this file on a lent one. Its rehearsal on the CPU
(benchmarks/gpu/rehearse.sh, ANONSWAP_REHEARSE=cpu) runs the same tests on `cpu` with the
graphs through the CPU stand-in, so that the kit's one run on a GPU does not fail on Python.
The pass criteria are the host path's results, as on the CPU, with tolerances for float16
arithmetic where it is used; float32 comparisons run with TF32 off (cuDNN's default would
round convolutions to 10 mantissa bits).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from skimage import data

torch = pytest.importorskip("torch", reason="the device path needs torch")
REHEARSAL = os.environ.get("ANONSWAP_REHEARSE") == "cpu"
CUDA = torch.cuda.is_available()
if not (CUDA or REHEARSAL):
    pytest.skip("no CUDA device: the GPU tests run on a lent GPU (benchmarks/gpu/run_on_device.sh)",
                allow_module_level=True)

from test_device_path import _pixels_close, _run, _same_faces  # noqa: E402

from conftest import read_video  # noqa: E402
from engines import load  # noqa: E402
from engines.placement import Placement  # noqa: E402
from engines.torch_engine import set_tf32  # noqa: E402
from pipeline.detect.retinaface import RetinaFaceDetector  # noqa: E402
from pipeline.device.buckets import BucketedCall  # noqa: E402
from pipeline.device.select import GRAPH_STANDIN_ENV  # noqa: E402
from pipeline.device.transfer import Transfer  # noqa: E402
from pipeline.io.video_reader import VideoReader  # noqa: E402
from simswap_kit import make_gallery_file, make_swap_kit  # noqa: E402

DEVICE = torch.device("cuda" if CUDA else "cpu")
GRAPHS = True if CUDA else "cpu stand-in"  # what a run's report says of its graphs
ASTRONAUT = data.astronaut()
TILED = np.ascontiguousarray(np.tile(ASTRONAUT, (2, 2, 1)))


@pytest.fixture(autouse=True)
def graphs_on_this_device(monkeypatch):
    if not CUDA:
        monkeypatch.setenv(GRAPH_STANDIN_ENV, "1")


@pytest.fixture
def ieee_fp32():
    before = set_tf32(False)
    yield
    set_tf32(*before)


def test_pinned_transfers_round_trip_while_buffers_alternate():
    """Four uploads through two pinned buffers: a refilled buffer must not change a frame
    already uploaded from it (the event wait), and downloads land in the host images."""
    t = Transfer(DEVICE)
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 255, (72, 128, 3), dtype=np.uint8) for _ in range(3)] for _ in range(4)]
    on_device = [t.upload(b) for b in batches]
    for b, d in zip(batches, on_device):
        assert d.device.type == DEVICE.type and d.dtype == torch.uint8
        assert np.array_equal(d.cpu().numpy(), np.stack(b))
    out = [np.zeros_like(i) for i in batches[0]]
    t.download(on_device[2].flip(1), out)
    assert all(np.array_equal(o, i[::-1]) for o, i in zip(out, batches[2]))


def test_graph_replay_equals_eager_across_buckets_and_input_sizes(ieee_fp32):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).to(DEVICE).eval()

    @torch.inference_mode()
    def fn(feeds):
        return {"y": net(feeds["x"])}

    graphed, eager = BucketedCall(fn, graphs=True), BucketedCall(fn, graphs=False)
    calls = [(1, 32, 32), (3, 32, 32), (4, 32, 32), (3, 48, 40), (7, 32, 32), (16, 48, 40), (5, 32, 32)]
    for n, h, w in calls:
        x = torch.randn(n, 3, h, w, device=DEVICE)
        a, b = graphed({"x": x})["y"], eager({"x": x})["y"]
        assert a.shape == (n, 2, h, w)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert graphed.replays == len(calls) and eager.replays == 0
    assert graphed.captures == 5, "one graph per (bucket, input size): 1, 4 and 8 at 32×32, 4 and 16 at 48×40"


@pytest.mark.parametrize("dtype, tol", [("float32", 0.05), ("float16", 1.5)])
def test_torch_detector_on_the_device_finds_the_host_faces(dtype, tol, ieee_fp32):
    host = RetinaFaceDetector()
    dev = RetinaFaceDetector(engine=load("retinaface-mnet025", "torch", placement=Placement(str(DEVICE), dtype, channels_last=CUDA)))
    got = dev.detect_tensor(Transfer(DEVICE).upload([ASTRONAUT, ASTRONAUT]))
    want = host.detect([ASTRONAUT, ASTRONAUT])
    for g, w in zip(got, want):
        assert len(g) == len(w) >= 1
        assert np.abs(g.boxes - w.boxes).max() <= tol, (dtype, g.boxes, w.boxes)
        assert np.abs(g.landmarks - w.landmarks).max() <= 2 * tol
    tiled = dev.detect_tensor(Transfer(DEVICE).upload([TILED]))[0]
    assert len(tiled) == len(host.detect([TILED])[0]) == 4


@pytest.mark.parametrize("mode, precision", [("blur", "fp16"), ("pixelate", "fp32")])
def test_device_path_matches_the_host_path(synthetic, tmp_path, mode, precision, ieee_fp32):
    """The default run (recall `fast`: plain, padded and dark passes through one engine).
    Pixelation in float32 only: its blocks are laid from the box's corner, so the sub-pixel
    box shifts of float16 detection move every block (seen in the CPU rehearsal: 14 levels)."""
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", mode=mode)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, "dev", mode=mode, device=str(DEVICE), precision=precision)
    eng = rep_d["settings"]["engines"]
    assert eng["device"].startswith(DEVICE.type) and eng["cuda_graphs"] == GRAPHS
    assert eng["dtype"] == {"fp16": "float16", "fp32": "float32"}[precision]
    assert _same_faces(rows_h, rows_d, box_tol=2.0) >= synthetic.frames
    assert rep_h["faces"] == rep_d["faces"]
    _pixels_close(px_h, px_d, mean_tol=0.5, region_tol=4.0, rows=rows_h)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_device_swap_matches_the_host_path(synthetic, tmp_path, precision, perface_onnx, ieee_fp32):
    """Identity from a small PerFace network the test makes (dlib's 100 MB weights do not
    travel to the device)."""
    if precision == "fp16" and not CUDA:
        pytest.skip("rehearsal: float16 convolutions on the CPU take ~30 s a face (bf16 runs the same code)")
    (tmp_path / "kit").mkdir()
    gen, arc, _ = make_swap_kit(tmp_path / "kit")
    gallery = tmp_path / "kit" / "perface_gallery.npz"
    make_gallery_file(gallery, n=2, dim=512, embedder="perface")
    common = dict(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(gallery), max_frames=20,
                  embedder="perface", embedder_model=str(perface_onnx))
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", swap_backend="torch", **common)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, f"dev-{precision}", device=str(DEVICE), precision=precision, **common)
    assert rep_d["settings"]["engines"]["cuda_graphs"] == GRAPHS
    assert rep_d["faces"]["swapped"] >= 10 and rep_h["faces"] == rep_d["faces"]
    assert _same_faces(rows_h, rows_d, box_tol=2.0) >= 20
    assert [t["source_id"] for t in rep_h["tracks"]] == [t["source_id"] for t in rep_d["tracks"]]
    # a random-weight generator amplifies half-precision rounding: the faces differ more than covers do
    _pixels_close(px_h, px_d, mean_tol=1.0 if precision == "fp32" else 3.0,
                  region_tol=4.0 if precision == "fp32" else 40.0, rows=rows_h)


def test_nvdec_decodes_the_frames_software_decoding_gives(synthetic):
    """On a GPU: NVDEC's frames, repacked from NV12, are the software decoder's. Where NVDEC
    cannot open (no device in the rehearsal, a codec it lacks), the reader decodes in software
    and says why."""
    soft = read_video(synthetic.path)["frames"]
    with VideoReader(synthetic.path, hwaccel="cuda") as r:
        frames = [f.image for f in r.frames()]
        used, fallback = r.hwaccel, r.hwaccel_fallback
    print(f"hwaccel used: {used}; fallback: {fallback}")
    assert (used is None) == (fallback is not None)
    assert len(frames) == len(soft)
    diff = np.abs(np.stack(frames).astype(np.int16) - np.stack(soft))
    assert diff.mean() < 0.05, (used, diff.mean(), diff.max())
