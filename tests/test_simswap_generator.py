"""SimSwap generator: the official checkpoint layout and outputs (golden contract), loading, ONNX."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SimSwap engine needs torch (pip install torch==2.13.0)")

from conftest import SHARED  # noqa: E402
from engines.simswap import SimSwapGenerator, export_onnx, load_generator  # noqa: E402
from simswap_kit import contract_fill  # noqa: E402

GOLDEN = SHARED / "golden"


def _golden(variant):
    manifest = GOLDEN / "simswap_generator_manifest.json"
    if not manifest.exists():
        pytest.skip(f"needs the golden contract in ../shared ({manifest} not found)")
    return json.loads(manifest.read_text())[f"simswap_{variant}"], np.load(GOLDEN / f"simswap_{variant}_golden.npz")


def _fill(spec):
    """The contract's deterministic fill, in the manifest's order."""
    return contract_fill(spec["state_dict"], spec["fill_seed"])


@pytest.mark.parametrize("variant", ["224", "512"])
def test_state_dict_layout_is_the_official_one(variant):
    spec, _ = _golden(variant)
    ours = [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in SimSwapGenerator(variant).state_dict().items()]
    assert ours == spec["state_dict"]


@pytest.mark.parametrize("variant", ["224", "512"])
def test_golden_outputs_are_reproduced(variant, tmp_path):
    spec, gold = _golden(variant)
    state = _fill(spec)
    assert sum(float(t.double().sum()) for t in state.values() if t.is_floating_point()) == pytest.approx(spec["param_sum"], abs=1e-6)
    path = tmp_path / "net_G.pth"
    torch.save(state, path)  # through the real loading path, as an official file would go
    model = load_generator(str(path), variant)
    with torch.no_grad():
        y = model(torch.from_numpy(gold["x"]), torch.from_numpy(gold["latent"])).numpy()
    assert y.shape == gold["y"].shape
    assert np.abs(y - gold["y"]).max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_instance_norm_holds_large_activations_and_flat_channels_in_half_precision(dtype):
    """Random-weight generators never reach it: trained ones put bottleneck activations past
    |x| = 256, where float16's x·x overflows, and a flat channel gives 0 · rsqrt(0 + eps), NaN
    once eps 1e-8 rounds to 0 in float16."""
    from engines.simswap.generator import InstanceNorm

    torch.manual_seed(0)
    x = torch.randn(2, 4, 14, 14) * 900 + 300
    x[0, 1] = 512.0  # a flat channel
    norm = InstanceNorm()
    want = norm(x)
    got = norm(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - want).abs().max() <= 0.05
    assert (got[0, 1] == 0).all()
    assert torch.equal(norm(x), want), "float32 is the official arithmetic, unchanged"


def test_checkpoint_problems_are_named(tmp_path):
    model = SimSwapGenerator("224")
    state = model.state_dict()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    loaded = load_generator(str(good), "224")
    x, z = torch.rand(1, 3, 224, 224), torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    with torch.no_grad():
        assert torch.equal(loaded(x, z), model.eval()(x, z))

    missing = dict(state)
    missing.pop("BottleNeck.3.style1.linear.weight")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing keys: BottleNeck\.3\.style1\.linear\.weight"):
        load_generator(str(tmp_path / "missing.pth"), "224")

    with pytest.raises(ValueError, match=r"wrong shapes: first_layer\.1\.weight: expected \(32, 3, 7, 7\), found \(64, 3, 7, 7\)"):
        load_generator(str(good), "512")  # a 224 checkpoint is not a 512 one

    marker = tmp_path / "pwned"

    class Payload:  # a pickle that would run code (create a file) is refused, not executed
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a plain tensor state_dict") as refused:
        load_generator(str(tmp_path / "evil.pth"), "224")
    assert not marker.exists()
    # torch's own message advises loading with weights_only=False, which would run the payload
    assert "weights_only" not in str(refused.value) and "pickled Python objects" in str(refused.value)


def test_onnx_export_runs_in_onnxruntime_with_any_batch(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    torch.manual_seed(0)
    model = SimSwapGenerator("224").eval()
    path = export_onnx(model, str(tmp_path / "simswap_224.onnx"))
    engine = OnnxRuntimeEngine(path)
    assert [i.name for i in engine.inputs] == ["image", "latent"]
    x = torch.rand(3, 3, 224, 224)  # a batch size the export never saw
    z = torch.nn.functional.normalize(torch.randn(3, 512), dim=1)
    with torch.no_grad():
        expected = model(x, z).numpy()
    got = engine({"image": x.numpy(), "latent": z.numpy()})["output"]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-3
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
