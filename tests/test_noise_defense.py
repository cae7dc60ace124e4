"""`--defense-noise EPS`: bounded uniform noise on swapped faces only (pipeline/anonymize/noise_defense.py)."""

import math

import numpy as np
import pytest
from skimage import data

from conftest import run_cli
from pipeline.core.alignment import align
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.anonymize.noise_defense import UniformNoise, add_uniform_noise, check_eps
from pipeline.anonymize.paste_back import paste_back
from pipeline.core.records import Face, Frame, TrackedFrame
from pipeline.anonymize.swap import FaceSwapper, SwapConfig
from simswap_kit import frame_alpha

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


def _alpha_in_frame(matrix, shape):
    """The paste-back mask of one face over the whole frame."""
    return frame_alpha(matrix, 224, shape[:2])


@pytest.mark.parametrize("bad", [-0.5, 64.01, float("nan"), float("inf"), "four", None])
def test_bad_eps_is_refused(bad):
    with pytest.raises(ValueError, match=r"--defense-noise\) must be"):
        check_eps(bad)
    with pytest.raises(ValueError, match=r"--defense-noise\) must be"):
        SwapConfig(defense_noise=bad)


@pytest.mark.parametrize("eps", [0.7, 2.0, 4.5, 16.0, 64.0])
def test_noise_is_bounded_confined_to_alpha_and_clipped(eps):
    rng = np.random.default_rng(1)
    roi = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    roi[:10] = 255  # saturated rows: clipping, not wrap-around
    roi[10:20] = 0
    alpha = np.zeros((60, 80), np.float32)
    alpha[:, 20:60] = 1.0
    alpha[:, 60:70] = np.linspace(0.9, 0.01, 10, dtype=np.float32)  # the feathered edge
    clean = roi.copy()
    add_uniform_noise(roi, alpha, eps, np.random.default_rng(2))
    assert roi.dtype == np.uint8
    diff = roi.astype(int) - clean
    assert np.abs(diff).max() <= math.ceil(eps)
    assert not diff[alpha == 0].any(), "pixels outside the pasted area must be bit-exact"
    core = alpha == 1
    # U(-eps, eps) rounds to 0 with probability min(1, 0.5/eps); saturated pixels lose half of their moves
    expected = 1 - min(1.0, 0.5 / eps)
    assert (diff[core] != 0).mean() > 0.6 * expected
    assert (diff[:10][core[:10]] <= 0).all() and (diff[10:20][core[10:20]] >= 0).all()
    # scaled by alpha: the feathered edge moves less than the core
    assert np.abs(diff[:, 65:70]).mean() < np.abs(diff[:, 20:60]).mean()


def test_seeded_noise_repeats_and_unseeded_does_not():
    roi = np.full((32, 32, 3), 128, np.uint8)
    alpha = np.ones((32, 32), np.float32)
    a, b, c, d = (roi.copy() for _ in range(4))
    UniformNoise(8, np.random.default_rng(5))(a, alpha)
    UniformNoise(8, np.random.default_rng(5))(b, alpha)
    UniformNoise(8)(c, alpha)
    UniformNoise(8)(d, alpha)
    assert np.array_equal(a, b)
    assert not np.array_equal(c, d)


@pytest.fixture(scope="module")
def astronaut():
    img = data.astronaut()
    return img, RetinaFaceDetector().detect([img])[0].landmarks


def test_paste_back_noise_only_where_the_crop_was_pasted(astronaut):
    img, lms = astronaut
    batch = align([img], [lms], 224)
    crop = np.full((224, 224, 3), (90, 160, 60), np.uint8)
    clean, zero, noisy = img.copy(), img.copy(), img.copy()
    roi = paste_back(clean, crop, batch.matrices[0])
    assert paste_back(zero, crop, batch.matrices[0], noise=UniformNoise(0, np.random.default_rng(0))) == roi
    assert paste_back(noisy, crop, batch.matrices[0], noise=UniformNoise(6, np.random.default_rng(0))) == roi
    assert np.array_equal(zero, clean)
    alpha = _alpha_in_frame(batch.matrices[0], img.shape)
    diff = noisy.astype(int) - clean
    assert np.abs(diff).max() <= 6
    assert not diff[alpha == 0].any()
    assert (diff[alpha >= 0.999] != 0).mean() > 0.8  # 1 - 0.5/6 ≈ 0.92 expected


# --- FaceSwapper with a generated-weights SimSwap generator -----------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    pytest.importorskip("torch", reason="swap mode needs torch (pip install torch==2.13.0)")
    from engines import load
    from simswap_kit import make_swap_kit

    gen, _, _ = make_swap_kit(tmp_path_factory.mktemp("kit"))
    real = load("simswap-224", "torch", path=str(gen))
    cache = {}

    def cached(inputs):
        """The generator is deterministic; each distinct batch runs once (0.5 s a face on CPU)."""
        key = (inputs["image"].tobytes(), inputs["latent"].tobytes())
        if key not in cache:
            cache[key] = real(inputs)
        return {k: v.copy() for k, v in cache[key].items()}

    return cached


@pytest.fixture(scope="module")
def two_faces():
    """The astronaut twice, side by side: two faces on one frame."""
    img = np.ascontiguousarray(np.concatenate([data.astronaut(), data.astronaut()], axis=1))
    det = RetinaFaceDetector().detect([img])[0]
    assert len(det) == 2
    order = np.argsort(det.boxes[:, 0])
    return img, det.boxes[order], det.landmarks[order]


def _frames(img, boxes, landmarks, *, blur_right):
    z = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    faces = []
    for i in range(2):
        track_id = None if (blur_right and i == 1) else i + 1  # unconfirmed → blur:unconfirmed
        face = Face(boxes[i].copy(), landmarks[i].copy(), 0.99, track_id, False, boxes[i].copy())
        face.source_id, face.source_latent = "s", z / np.linalg.norm(z)
        faces.append(face)
    return [TrackedFrame(Frame(0, 0, 1, img.copy()), faces, 2)]


def _run(engine, frames, eps, seed=0):
    FaceSwapper(engine, config=SwapConfig(defense_noise=eps), rng=np.random.default_rng(seed)).apply_batch(frames)
    return frames[0].frame.image


def test_eps_zero_is_the_noise_free_swap(engine, two_faces):
    img, boxes, lms = two_faces
    before = _frames(img, boxes, lms, blur_right=True)
    FaceSwapper(engine).apply_batch(before)  # the default config: no noise at all
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    after = _frames(img, boxes, lms, blur_right=True)
    FaceSwapper(engine, config=SwapConfig(defense_noise=0), rng=rng).apply_batch(after)
    assert [f.outcome for f in after[0].faces] == ["swap", "blur:unconfirmed"]
    assert np.array_equal(after[0].frame.image, before[0].frame.image)
    assert rng.bit_generator.state == state  # no noise drawn
    assert not np.array_equal(after[0].frame.image, img)


def test_noise_on_swapped_face_bounded_and_nowhere_else(engine, two_faces):
    img, boxes, lms = two_faces
    eps = 4.0
    clean = _run(engine, _frames(img, boxes, lms, blur_right=False), 0)
    frames = _frames(img, boxes, lms, blur_right=False)
    noisy = _run(engine, frames, eps)
    assert [f.outcome for f in frames[0].faces] == ["swap", "swap"]
    alpha = sum(_alpha_in_frame(m, img.shape) for m in align([img], [lms], 224).matrices)
    diff = noisy.astype(int) - clean
    assert np.abs(diff).max() <= math.ceil(eps)
    assert not diff[alpha == 0].any(), "outside the swapped faces the frame must be bit-exact"
    for half in (slice(0, 512), slice(512, 1024)):  # both faces got noise
        core = alpha[:, half] >= 1
        assert core.sum() > 5000
        assert (diff[:, half][core] != 0).mean() > 0.6  # 1 - 0.5/4 = 0.875 expected, less where clipped
    assert not np.array_equal(_run(engine, _frames(img, boxes, lms, blur_right=False), eps, seed=1), noisy)


def test_blurred_fallback_faces_get_no_noise(engine, two_faces):
    img, boxes, lms = two_faces
    clean = _run(engine, _frames(img, boxes, lms, blur_right=True), 0)
    frames = _frames(img, boxes, lms, blur_right=True)
    noisy = _run(engine, frames, 16)
    assert [f.outcome for f in frames[0].faces] == ["swap", "blur:unconfirmed"]
    x1, y1, x2, y2 = boxes[1].astype(int)
    assert np.abs(noisy[y1:y2, x1:x2].astype(int) - img[y1:y2, x1:x2]).mean() > 5, "the right face is blurred"
    assert np.array_equal(noisy[:, 512:], clean[:, 512:]), "the blurred face is bit-exact with and without noise"
    assert np.abs(noisy[:, :512].astype(int) - clean[:, :512]).max() > 8  # the swapped one is not


@pytest.mark.parametrize("value", ["100", "-1", "nan"])
def test_bad_eps_on_the_command_line_is_a_one_line_error(synthetic, tmp_path, value):
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--defense-noise", value)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: defense noise (--defense-noise) must be in [0, 64]")
    assert not (tmp_path / "o.mp4").exists()
