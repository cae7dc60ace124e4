"""The CUDA graph stand-in (pipeline/device/graphs.py) and the capture logic it runs on the CPU.

The stand-in must fail where a real CUDA graph fails, or CI passes code the device crashes
on: shown here on the two faults a rehearsal of the device kit found (graphs keyed by batch
bucket only, and a host sync inside capture), each on code written the faulty way.
"""

import numpy as np
import pytest
import torch

from pipeline.device.buckets import BucketedCall
from pipeline.device.graphs import CaptureError, Grapher
from pipeline.device.select import GRAPH_STANDIN_ENV


def conv_fn():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()

    @torch.inference_mode()
    def fn(feeds):
        return {"y": net(feeds["x"]) * 2}

    return fn


def test_replays_equal_eager_calls_and_rewrite_the_same_output_buffers():
    fn = conv_fn()
    graphed, eager = BucketedCall(fn, graphs=True), BucketedCall(fn)
    outs = []
    for n in (1, 3, 4, 3, 7, 5):
        x = torch.randn(n, 3, 16, 16)
        a, b = graphed({"x": x})["y"], eager({"x": x})["y"]
        torch.testing.assert_close(a, b)
        outs.append(a)
    assert graphed.replays == 6 and graphed.captures == 3, "buckets 1, 4 and 8: one capture each"
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(outs, outs[1:])), "each result is a copy, not the static buffer"
    captured = Grapher().capture(fn, {"x": torch.randn(2, 3, 16, 16)})
    buffer = captured.static_out["y"]
    for _ in range(2):
        x = torch.randn(2, 3, 16, 16)
        captured.load({"x": x})
        captured.replay()
        assert captured.static_out["y"] is buffer, "a graph writes its outputs in place"
        torch.testing.assert_close(buffer, fn({"x": x})["y"])


def test_one_engine_serves_several_input_sizes_with_a_capture_each():
    """The recall passes send the plain, padded and half-scale dark images through one detector
    engine: same bucket, other sizes."""
    fn = conv_fn()
    call = BucketedCall(fn, graphs=True)
    for hw in ((16, 16), (24, 16), (16, 16), (8, 12)):
        x = torch.randn(2, 3, *hw)
        torch.testing.assert_close(call({"x": x})["y"], fn({"x": x})["y"])
    assert call.captures == 3 and call.replays == 4


def test_the_stand_in_catches_graphs_keyed_by_bucket_only():
    class BucketKeyed(BucketedCall):  # the keying the device kit's rehearsal found
        @staticmethod
        def key(padded):
            return len(next(iter(padded.values())))

    call = BucketKeyed(conv_fn(), graphs=True)
    call({"x": torch.randn(2, 3, 16, 16)})
    with pytest.raises(CaptureError, match="does not fit the captured buffer"):
        call({"x": torch.randn(2, 3, 24, 16)})


@pytest.mark.parametrize("sync", [
    lambda x: x * x.sum().item(),
    lambda x: x * float(x.mean()),
    lambda x: x if bool(x.max() > 0) else -x,
    lambda x: x[x > 0].sum() + x,
    lambda x: x + x.nonzero().shape[0],
    lambda x: torch.from_numpy(x.cpu().numpy()),
    lambda x: x + torch.tensor(np.ones(1, np.float32)),
], ids=["item", "float", "bool", "mask", "nonzero", "download", "upload"])
def test_the_stand_in_refuses_host_syncs_during_capture(sync):
    call = BucketedCall(lambda feeds: {"y": sync(feeds["x"])}, graphs=True)
    with pytest.raises(CaptureError, match="during graph capture"):
        call({"x": torch.randn(2, 3)})
    assert BucketedCall(lambda feeds: {"y": sync(feeds["x"])})({"x": torch.randn(2, 3)})["y"].shape[0] == 2, \
        "eagerly the same function runs: only capture refuses it"


def test_the_device_path_detector_is_captured_once_per_working_size(monkeypatch):
    """The real RetinaFace on the device path with `--recall fast`: a dark frame gets the
    plain, the padded and the half-scale dark pass through one engine, each with its graph,
    and finds what eager calls find."""
    from skimage import data

    from pipeline.run.build import load_detector
    from pipeline.run.config import RunConfig, engine_choice

    dark = (data.astronaut().astype(np.float32) * 0.12).astype(np.uint8)  # below the dark pass's luminance
    frames = torch.from_numpy(np.stack([dark, dark]))
    monkeypatch.setenv(GRAPH_STANDIN_ENV, "1")
    cfg = RunConfig(device="cpu", recall="fast")
    graphed = load_detector(cfg, engine_choice(cfg))
    monkeypatch.delenv(GRAPH_STANDIN_ENV)
    eager = load_detector(cfg, engine_choice(cfg))
    got, want = graphed.detect_tensor(frames), eager.detect_tensor(frames)
    call = graphed.engine._bucketed
    assert call.captures >= 3 and call.replays >= 3, (call.captures, call.replays)
    assert [len(d) for d in got] == [len(d) for d in want] and len(got[0]) >= 1
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
