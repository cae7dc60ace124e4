"""SimSwap's ArcFace: our architecture, the restricted loader of the pickled whole model, latents."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SimSwap engine needs torch (pip install torch==2.13.0)")

from engines.simswap import arcface  # noqa: E402
from engines.simswap import ArcFaceResNet, UnsafeCheckpointError, latent_from_crops, load_arcface_checkpoint  # noqa: E402
from simswap_kit import official_names  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


@pytest.fixture(scope="module")
def small_model():
    """A shallow network of the official design with non-trivial weights and BN statistics."""
    torch.manual_seed(0)
    m = ArcFaceResNet(layers=(1, 2, 1, 1))
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_official_layer_counts_build_the_ir_se_101():
    m = ArcFaceResNet()
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert m.fc.in_features == 512 * 7 * 7 and m.bn3.num_features == 512


@pytest.mark.parametrize("layout", ["zip", "legacy", "dataparallel+optimizer", "dataparallel+optimizer legacy"])
def test_pickled_whole_model_loads_into_our_class(small_model, tmp_path, layout):
    path = tmp_path / "arcface_checkpoint.tar"
    legacy = "legacy" in layout
    with official_names():
        obj = small_model
        if layout.startswith("dataparallel"):
            opt = torch.optim.SGD(small_model.parameters(), lr=0.1, momentum=0.9)
            obj = {"epoch": 3, "model": torch.nn.DataParallel(small_model), "optimizer": opt}
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_arcface_checkpoint(str(path))
    assert type(loaded) is ArcFaceResNet
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), small_model(x))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.tar"
    torch.save({"model": _RunsCode(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to (posix|os)\.system, which is not allowed"):
        load_arcface_checkpoint(str(path))
    assert not marker.exists()


def test_other_networks_and_garbage_are_refused(tmp_path):
    lstm = tmp_path / "lstm.tar"
    torch.save(torch.nn.LSTM(4, 4), lstm)
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.rnn\.LSTM"):
        load_arcface_checkpoint(str(lstm))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x80\x02not really a checkpoint")
    with pytest.raises(UnsafeCheckpointError):
        load_arcface_checkpoint(str(junk))


def test_latent_preprocessing_is_simswaps(small_model):
    """ImageNet-normalized RGB in [0, 1], 224 → 112 by nearest (every other pixel), L2-normalized."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    z = latent_from_crops(small_model, crops)
    assert z.shape == (3, 512) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(arcface.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(arcface.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(small_model(x[:, :, ::2, ::2]), dim=1).numpy()
    np.testing.assert_allclose(z, ref, atol=1e-5)
