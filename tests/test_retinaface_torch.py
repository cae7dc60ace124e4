"""RetinaFace in torch: our module against ONNX Runtime, strict loading, and the device-side
detection path (resize, decode, NMS) against the host path, on real weights and images."""

import av
import cv2
import numpy as np
import pytest
from skimage import data

torch = pytest.importorskip("torch", reason="the torch detector needs torch (pip install torch==2.13.0)")
onnx = pytest.importorskip("onnx", reason="loading RetinaFace into torch reads the ONNX file")

from conftest import model_bytes  # noqa: E402
from engines import get_model, load  # noqa: E402
from engines.placement import Placement  # noqa: E402
from engines.retinaface import load_retinaface  # noqa: E402
from engines.torch_engine import TorchEngine  # noqa: E402
from pipeline.device.transfer import Transfer  # noqa: E402
from pipeline.detect import torch_detect  # noqa: E402
from pipeline.detect.priors import anchors  # noqa: E402
from pipeline.detect.retinaface import RetinaFaceDetector  # noqa: E402
from pipeline.device.resize import resize_area  # noqa: E402

ENTRY = get_model("retinaface-mnet025")
ASTRONAUT = data.astronaut()
TILED = np.ascontiguousarray(np.tile(ASTRONAUT, (2, 2, 1)))  # four faces
OUTPUTS = ("loc", "conf", "landmarks")


@pytest.fixture(scope="module")
def weights():
    return model_bytes(ENTRY)


@pytest.fixture(scope="module")
def ort():
    return load("retinaface-mnet025")


@pytest.fixture(scope="module")
def torch_engine():
    return load("retinaface-mnet025", "torch")


def _resized(h, w):
    return cv2.resize(ASTRONAUT, (w, h), interpolation=cv2.INTER_CUBIC)


# (frames, detect_size): the network input is the host path's own preprocessing of them.
NETWORK_CASES = {
    "512x512": ([ASTRONAUT], None),
    "360x640": ([_resized(360, 640)], None),
    "1080x1920 at 720x1280": ([_resized(1080, 1920)], None),
    "odd 361x643": ([_resized(361, 643)], 643),
    "batch of 3": ([ASTRONAUT, np.ascontiguousarray(ASTRONAUT[:, ::-1]), np.full_like(ASTRONAUT, 127)], None),
}


@pytest.mark.parametrize("case", list(NETWORK_CASES))
def test_outputs_match_onnxruntime(case, ort, torch_engine):
    frames, detect_size = NETWORK_CASES[case]
    batch = RetinaFaceDetector(ort, detect_size=detect_size).preprocess(frames)[0]
    ref, ours = ort({"input": batch}), torch_engine({"input": batch})
    assert set(ours) == set(OUTPUTS)
    for name in OUTPUTS:
        assert ours[name].shape == ref[name].shape
        assert np.abs(ours[name] - ref[name]).max() <= 1e-4, name
    assert ours["conf"][..., 1].max() > 0.9  # a face was there: the comparison covered a detection


def test_model_table_serves_the_torch_backend(weights, tmp_path):
    assert ENTRY.default_backend == "onnxruntime"
    engine = load("retinaface-mnet025", "torch")
    assert isinstance(engine, TorchEngine)
    assert [i.name for i in engine.inputs] == ["input"] and [o.name for o in engine.outputs] == list(OUTPUTS)
    path = tmp_path / "retinaface.onnx"
    path.write_bytes(weights)  # a user's own copy of the file, given by path
    from_file = load("retinaface-mnet025", "torch", path=path)
    for (k, a), b in zip(engine.module.state_dict().items(), from_file.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_every_initializer_fills_one_parameter(weights):
    graph = onnx.load_from_string(weights).graph
    model = load_retinaface(weights)
    params = model.state_dict()
    assert len(params) == len(graph.initializer) == 112  # 56 convs, BN folded: weight + bias each
    # Named initializers land under the same name; anonymous ones are covered by the strict checks.
    for t in graph.initializer:
        if not t.name.startswith("onnx::"):
            np.testing.assert_array_equal(params[t.name].numpy(), onnx.numpy_helper.to_array(t))


def _mutated(weights, change) -> bytes:
    m = onnx.load_from_string(weights)
    change(m.graph)
    return m.SerializeToString()


def _drop_node(name):
    def change(g):
        node = next(n for n in g.node if n.name == name)
        g.node.remove(node)
    return change


def _reshape_initializer(name, shape):
    def change(g):
        t = next(t for t in g.initializer if t.name == name)
        t.CopyFrom(onnx.numpy_helper.from_array(np.zeros(shape, np.float32), name))
    return change


def _add_initializer(g):
    g.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.float32), "extra"))


def _stride(name, stride):
    def change(g):
        node = next(n for n in g.node if n.name == name)
        next(a for a in node.attribute if a.name == "strides").ints[:] = [stride, stride]
    return change


def _rename_output(g):
    g.output[0].name = "boxes"


LOAD_PROBLEMS = [
    (_drop_node("/class_head/class_head.2/Conv"), r"parameters the graph does not fill: class_head\.class_head\.2\.weight"),
    (_reshape_initializer("bbox_head.bbox_head.0.weight", (6, 64, 1, 1)),
     r"wrong shapes: bbox_head\.bbox_head\.0\.weight: expected \(8, 64, 1, 1\), found \(6, 64, 1, 1\)"),
    (_add_initializer, r"initializers no Conv of ours uses: extra"),
    (_stride("/fx/stage2/stage2.1/stage2.1.0/stage2.1.0.0/Conv", 2),
     r"fx\.stage2\.1\.0\.0: \(kernel, stride, padding, groups, dilation\) expected \(\(3, 3\), \(1, 1\)"),
    (_rename_output, r"the graph lacks loc"),
]


@pytest.mark.parametrize("change,message", LOAD_PROBLEMS, ids=["missing", "shape", "unused", "stride", "names"])
def test_loading_problems_are_named(weights, change, message):
    from engines.retinaface.engine import build_torch

    with pytest.raises(ValueError, match=message):
        build_torch(ENTRY, {"weights": _mutated(weights, change)})


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    bad = tmp_path / "weights.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"weights\.onnx is not an ONNX model"):
        load_retinaface(str(bad))
    with pytest.raises(FileNotFoundError):
        load_retinaface(str(tmp_path / "absent.onnx"))


# ---- device-side post-processing: the host path's `_decode` + OpenCV NMS, on the same outputs


@pytest.mark.parametrize("threshold", [0.5, 0.05])
def test_decode_and_nms_match_the_host_on_the_same_outputs(ort, threshold):
    frames = [TILED, np.full_like(TILED, 127), np.ascontiguousarray(TILED[::-1, ::-1])]
    det = RetinaFaceDetector(ort, threshold=threshold)
    batch, sx, sy = det.preprocess(frames)
    out = ort({"input": batch})
    loc, conf, landm = out["loc"], out["conf"], out["landmarks"]
    priors = anchors(batch.shape[2], batch.shape[3], ENTRY.settings["strides"], ENTRY.settings["anchor_sizes"])
    host = [det._decode(loc[b], conf[b, :, 1], landm[b], priors, sx, sy, frames[b].shape) for b in range(len(frames))]
    t = torch.from_numpy
    ours = torch_detect.postprocess(t(loc), t(conf)[..., 1], t(landm), t(priors), variance=ENTRY.settings["variance"],
                                    threshold=threshold, nms_iou=det.nms_iou, scale=(sx, sy), frame_hw=TILED.shape[:2])
    assert [len(d) for d in host] == [len(d) for d in ours]
    assert len(host[0]) >= 4 and len(host[1]) == 0  # four faces (more at 0.05), and none on the blank frame
    assert ours[1].boxes.shape == (0, 4) and ours[1].landmarks.shape == (0, 5, 2)
    for h, o in zip(host, ours):
        assert o.boxes.dtype == o.scores.dtype == o.landmarks.dtype == np.float32
        np.testing.assert_array_equal(o.scores, h.scores)  # same faces, in the same order
        np.testing.assert_allclose(o.boxes, h.boxes, atol=1e-3)
        np.testing.assert_allclose(o.landmarks, h.landmarks, atol=1e-3)


def test_nms_is_opencvs_greedy_nms_on_crowded_boxes():
    """Clusters of heavily overlapping boxes make long suppression chains (a box kept only
    because the one that would suppress it was itself suppressed)."""
    rng = np.random.default_rng(0)
    centers = rng.uniform(50, 450, (12, 2)).repeat(40, axis=0) + rng.normal(0, 12, (480, 2))
    sizes = rng.uniform(30, 90, (480, 1)) * [1.0, 1.2]
    boxes = np.hstack([centers - sizes / 2, centers + sizes / 2]).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, 480).astype(np.float32)
    scores[::7] = scores[3]  # ties: OpenCV keeps them in input order
    image = np.sort(rng.integers(0, 3, 480))
    for iou in (0.3, 0.4, 0.6):
        expected = []
        for b in range(3):
            (idx,) = np.nonzero(image == b)
            xywh = np.hstack([boxes[idx, :2], boxes[idx, 2:] - boxes[idx, :2]])
            keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores[idx].tolist(), 0.0, iou), np.int64).reshape(-1)
            expected.append(idx[keep])
        order = np.lexsort((np.arange(480), -scores, image))  # by image, then descending score, ties in input order
        kept = torch_detect.nms(torch.from_numpy(image[order]), torch.from_numpy(boxes[order]), 3, iou).numpy()
        np.testing.assert_array_equal(order[kept], np.concatenate(expected))


# ---- the whole device path: `detect_tensor` against `detect`


@pytest.mark.parametrize("shape", [(1080, 1920), (1024, 1024), (512, 640), (240, 320)])
def test_resize_is_opencvs_inter_area(shape):
    """The host resizes with cv2 INTER_AREA; shrinking must give the same pixels, enlarging
    (OpenCV's fixed-point path) at most one grey level on a few of them."""
    h, w = shape
    image = cv2.resize(TILED, (w, h), interpolation=cv2.INTER_CUBIC)
    det = RetinaFaceDetector(engine=object())  # the working size only
    for size in {det.working_size(h, w)[:2], (h // 2, w // 2), (round(h / 1.6), round(w / 1.6))} - {(h, w)}:
        ref = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
        ours = resize_area(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size)[0].permute(1, 2, 0).numpy()
        diff = np.abs(ours - ref)
        if size[0] <= h:
            assert diff.max() == 0, size
        else:
            assert diff.max() <= 1 and (diff > 0).mean() < 0.05, size


def _clip_frames(video):
    with av.open(video.path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


DETECT_CASES = {
    "synthetic clip, 2x up": (lambda s: _clip_frames(s)[::5], None),
    "astronaut 512, 1.25x up": (lambda s: [ASTRONAUT], None),
    "tiled 1080p, down to 1280": (lambda s: [cv2.resize(TILED, (1920, 1080), interpolation=cv2.INTER_CUBIC)] * 2, None),
    "tiled 1024, detect size 800": (lambda s: [TILED], 800),
    "none": (lambda s: [np.full((360, 640, 3), 90, np.uint8)], None),
}


@pytest.mark.parametrize("case", list(DETECT_CASES))
def test_detect_tensor_matches_detect(case, synthetic, ort, torch_engine):
    make, detect_size = DETECT_CASES[case]
    frames = make(synthetic)
    host = RetinaFaceDetector(ort, detect_size=detect_size).detect(frames)
    ours = RetinaFaceDetector(torch_engine, detect_size=detect_size).detect_tensor(Transfer(torch_engine.device).upload(frames))
    assert [len(d) for d in ours] == [len(d) for d in host]
    assert sum(len(d) for d in host) >= (0 if case == "none" else len(frames))
    for h, o in zip(host, ours):
        # measured ≤ 0.01 px (network rounding; 1-grey-level resize differences when enlarging)
        np.testing.assert_allclose(o.boxes, h.boxes, atol=0.25)
        np.testing.assert_allclose(o.landmarks, h.landmarks, atol=0.25)
        np.testing.assert_allclose(o.scores, h.scores, atol=1e-3)


def test_detect_tensor_checks_its_input(torch_engine):
    det = RetinaFaceDetector(torch_engine)
    with pytest.raises(ValueError, match=r"expects \(F, H, W, 3\) uint8 RGB frames, got \(1, 3, 64, 64\) torch.uint8"):
        det.detect_tensor(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))
    with pytest.raises(ValueError, match="got \\(1, 64, 64, 3\\) torch.float32"):
        det.detect_tensor(torch.zeros((1, 64, 64, 3)))
    assert det.detect_tensor(torch.zeros((0, 64, 64, 3), dtype=torch.uint8)) == []


@pytest.mark.parametrize("placement,atol", [(Placement("cpu", channels_last=True), 1e-3), (Placement("cpu", "float16"), 0.25)])
def test_gpu_settings_keep_the_faces(placement, atol, ort):
    """channels_last and float16 are what a GPU would run; on CPU they must change only rounding.
    (bfloat16 moves boxes of 100+ px faces by 1-5 px: fine for a tracker, not a parity check.)
    Small frames: float16 convolutions are slow on a CPU."""
    frames = [cv2.resize(TILED, (384, 384), interpolation=cv2.INTER_AREA)]
    host = RetinaFaceDetector(ort, detect_size=384).detect(frames)
    engine = load("retinaface-mnet025", "torch", placement=placement)
    ours = RetinaFaceDetector(engine, detect_size=384).detect_tensor(Transfer(engine.device).upload(frames))
    by_position = lambda d: np.lexsort(d.boxes.T[::-1])  # noqa: E731 (equal faces may swap score order)
    for h, o in zip(host, ours):
        assert len(o) == len(h) == 4
        np.testing.assert_allclose(o.boxes[by_position(o)], h.boxes[by_position(h)], atol=atol)
