"""SimSwap's ArcFace: our architecture, the restricted loader of the pickled whole model, latents."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SimSwap engine needs torch (pip install torch==2.13.0)")

from engines.simswap import arcface  # noqa: E402
from engines.simswap import ArcFaceResNet, UnsafeCheckpointError, latent_from_crops, load_arcface_checkpoint  # noqa: E402
from simswap_kit import ArcMarginModel, official_names  # noqa: E402

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


@pytest.mark.parametrize("layout", ["zip", "legacy", "pre-2023", "pre-2023 legacy"])
def test_pickled_whole_model_loads_into_our_class(small_model, tmp_path, layout):
    """Today's file is the pickled ResNet; the pre-2023 one is a training checkpoint: {'epoch',
    'epochs_since_improvement', 'acc', 'model': DataParallel(ResNet), 'metric_fc':
    DataParallel(ArcMarginModel), 'optimizer': SGD over both}, all under `models.*` class paths
    (SimSwap read it as `checkpoint['model'].module`). Both formats of torch.save."""
    import copy

    path = tmp_path / "arcface_checkpoint.tar"
    legacy = "legacy" in layout
    margin = ArcMarginModel()
    small_model = copy.deepcopy(small_model)
    with official_names(margin):
        obj = small_model
        if layout.startswith("pre-2023"):
            opt = torch.optim.SGD([{"params": small_model.parameters()}, {"params": margin.parameters()}], lr=0.1, momentum=0.9)
            small_model(torch.rand(2, 3, 112, 112)).sum().backward()  # momentum buffers in the optimizer state
            margin.weight.grad = torch.ones_like(margin.weight)
            opt.step()
            opt.zero_grad()
            small_model.eval()
            obj = {"epoch": 3, "epochs_since_improvement": 0, "acc": 0.99, "model": torch.nn.DataParallel(small_model),
                   "metric_fc": torch.nn.DataParallel(margin), "optimizer": opt}
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


# ---- the identity latent per generator size, against SimSwap's recipe on the golden frame ------

@pytest.fixture(scope="module")
def filled_arcface():
    """The official IR-SE-101 under a deterministic fill: the contracts' rule (seed 1234, state_dict
    order) plus 1.0 on the BatchNorm weights, as the face-parsing contract's fill B does. With the
    plain rule every input gives the same latent (BatchNorm gammas ~ N(0, 0.05) silence the
    signal) and the test could not tell one crop from another; with PReLU slopes near 1 too, the
    101 layers amplify float rounding into 0.08 of latent."""
    from simswap_kit import contract_fill, layout_of

    model = ArcFaceResNet()
    bn = {f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)}
    model.load_state_dict(contract_fill(layout_of(model), 1234, bn_weight_offset=1.0, bn_weights=bn), strict=True)
    return model.eval()


def _official_latent(model, crop_rgb01: np.ndarray) -> np.ndarray:
    """SimSwap's test scripts, written out: ToTensor (RGB [0, 1]) → Normalize(ImageNet) →
    F.interpolate(size=(112, 112)) (default nearest) → netArc → F.normalize."""
    x = torch.from_numpy(crop_rgb01)[None]
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(3, 1, 1)
    x = torch.nn.functional.interpolate(x.sub(mean).div(std), size=(112, 112))
    with torch.no_grad():
        return torch.nn.functional.normalize(model(x), p=2, dim=1)[0].numpy()


class _GivenLandmarks:
    """A detector that returns the golden landmarks (as the official run's fixed detector did)."""

    def __init__(self, golden):
        from pipeline.core.records import Detections

        self.dets = Detections(golden["boxes"][:, :4].copy(), golden["boxes"][:, 4].copy(), golden["landmarks"].copy())

    def detect(self, images):
        return [self.dets for _ in images]


def test_latent_golden_gallery_latents_per_size(filled_arcface, tmp_path):
    """`gallery build` stores, per identity, the latent SimSwap's inference would give each
    generator: from the 224 pose-template crop, and from the FFHQ 512 crop resized to 112.
    Checked against that recipe on the golden frame's crops (the official ones, bit for bit)."""
    import cv2

    from conftest import SHARED
    from pipeline.core.errors import InvalidInputError
    from pipeline.identity.gallery import SourceGallery

    golden = {}
    for size in (224, 512):
        path = SHARED / "golden" / f"simswap_e2e_{size}.npz"
        if not path.exists():
            pytest.skip(f"needs the golden contract in ../shared ({path} not found)")
        golden[size] = dict(np.load(path))
    official = {size: _official_latent(filled_arcface, golden[size]["crops"][0]) for size in (224, 512)}
    assert np.abs(official[224] - official[512]).max() > 1e-3, "the two framings must give latents the test tells apart"

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astro.png"), golden[224]["frame"][..., ::-1])  # lossless, read back as SimSwap reads a photo
    g = SourceGallery.build(str(photos), _GivenLandmarks(golden[224]), [], latent_fn=lambda c: latent_from_crops(filled_arcface, c))
    (src,) = g.sources
    assert np.array_equal(g.crops_512[0], (golden[512]["crops"][0].transpose(1, 2, 0) * 255).round().astype(np.uint8))
    for size in (224, 512):
        np.testing.assert_allclose(src.latents[size], official[size], atol=1e-5)

    g.save(str(tmp_path / "g.npz"))
    loaded = SourceGallery.load(str(tmp_path / "g.npz"))
    assert loaded.latent_model == "simswap-arcface" and np.array_equal(loaded.crops_512, g.crops_512)
    np.testing.assert_array_equal(loaded.sources[0].latent, src.latents[224])  # 224 unless told otherwise
    loaded.use_size(512)
    np.testing.assert_array_equal(loaded.sources[0].latent, src.latents[512])

    # A gallery without latents gets them at run time, from the crops of the swap size.
    bare = SourceGallery.load(str(tmp_path / "g.npz"))
    for s in bare.sources:
        s.latents.clear()
    bare.use_size(512).fill_latents(lambda c: latent_from_crops(filled_arcface, c))
    np.testing.assert_allclose(bare.sources[0].latent, official[512], atol=1e-5)
    # One built before the 512 crops were stored cannot give a 512 latent, and says what to do.
    old = SourceGallery(bare.sources, bare.crops, None)
    for s in old.sources:
        s.latents.clear()
    with pytest.raises(InvalidInputError, match="no 512 crops.*rebuild it"):
        old.use_size(512).fill_latents(lambda c: latent_from_crops(filled_arcface, c))
