"""The device path on a CUDA GPU: what tests/test_device_path.py and tests/test_device_logic.py
hold on the CPU, run where it matters (pinned streams, CUDA graphs, float16, NVDEC).

Every test here needs CUDA and skips without it, saying so: CI has no GPU, and the device kit
(benchmarks/gpu/run_on_device.sh) runs this file on a lent one. The pass criteria are the
host path's results, as on the CPU, with tolerances for float16 arithmetic where it is used.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

torch = pytest.importorskip("torch", reason="the device path needs torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the GPU tests run on a lent GPU (benchmarks/gpu/run_on_device.sh)",
                allow_module_level=True)

from test_device_path import _pixels_close, _run, _same_faces  # noqa: E402

from conftest import read_video  # noqa: E402
from engines import load  # noqa: E402
from pipeline.detect.retinaface import FaceDetector  # noqa: E402
from pipeline.device.buckets import BucketedCall  # noqa: E402
from pipeline.device.transfer import Transfer  # noqa: E402
from pipeline.io.video_reader import VideoReader, hw_decoder  # noqa: E402
from pipeline.device.select import resolve  # noqa: E402
from simswap_kit import make_swap_kit  # noqa: E402

CUDA = torch.device("cuda")
ASTRONAUT = data.astronaut()
TILED = np.ascontiguousarray(np.tile(ASTRONAUT, (2, 2, 1)))


def test_pinned_transfers_round_trip_while_buffers_alternate():
    """Four uploads through two pinned buffers: a refilled buffer must not change a frame
    already uploaded from it (the event wait), and downloads land in the host images."""
    t = Transfer(CUDA)
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 255, (72, 128, 3), dtype=np.uint8) for _ in range(3)] for _ in range(4)]
    on_device = [t.upload(b) for b in batches]
    for b, d in zip(batches, on_device):
        assert d.device.type == CUDA.type and d.dtype == torch.uint8
        assert np.array_equal(d.cpu().numpy(), np.stack(b))
    out = [np.zeros_like(i) for i in batches[0]]
    t.download(on_device[2].flip(1), out)
    assert all(np.array_equal(o, i[::-1]) for o, i in zip(out, batches[2]))


def test_cuda_graph_replay_equals_eager():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).to(CUDA).eval()

    @torch.inference_mode()
    def fn(feeds):
        return {"y": net(feeds["x"])}

    graphed, eager = BucketedCall(fn, graphs=True), BucketedCall(fn, graphs=False)
    for n in (1, 3, 4, 3, 7, 16, 5):
        x = torch.randn(n, 3, 32, 32, device=CUDA)
        a, b = graphed({"x": x})["y"], eager({"x": x})["y"]
        assert a.shape == (n, 2, 32, 32)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert graphed.replays == 7 and eager.replays == 0


@pytest.mark.parametrize("dtype, tol", [("float32", 0.05), ("float16", 1.5)])
def test_torch_detector_on_cuda_finds_the_host_faces(dtype, tol):
    host = FaceDetector()
    cuda = FaceDetector(engine=load("retinaface-mnet025", "torch", device="cuda", dtype=dtype, channels_last=True))
    got = cuda.detect_tensor(Transfer(CUDA).upload([ASTRONAUT, ASTRONAUT]))
    want = host.detect([ASTRONAUT, ASTRONAUT])
    for g, w in zip(got, want):
        assert len(g) == len(w) >= 1
        assert np.abs(g.boxes - w.boxes).max() <= tol, (dtype, g.boxes, w.boxes)
        assert np.abs(g.landmarks - w.landmarks).max() <= 2 * tol
    tiled = cuda.detect_tensor(Transfer(CUDA).upload([TILED]))[0]
    assert len(tiled) == len(host.detect([TILED])[0]) == 4


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_cuda_path_matches_the_host_path(synthetic, tmp_path, mode):
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", mode=mode)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, "cuda", mode=mode, device="cuda")
    eng = rep_d["settings"]["engines"]
    assert eng["device"].startswith("cuda") and eng["dtype"] == "float16" and eng["cuda_graphs"] is True
    assert _same_faces(rows_h, rows_d, box_tol=2.0) >= synthetic.frames
    assert rep_h["faces"] == rep_d["faces"]
    _pixels_close(px_h, px_d, mean_tol=0.5, region_tol=4.0, rows=rows_h)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_swap_matches_the_host_path(synthetic, tmp_path, precision):
    (tmp_path / "kit").mkdir()
    gen, arc, gallery = make_swap_kit(tmp_path / "kit")
    common = dict(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(gallery), max_frames=20)
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", swap_backend="torch", **common)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, f"cuda-{precision}", device="cuda", precision=precision, **common)
    assert rep_d["faces"]["swapped"] >= 10 and rep_h["faces"] == rep_d["faces"]
    assert _same_faces(rows_h, rows_d, box_tol=2.0) >= 20
    assert [t["source_id"] for t in rep_h["tracks"]] == [t["source_id"] for t in rep_d["tracks"]]
    # a random-weight generator amplifies float16 rounding: the faces differ more than covers do
    _pixels_close(px_h, px_d, mean_tol=1.0 if precision == "fp32" else 3.0,
                  region_tol=4.0 if precision == "fp32" else 40.0, rows=rows_h)


def test_nvdec_decodes_the_frames_software_decoding_gives(synthetic):
    hw = hw_decoder(resolve("cuda"))
    if hw is None:
        pytest.skip("this FFmpeg build (PyAV's wheel) has no CUDA hwaccel: decoding stays in software")
    soft = read_video(synthetic.path)["frames"]
    with VideoReader(synthetic.path, hwaccel=hw) as r:
        frames = [f.image for f in r.frames()]
        used = r.hwaccel
    assert len(frames) == len(soft)
    diff = np.abs(np.stack(frames).astype(np.int16) - np.stack(soft))
    assert diff.mean() < 1.0, (used, diff.mean())
