"""`--parsing-mask`: our BiSeNet and SimSwap's mask recipe against the official face-parsing
golden contract (../shared/golden/README.md, "Face parsing"), and the mask in the swap path.

Fill A is the contracts' usual fill (checks the layout, the heads, the upsampling); fill B adds
1.0 to the BatchNorm weights so the logits depend on the input (checks the backbone, the
normalization and the colour order). The weights go through the model table's own loader
(`load("face-parsing", path=…)`), as the official file would; nothing is downloaded.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the face parser needs torch (pip install torch==2.13.0)")

from conftest import SHARED  # noqa: E402
from engines import Engine, TensorSpec, get_model, load  # noqa: E402
from engines.parsing import BiSeNet  # noqa: E402
from pipeline.anonymize.parsing import GATE, INNER_FACE, USED, FaceParser  # noqa: E402
from simswap_kit import FlatGreen, contract_fill, layout_of  # noqa: E402

GOLDEN = SHARED / "golden"
SETTINGS = get_model("face-parsing").settings
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


@pytest.fixture(scope="module")
def contract():
    manifest, npz = GOLDEN / "face_parsing_manifest.json", GOLDEN / "face_parsing_golden.npz"
    if not (manifest.exists() and npz.exists()):
        pytest.skip(f"needs the face-parsing golden contract in ../shared ({manifest.parent} lacks it)")
    return json.loads(manifest.read_text()), dict(np.load(npz))


@pytest.fixture(scope="module")
def parsers(contract, tmp_path_factory):
    """fill name → FaceParser over the filled weights, loaded from a file through the model table."""
    manifest, _ = contract
    folder = tmp_path_factory.mktemp("parser")
    out = {}
    for fill, offset in (("A", 0.0), ("B", 1.0)):
        state = contract_fill(manifest["state_dict"], manifest["fill_seed"], bn_weight_offset=offset)
        total = sum(float(t.double().sum()) for t in state.values() if t.is_floating_point())
        assert total == pytest.approx(manifest[f"param_sum_{fill}"], abs=1e-6)
        path = folder / f"79999_iter_{fill}.pth"
        torch.save(state, path)
        out[fill] = FaceParser(load("face-parsing", path=str(path)), SETTINGS)
    return out


def _sub(a, idx):
    return a[..., idx, :][..., idx]


def test_parsing_golden_state_dict_is_the_official_layout(contract):
    manifest, _ = contract
    model = BiSeNet()
    assert layout_of(model) == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["n_params"]
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["n_state_elems"]


def test_parsing_golden_settings_are_the_contracts(contract):
    """The model table's entry holds what the contract's manifest says the official code does."""
    manifest, _ = contract
    norm, post = manifest["normalization"], manifest["postprocess"]
    assert list(SETTINGS["mean"]) == norm["mean"] and list(SETTINGS["std"]) == norm["std"] and norm["order"] == SETTINGS["channel_order"]
    assert list(SETTINGS["face_classes"]) == post["face_part_ids"] and SETTINGS["mouth_class"] == post["mouth_id"]
    e = post["soft_erosion"]
    assert SETTINGS["soft_erosion"] == {k: e[k] for k in ("kernel_size", "threshold", "iterations")}
    assert SETTINGS["size"] == manifest["size"] and SETTINGS["classes"] == len(manifest["class_names"])


@pytest.mark.parametrize("fill", ["A", "B"])
def test_parsing_golden_forward(contract, parsers, fill):
    """Normalization (bit-exact), the fused head before and after its upsampling, the labels,
    and the masks end to end from our own logits."""
    _, g = contract
    parser = parsers[fill]
    idx = g["sub_idx"].astype(np.int64)
    x = torch.from_numpy(g["x"])
    prepared = parser.prepare(x)
    assert np.array_equal(_sub(prepared.numpy(), idx), g["x_norm_sub"])
    with torch.inference_mode():
        head = parser.engine.module.head(prepared).numpy()
    logits = parser.logits(x)
    got = logits.numpy()
    tol = 1e-6 if fill == "A" else 0.25
    assert np.abs(head - g[f"{fill}_logits64"]).max() <= tol
    assert np.abs(_sub(got, idx) - g[f"{fill}_logits_sub"]).max() <= tol
    if fill == "A":
        assert np.abs(got - g["A_logits_f16"].astype(np.float32)).max() <= 2e-5
    labels = logits.argmax(dim=1)
    agree = float((labels.numpy() == g[f"{fill}_argmax"]).mean())
    assert agree >= 0.9999, agree
    m, gate = parser.official_masks(labels, 224)
    assert gate.all()
    err = np.abs(m.numpy() - g[f"{fill}_mask_224"])
    if agree == 1.0:
        assert err.max() <= 1e-5
    else:  # a few runner-up labels flipped by float32 rounding: bounded as the README grounds it
        assert err.max() <= 1.1e-2 and err.mean() <= 1.3e-4, (err.max(), err.mean())


def test_parsing_golden_224_path(contract, parsers):
    """The official 224 path: normalize at 224, nearest to 512 (row i reads floor(i·224/512)), parse, mask at 224."""
    _, g = contract
    parser = parsers["B"]
    x224 = torch.from_numpy(g["x224"])
    prepared = parser.prepare(x224)
    src = g["nearest_src_idx_224to512"].astype(np.int64)
    assert np.array_equal(src, np.floor(np.arange(512) * 224 / 512).astype(np.int64))
    normalized = (x224 - torch.tensor(SETTINGS["mean"]).view(1, 3, 1, 1)) / torch.tensor(SETTINGS["std"]).view(1, 3, 1, 1)
    assert torch.equal(prepared, normalized[:, :, src][:, :, :, src])
    with torch.inference_mode():
        head = parser.engine.module.head(prepared).numpy()
    assert np.abs(head - g["B_x224_logits64"]).max() <= 0.25
    labels = parser.logits(x224).argmax(dim=1)
    assert float((labels.numpy() == g["B_x224_argmax"]).mean()) >= 0.9999
    m, _ = parser.official_masks(torch.from_numpy(g["B_x224_argmax"].astype(np.int64)), 224)
    assert np.abs(m.numpy() - g["B_x224_mask_224"]).max() <= 1e-5


@pytest.mark.parametrize("labels, size, key", [
    ("A_argmax", 224, "A_mask_224"), ("A_argmax", 512, "A_mask_512"), ("B_argmax", 224, "B_mask_224"),
    ("labels_synth", 224, "mask_synth_224"), ("labels_synth", 512, "mask_synth_512"),
])
def test_parsing_golden_mask_postprocessing(contract, labels, size, key):
    """Labels → SimSwap's soft mask (classes kept, 0/255 map, gate, bilinear resize, per-channel
    scaling, SoftErosion 17/0.9/7), on every class (labels_synth holds all 19)."""
    _, g = contract
    lab = torch.from_numpy(g[labels].astype(np.int64))[: len(g[key])]
    m, gate = FaceParser(None, SETTINGS).official_masks(lab, size)
    assert gate.all() and m.shape == g[key].shape
    assert np.abs(m.numpy() - g[key]).max() <= 1e-5


def test_parsing_golden_mask_drops_what_the_official_mask_drops(contract):
    """Hair, ears, neck, cloth and background are not in the mask; a label map with only those fails the gate."""
    _, g = contract
    lab = torch.from_numpy(g["labels_synth"][:1].astype(np.int64))
    kept = torch.zeros_like(lab, dtype=torch.bool)
    for c in (*SETTINGS["face_classes"], SETTINGS["mouth_class"]):
        kept |= lab == c
    m, gate = FaceParser(None, SETTINGS).official_masks(torch.where(kept, torch.zeros_like(lab), lab), 512)
    assert not gate.any() and m.abs().max() == 0.0


def test_strict_fp32_turns_tf32_off():
    """What the builder does on CUDA (TF32 fails both fills: README), checked here on the flags:
    set, read back, and restored (the GPU tests turn TF32 off around their float32 comparisons)."""
    from engines.torch_engine import set_tf32, tf32

    before = set_tf32(False)
    try:
        assert tf32() == (False, False)
        assert set_tf32(True) == (False, False) and tf32() == (True, True)
    finally:
        set_tf32(*before)
    assert tf32() == before


def test_checkpoint_is_loaded_strictly_and_safely(tmp_path):
    from engines.parsing.bisenet import load_parser

    state = BiSeNet().state_dict()
    torch.save(state, tmp_path / "good.pth")
    assert isinstance(load_parser(str(tmp_path / "good.pth")), BiSeNet)
    missing = dict(state)
    missing.pop("conv_out32.conv_out.weight")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"not the BiSeNet face parser .*missing keys: conv_out32\.conv_out\.weight"):
        load_parser(str(tmp_path / "missing.pth"))
    wrong = {**state, "conv_out.conv_out.weight": torch.zeros(18, 256, 1, 1)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong shapes: conv_out\.conv_out\.weight"):
        load_parser(str(tmp_path / "wrong.pth"))
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html>Google Drive - Virus scan warning</html>")
    with pytest.raises(ValueError, match="not a plain tensor state_dict"):
        load_parser(str(tmp_path / "page.pth"))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a plain tensor state_dict"):
        load_parser(str(tmp_path / "evil.pth"))
    assert not marker.exists()


# ---- the mask in the swap path ---------------------------------------------------------------

class DrawnParser(Engine):
    """A parser whose answer is known: 'skin' inside an ellipse around the template's inner face,
    'hair' everywhere else (one-hot logits). Counts its calls and the faces per call."""

    inputs = (TensorSpec("image", ("N", 3, 512, 512), "float32"),)
    outputs = (TensorSpec("logits", ("N", 19, 512, 512), "float32"),)

    def __init__(self, ellipse=(256, 300, 130, 150)):
        cx, cy, ax, ay = ellipse
        ys, xs = np.mgrid[0:512, 0:512]
        inside = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1
        self.labels = np.where(inside, 1, 17)
        self.calls = []

    def __call__(self, feeds):
        n = len(feeds["image"])
        self.calls.append(n)
        logits = np.zeros((n, 19, 512, 512), np.float32)
        for c in (1, 17):
            logits[:, c][:, self.labels == c] = 1.0
        return {"logits": logits}


def _astronaut_frames():
    from skimage import data

    from pipeline.core.records import Face, Frame, TrackedFrame
    from pipeline.detect.retinaface import RetinaFaceDetector

    img = data.astronaut()
    images = [img.copy(), np.ascontiguousarray(img[:, ::-1])]
    frames = []
    for i, (im, det) in enumerate(zip(images, RetinaFaceDetector().detect(images))):
        face = Face(det.boxes[0], det.landmarks[0], float(det.scores[0]), 1, False, det.boxes[0].copy())
        face.source_id, face.source_latent = "s", np.full(512, 512**-0.5, np.float32)
        frames.append(TrackedFrame(Frame(i, i, 1, im), [face], 1))
    return frames


@pytest.mark.parametrize("path", ["host", "torch"])
def test_parsing_mask_keeps_the_swap_to_the_inner_face(path):
    """One parser call for the batch; the generated face lands inside the parsed face, the hair
    and background inside the crop stay the original's, and each face says the mask was used."""
    from pipeline.anonymize.face_ops import HostFaceOps, TorchFaceOps
    from pipeline.anonymize.swap import FaceSwapper, SwapConfig
    from pipeline.core.alignment import estimate

    ops = HostFaceOps() if path == "host" else TorchFaceOps("cpu")
    drawn = DrawnParser()
    frames = _astronaut_frames()
    before = [tf.frame.image.copy() for tf in frames]
    FaceSwapper(FlatGreen(), config=SwapConfig(size=224), ops=ops, parser=FaceParser(drawn, SETTINGS)).apply_batch(frames)
    assert drawn.calls == [2]
    for tf, orig in zip(frames, before):
        (face,) = tf.faces
        assert face.outcome == "swap" and face.data["parsing_mask"] == USED
        m, _ = estimate(face.landmarks, 224)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))

        def at(x512, y512):  # a point of the 512 parser grid, in frame pixels
            p = inv @ [x512 * 224 / 512, y512 * 224 / 512, 1]
            return int(round(p[1])), int(round(p[0]))

        nose = at(256, 300)
        assert tuple(tf.frame.image[nose]) == (0, 255, 0)
        for corner in ((150, 110), (362, 110)):  # inside the paste core, outside the parsed face: hair
            y, x = at(*corner)
            patch = (slice(y - 2, y + 3), slice(x - 2, x + 3))  # the original, resampled twice (crop, paste)
            assert np.abs(tf.frame.image[patch].astype(int) - orig[patch]).mean() <= 6
            assert np.abs(tf.frame.image[patch].astype(int) - (0, 255, 0)).mean() > 60


def test_a_parser_that_misses_the_inner_face_swaps_the_whole_crop():
    """Our addition to the official recipe: a mask that leaves the eyes, nose or mouth out would
    leave them in the output; the whole crop is swapped instead, and the report can say why."""
    from pipeline.anonymize.swap import FaceSwapper, SwapConfig

    frames = _astronaut_frames()[:1]
    small = DrawnParser(ellipse=(256, 400, 40, 30))  # only the chin
    FaceSwapper(FlatGreen(), config=SwapConfig(size=224), parser=FaceParser(small, SETTINGS)).apply_batch(frames)
    assert frames[0].faces[0].data["parsing_mask"] == INNER_FACE
    nobody = DrawnParser(ellipse=(256, 300, 1, 1))
    frames = _astronaut_frames()[:1]
    FaceSwapper(FlatGreen(), config=SwapConfig(size=224), parser=FaceParser(nobody, SETTINGS)).apply_batch(frames)
    assert frames[0].faces[0].data["parsing_mask"] == GATE


def test_filled_parser_runs_on_both_paths_alike(parsers):
    """The real network in the swap path (fill B): the host and device paths give the same masks."""
    from pipeline.anonymize.face_ops import HostFaceOps, TorchFaceOps
    from pipeline.anonymize.swap import FaceSwapper, SwapConfig

    outs, reasons = [], []
    for ops in (HostFaceOps(), TorchFaceOps("cpu")):
        frames = _astronaut_frames()
        FaceSwapper(FlatGreen(), config=SwapConfig(size=224), ops=ops, parser=parsers["B"]).apply_batch(frames)
        outs.append(np.stack([tf.frame.image for tf in frames]).astype(int))
        reasons.append([tf.faces[0].data["parsing_mask"] for tf in frames])
    assert reasons[0] == reasons[1] == [USED, USED], reasons
    diff = np.abs(outs[0] - outs[1])
    assert (diff > 1).mean() < 1e-3, (diff > 1).mean()
