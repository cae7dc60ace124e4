"""The torch engine's GPU settings (half precision, channels_last) and its tensor path, checked on CPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch (pip install torch==2.13.0)")

from engines.torch_engine import TorchEngine  # noqa: E402


class Net(torch.nn.Module):
    """Conv + instance norm + a latent modulation: the operations SimSwap's generator is made of."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.InstanceNorm2d(8)
        self.style = torch.nn.Linear(16, 8)
        self.out = torch.nn.Conv2d(8, 3, 1)

    def forward(self, image, latent):
        x = self.norm(self.conv(image)) * (1 + self.style(latent)[:, :, None, None])
        return torch.sigmoid(self.out(torch.relu(x)))


def feeds():
    rng = np.random.default_rng(0)
    return {"image": rng.random((3, 3, 32, 32), dtype=np.float32), "latent": rng.standard_normal((3, 16)).astype(np.float32)}


def test_settings_change_only_rounding():
    ref = TorchEngine(Net(), ("image", "latent"), ("output",))(feeds())["output"]
    nhwc = TorchEngine(Net(), ("image", "latent"), ("output",), channels_last=True)(feeds())["output"]
    bf16 = TorchEngine(Net(), ("image", "latent"), ("output",), dtype="bfloat16")(feeds())["output"]
    assert nhwc.dtype == np.float32 and bf16.dtype == np.float32  # callers never see the precision
    assert np.abs(nhwc - ref).max() < 1e-5
    d = np.abs(bf16 - ref)
    assert 0 < d.max() < 0.05  # bf16 really ran (not a silent fp32), and stayed close


def test_tensor_path_stays_on_tensors_and_matches_arrays():
    engine = TorchEngine(Net(), ("image", "latent"), ("output",))
    f = feeds()
    out = engine.run_tensors({k: torch.from_numpy(v) for k, v in f.items()})["output"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), engine(f)["output"], atol=1e-6)
    with pytest.raises(ValueError, match="expects inputs"):
        engine.run_tensors({"image": torch.zeros(1, 3, 8, 8)})


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float16"):
        TorchEngine(Net(), ("image", "latent"), ("output",), dtype="int8")
