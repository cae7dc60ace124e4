"""The device data path (pipeline.anonymize.torch_faces, face_ops.TorchFaceOps) against the host OpenCV path.

Run here on CPU tensors: the same code runs on CUDA tensors in the GPU path, and what these
tests pin down (sampling conventions, frame borders in the stacked batch, ROI placement,
blend order, fail-closed fallbacks) does not depend on the device.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the device data path needs torch (pip install torch==2.13.0)")

from skimage import data  # noqa: E402

from conftest import assert_like_opencv  # noqa: E402

from pipeline.anonymize import torch_faces  # noqa: E402
from pipeline.core.alignment import align, fit_all  # noqa: E402
from pipeline.anonymize.cover import FaceCover, face_region  # noqa: E402
from pipeline.anonymize.face_ops import HostFaceOps, TorchFaceOps  # noqa: E402
from pipeline.anonymize.paste_back import paste_back  # noqa: E402
from pipeline.core.records import Face, Frame, TrackedFrame  # noqa: E402
from pipeline.device.transfer import Transfer  # noqa: E402
from simswap_kit import frame_alpha  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")

transfer = Transfer("cpu")  # the run's host<->device copies (TorchFaceOps.load / store), on CPU tensors

FRONTAL_112 = np.array([[39.73, 51.14], [72.27, 51.14], [56.0, 68.49], [42.46, 87.01], [69.54, 87.01]], np.float32)


def landmarks(scale, dx, dy, angle):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)
    return ((FRONTAL_112 - 56) @ rot.T + 56) * scale + np.array([dx, dy], np.float32)


def batch_frames():
    img = data.astronaut()
    return [np.ascontiguousarray(img), np.ascontiguousarray(img[::-1]), np.ascontiguousarray(np.roll(img, 100, axis=1))]


# Inside the frame, across the left edge, across the bottom edge (into where the next frame
# lies in the stacked batch), across the top edge (into the previous frame's).
PLACES = [(2.0, 150, 50, 0.1), (1.0, -30, 10, -0.3), (3.0, 300, 400, 0.5), (1.5, 420, -60, 0.0)]


def test_batched_crops_match_opencv_warps():
    frames = batch_frames()
    lms = [np.stack([landmarks(*p) for p in PLACES]) for _ in frames]
    host = align(frames, lms, 224)
    dev = torch_faces.warp_crops(transfer.upload(frames), host.frame_index, host.matrices, 224)
    assert dev.shape == (12, 3, 224, 224)
    # OpenCV's positions, integer weights and rounding: the very bytes warpAffine gives
    assert_like_opencv(np.abs(dev.permute(0, 2, 3, 1).numpy() * 255 - host.crops.astype(np.float32)).round())


def test_crops_never_read_the_neighbouring_frame():
    """Frames are stacked into one tall image for the single grid_sample: outside a frame must be black, as OpenCV pads."""
    dark, bright = np.zeros((120, 160, 3), np.uint8), np.full((120, 160, 3), 255, np.uint8)
    frames = [bright, dark, bright]
    # A face on the dark middle frame hanging far over its top and bottom edges.
    lms = [np.zeros((0, 5, 2)), landmarks(1.6, 30, -30, 0.0)[None], np.zeros((0, 5, 2))]
    fits = fit_all(lms, 224)
    crops = torch_faces.warp_crops(transfer.upload(frames), fits.frame_index, fits.matrices, 224)
    assert crops.abs().max().item() == 0.0
    # And a bright frame next to dark ones gives a crop that is bright inside the frame, black outside it.
    lms = [np.zeros((0, 5, 2)), np.zeros((0, 5, 2)), landmarks(1.6, 30, -30, 0.0)[None]]
    fits = fit_all(lms, 224)
    crops = torch_faces.warp_crops(transfer.upload([dark, dark, bright]), fits.frame_index, fits.matrices, 224)
    ref = align([dark, dark, bright], lms, 224).crops[0].astype(np.float32) / 255
    assert np.abs(crops[0].permute(1, 2, 0).numpy() - ref).max() < 0.03
    assert 0.1 < ref.mean() < 0.9  # the check above saw both sides of the border


def test_batched_paste_back_matches_opencv():
    frames = batch_frames()
    lms = [np.stack([landmarks(*p) for p in PLACES]) for _ in frames]
    fits = align(frames, lms, 224)
    generated = np.ascontiguousarray(255 - fits.crops)  # a "swap" that differs everywhere
    host = [f.copy() for f in frames]
    for crop, fi, m in zip(generated, fits.frame_index, fits.matrices):
        paste_back(host[fi], crop, m)
    dev = transfer.upload(frames)
    torch_faces.paste_crops(dev, torch.from_numpy(generated).permute(0, 3, 1, 2).float() / 255, fits.frame_index, fits.matrices)
    out = [f.copy() for f in frames]
    transfer.download(dev, out)
    diff = np.abs(np.stack(out).astype(int) - np.stack(host))
    changed = np.stack(host) != np.stack(frames)
    assert changed.mean() > 0.1  # the paste did something, on every frame
    assert all(changed[i].any() for i in range(3))
    # Same sample positions, OpenCV's weights, float64 masks: equal but for a rare last-bit flip
    # of the truncation (the blur sums in another order).
    assert_like_opencv(diff, max_diff=1, frac=1e-4)


@pytest.mark.parametrize("size", [224, 512])
def test_batched_paste_is_the_official_full_frame_paste(size):
    """All faces in one call, each in its ROI, against SimSwap's whole-frame computation: faces
    inside the frame and across each of its edges, so the batched erosion and blur meet the
    frame borders the way OpenCV's do; a small face takes the small-face mask."""
    from simswap_kit import face_at, official_full_frame

    rng = np.random.default_rng(size)
    frame = rng.integers(0, 256, (400, 640, 3), dtype=np.uint8)
    places = [(300, 0, (320, 200)), (260, 17, (60, 120)), (250, -30, (600, 300)), (420, 45, (300, 20)), (240, 5, (330, 390))]
    mats = np.stack([face_at(size, *p) for p in places])
    crops = np.stack([np.roll(data.astronaut(), 37 * i, axis=1)[:size, :size] for i in range(len(mats))]).astype(np.float32) / 255
    for i, m in enumerate(mats):  # one face at a time: official composites in float64, we truncate per face
        ref, _ = official_full_frame(frame, [crops[i]], [m])
        dev = transfer.upload([frame])
        torch_faces.paste_crops(dev, torch.from_numpy(crops[i : i + 1]).permute(0, 3, 1, 2), [0], m[None])
        assert_like_opencv(np.abs(dev[0].numpy().astype(int) - ref), max_diff=1, frac=1e-4)
    # the batch: all faces in one call equals pasting them one by one on the host, in order
    host = frame.copy()
    for i, m in enumerate(mats):
        paste_back(host, crops[i], m)
    dev = transfer.upload([frame])
    torch_faces.paste_crops(dev, torch.from_numpy(crops).permute(0, 3, 1, 2), np.zeros(len(mats), int), mats)
    assert_like_opencv(np.abs(dev[0].numpy().astype(int) - host), max_diff=1, frac=1.0)
    small = face_at(size, 60, 10, (500, 100))
    dev = transfer.upload([frame])
    torch_faces.paste_crops(dev, torch.from_numpy(crops[:1]).permute(0, 3, 1, 2), [0], small[None])
    host = frame.copy()
    paste_back(host, crops[0], small)
    assert (host != frame).any()
    assert_like_opencv(np.abs(dev[0].numpy().astype(int) - host), max_diff=1, frac=1.0)


def test_defense_noise_on_the_device_stays_inside_the_pasted_face():
    frames = batch_frames()[:1]
    fits = align(frames, [landmarks(2.0, 150, 50, 0.1)[None]], 224)
    crops = torch.from_numpy(255 - fits.crops).permute(0, 3, 1, 2).float() / 255

    def pasted(eps, seed):
        dev = transfer.upload(frames)
        g = torch.Generator().manual_seed(seed)
        roi = torch_faces.paste_crops(dev, crops, fits.frame_index, fits.matrices, noise_eps=eps, generator=g)[0]
        return dev[0].numpy().astype(int), roi

    clean, (x0, y0, x1, y1) = pasted(0.0, 0)
    noisy, _ = pasted(6.0, 0)
    other, _ = pasted(6.0, 1)
    d = np.abs(noisy - clean)
    core = frame_alpha(fits.matrices[0], 224, frames[0].shape[:2]) >= 0.999
    assert d.max() <= 6 and d[core].mean() > 1.0
    outside = np.ones(d.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert d[outside].max() == 0
    assert (noisy != other).any()  # a different draw: the noise is not a fixed pattern


@pytest.mark.parametrize("mode", ["blur", "pixelate", "mask"])
def test_cover_matches_the_host_cover(mode):
    frames = batch_frames()
    boxes = [np.array(b, np.float32) for b in ([170, 60, 300, 230], [400, 300, 500, 420], [-20, -30, 60, 80], [480, 470, 530, 540])]
    items = [(fi, b) for fi in range(len(frames)) for b in boxes]
    cover = FaceCover(mode)
    host = [f.copy() for f in frames]
    for fi, b in items:
        cover.cover(host[fi], b)
    dev = transfer.upload(frames)
    torch_faces.cover_faces(dev, items, mode)
    out = [f.copy() for f in frames]
    transfer.download(dev, out)
    diff = np.abs(np.stack(out).astype(int) - np.stack(host))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 12, (diff.mean(), diff.max())
    # Whatever the small differences, the face itself is gone on the device path too.
    r = face_region(boxes[0], frames[0].shape[:2])
    core = (slice(r.y0 + (r.y1 - r.y0) // 3, r.y1 - (r.y1 - r.y0) // 3), slice(r.x0 + (r.x1 - r.x0) // 3, r.x1 - (r.x1 - r.x0) // 3))
    assert np.abs(out[0][core].astype(int) - frames[0][core]).mean() > 10


def detected_frames():
    from pipeline.detect.retinaface import RetinaFaceDetector

    img = data.astronaut()
    images = [img.copy(), np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(np.roll(img, (40, -60), axis=(0, 1)))]
    dets = RetinaFaceDetector().detect(images)
    z = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    frames = []
    for i, (im, det) in enumerate(zip(images, dets)):
        assert len(det) >= 1
        face = Face(det.boxes[0], det.landmarks[0], float(det.scores[0]), 1, False, det.boxes[0].copy())
        face.source_id, face.source_latent = "s", z[i] / np.linalg.norm(z[i])
        frames.append(TrackedFrame(Frame(i, i, 1, im), [face], 1))
    # A face too small to swap: blurred by the fallback on the same batch.
    small = Face(np.array([10, 10, 30, 30], np.float32), landmarks(0.2, 10, 10, 0.0), 0.9, 2, False, np.array([10, 10, 30, 30], np.float32))
    small.source_id, small.source_latent = "s", frames[0].faces[0].source_latent
    frames[0].faces.append(small)
    return frames


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from engines import load
    from simswap_kit import make_swap_kit

    gen, _, _ = make_swap_kit(tmp_path_factory.mktemp("kit"))
    return gen, load("simswap-224", "torch", path=str(gen))


def swap_with(ops, engine, defense_noise=0.0):
    from pipeline.anonymize.swap import FaceSwapper, SwapConfig

    frames = detected_frames()
    before = [tf.frame.image.copy() for tf in frames]
    FaceSwapper(engine, config=SwapConfig(defense_noise=defense_noise), rng=np.random.default_rng(0), ops=ops).apply_batch(frames)
    return frames, before


def test_swapper_on_the_device_path_matches_the_host_path(generator):
    """Same faces swapped, same fallbacks, pixels within rounding: the contract the GPU path is held to."""
    _, engine = generator
    host, before = swap_with(HostFaceOps(), engine)
    dev, _ = swap_with(TorchFaceOps("cpu"), engine)
    assert [[f.outcome for f in tf.faces] for tf in dev] == [[f.outcome for f in tf.faces] for tf in host]
    assert [f.outcome for f in host[0].faces] == ["swap", "blur:too_small"]
    a = np.stack([tf.frame.image for tf in dev]).astype(int)
    b = np.stack([tf.frame.image for tf in host]).astype(int)
    changed = b != np.stack(before)
    assert changed.mean() > 0.01
    diff = np.abs(a - b)
    assert diff.mean() < 0.1 and np.percentile(diff[changed], 99.9) <= 6, (diff.mean(), diff.max())


def test_swapper_defense_noise_on_the_device_path(generator):
    _, engine = generator
    clean, _ = swap_with(TorchFaceOps("cpu"), engine)
    noisy, _ = swap_with(TorchFaceOps("cpu"), engine, defense_noise=4.0)
    a, b = np.stack([tf.frame.image for tf in noisy]).astype(int), np.stack([tf.frame.image for tf in clean]).astype(int)
    d = np.abs(a - b)
    assert 0 < d.max() <= 4 and (d > 0).mean() > 0.005
    x1, y1, x2, y2 = noisy[0].faces[1].cover.astype(int)  # the blurred small face: no noise there
    assert d[0, y1:y2, x1:x2].max() == 0


def test_device_path_engine_failure_blurs_every_face(tmp_path):
    from engines import load
    from simswap_kit import make_swap_kit

    gen, _, _ = make_swap_kit(tmp_path, broken_generator=True)
    frames, before = swap_with(TorchFaceOps("cpu"), load("simswap-224", "torch", path=str(gen)))
    assert [f.outcome for tf in frames for f in tf.faces] == ["blur:engine_error", "blur:too_small", "blur:engine_error", "blur:engine_error"]
    for tf, orig in zip(frames, before):
        x1, y1, x2, y2 = tf.faces[0].box.astype(int)
        assert np.abs(tf.frame.image[y1:y2, x1:x2].astype(int) - orig[y1:y2, x1:x2]).mean() > 10


def test_onnxruntime_engine_serves_the_device_path_through_host_memory(generator, tmp_path):
    """Engine.run_tensors' default (no device memory of its own): same swap as the torch engine's native one."""
    from engines import load

    gen, torch_engine = generator
    ort = load("simswap-224", "onnxruntime", path=str(gen))
    a, _ = swap_with(TorchFaceOps("cpu"), ort)
    b, _ = swap_with(TorchFaceOps("cpu"), torch_engine)
    assert [f.outcome for tf in a for f in tf.faces] == [f.outcome for tf in b for f in tf.faces]
    assert np.abs(np.stack([tf.frame.image for tf in a]).astype(int) - np.stack([tf.frame.image for tf in b])).max() <= 2


def test_face_cover_on_the_device_path():
    frames = detected_frames()
    before = [tf.frame.image.copy() for tf in frames]
    FaceCover("blur", ops=TorchFaceOps("cpu")).apply_batch(frames)
    host = detected_frames()
    FaceCover("blur").apply_batch(host)
    assert [f.outcome for tf in frames for f in tf.faces] == ["blur"] * 4
    a, b = np.stack([tf.frame.image for tf in frames]).astype(int), np.stack([tf.frame.image for tf in host]).astype(int)
    assert np.abs(a - b).mean() < 0.5
    assert np.abs(a - np.stack(before)).mean() > 0.5
