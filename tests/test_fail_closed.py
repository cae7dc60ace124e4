"""Fail-closed paths around the tracker: false shot cuts, fast motion under a swap, bad numbers.

Real decoded frames (scikit-image's astronaut, pipeline/synthetic.py), the real RetinaFace,
the real norfair tracker and the real swap paste-back. Where the generator's output would
hide the geometry (a random-weight SimSwap paints noise), a generator that paints one flat
colour stands in, so the test can see exactly where the paste landed.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from engines.base import Engine
from pipeline.anonymize.swap import FaceSwapper
from pipeline.core.records import Detections, Frame
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.io.video_reader import VideoReader
from pipeline.synthetic import Actor, make_scene_video
from pipeline.track.stage import track_stage
from simswap_kit import FlatGreen
from trackers import FaceTracker


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector()


def _frames(path) -> list[Frame]:
    with VideoReader(str(path)) as r:
        return list(r.frames())


def _covered(cover, truth, min_fraction=0.9) -> bool:
    x1, y1 = max(cover[0], truth[0]), max(cover[1], truth[1])
    x2, y2 = min(cover[2], truth[2]), min(cover[3], truth[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter >= min_fraction * (truth[2] - truth[0]) * (truth[3] - truth[1])


# ---- shot cuts end identity linking, not coverage --------------------------------------------

def test_a_flash_then_a_detector_miss_leaves_no_face_bare(synthetic, detector):
    """A flash frame looks like a cut (histogram and pixels both jump). The tracks of the shot
    before it must keep covering, so a miss on the next frame still has its face covered."""
    frames = _frames(synthetic.path)[:30]
    flash, miss = 20, 21
    frames[flash] = Frame(flash, frames[flash].pts, frames[flash].time_base, np.full_like(frames[flash].image, 255))
    dets = [detector.detect([f.image])[0] for f in frames]
    assert len(dets[flash]) == 0, "the flash hides the face from the detector too"
    dets[miss] = Detections.empty()  # the detector misses the face right after the flash
    out = list(track_stage(FaceTracker())(zip(frames, dets)))
    assert out[flash].shot_cut, "the flash must be taken for a cut, or this test proves nothing"
    for i in (flash, miss):
        truth = synthetic.face_boxes[i]
        assert any(_covered(f.cover, truth) for f in out[i].faces), f"frame {i}: face left bare after a false cut"
        assert all(f.predicted for f in out[i].faces)
    ids_before = {f.track_id for f in out[flash - 1].faces}
    ids_after = {f.track_id for f in out[miss + 3].faces if not f.predicted and f.track_id is not None}
    assert ids_after and not ids_after & ids_before, "identity linking ends at the cut: new tracks after it"


def test_an_earlier_shot_stops_covering_after_its_patience_or_when_a_new_face_is_there(synthetic, detector):
    frames = _frames(synthetic.path)[:30]
    dets = [detector.detect([f.image])[0] for f in frames]
    tracker = FaceTracker()
    for f, d in zip(frames[:10], dets[:10]):
        tracker.update(d, f.image)
    tracker.cut()
    # the same face detected right after the cut: one cover there, not a second blur over it
    faces = tracker.update(dets[10], frames[10].image)
    assert len(faces) == 1 and not faces[0].predicted
    tracker.cut()
    empty = [tracker.update(Detections.empty(), frames[11].image) for _ in range(tracker.config.patience + 2)]
    assert empty[0] and not empty[-1], "coasting covers end with the track's patience"


# ---- swap aligns on the detector's landmarks ---------------------------------------------------

GREEN = np.array([0, 255, 0], np.uint8)




def _zigzag(i: int) -> tuple[float, float, float]:
    """A head moving 16 px a frame, turning every 5 frames: a constant-velocity filter lags."""
    phase, k = divmod(i, 5)
    x = 20 + (k if phase % 2 == 0 else 5 - k) * 16
    y = 30 + (phase % 3) * 12
    return x, y, 150


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "fast.mp4"
    make_scene_video(str(path), [Actor(_zigzag)], frames=30, width=320, height=240)
    return path


def _hull_mask(shape, landmarks) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return mask.astype(bool)


def test_swap_pastes_on_the_detectors_landmarks_on_fast_motion(fast_clip, detector):
    """Every swapped frame: the fully pasted core covers the detector's eyes–nose–mouth hull."""
    frames = _frames(fast_clip)
    originals = [f.image.copy() for f in frames]
    dets = [detector.detect([f.image])[0] for f in frames]
    tracked = list(track_stage(FaceTracker())(zip(frames, dets)))
    z = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    for tf in tracked:
        for face in tf.faces:
            face.source_id, face.source_latent = "s", z / np.linalg.norm(z)
    swapper = FaceSwapper(FlatGreen())
    for k in range(0, len(tracked), 4):
        swapper.apply_batch(tracked[k : k + 4])
    swapped = 0
    for tf, orig, d in zip(tracked, originals, dets):
        for face in tf.faces:
            if face.outcome != "swap":
                continue
            swapped += 1
            i = int(np.argmax([_iou(face.box, b) for b in d.boxes]))
            hull = _hull_mask(orig.shape[:2], d.landmarks[i])
            green = np.all(np.abs(tf.frame.image.astype(int) - GREEN) <= 2, axis=2)
            assert green[hull].mean() == 1.0, f"frame {tf.frame.index}: {1 - green[hull].mean():.0%} of the real face is outside the paste"
    assert swapped >= 20


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---- bad numbers ----------------------------------------------------------------------------------

class Poisoned(Engine):
    """The real RetinaFace engine, with the best anchor of some images made non-finite:
    image k of each batch gets NaN box (k % 4 == 0), NaN landmarks (1), both (2), or nothing (3)."""

    def __init__(self, real: Engine):
        self.real, self.inputs, self.outputs = real, real.inputs, real.outputs

    def __call__(self, feeds):
        out = self.real(feeds)
        for b in range(out["conf"].shape[0]):
            best = int(np.argmax(out["conf"][b, :, 1]))
            if b % 4 in (0, 2):
                out["loc"][b, best] = np.nan
            if b % 4 in (1, 2):
                out["landmarks"][b, best] = np.inf
        return out


def test_non_finite_detections_never_end_the_run_nor_uncover_the_face(synthetic, tmp_path):
    import json

    from conftest import read_video
    from engines import load
    from pipeline import RunConfig, anonymize_video

    detector = RetinaFaceDetector(engine=Poisoned(load("retinaface-mnet025")))
    report = anonymize_video(synthetic.path, str(tmp_path / "o.mp4"), RunConfig(mode="blur", batch_size=4),
                             boxes_path=str(tmp_path / "b.jsonl"), detector=detector, progress=False, log=lambda m: None)
    repaired = report["faces"]["repaired"]
    assert repaired.get("bad_box", 0) >= 5 and repaired.get("bad_landmarks", 0) >= 5, repaired
    assert repaired.get("unlocatable_detection", 0) >= 5, repaired
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert all(np.isfinite(f["cover"]).all() and np.isfinite(f["landmarks"]).all() for r in rows for f in r["faces"])
    src, dst = read_video(synthetic.path)["frames"], read_video(tmp_path / "o.mp4")["frames"]
    assert len(dst) == synthetic.frames
    for i, truth in enumerate(synthetic.face_boxes):
        x1, y1, x2, y2 = truth.astype(int)
        sharp = cv2.Laplacian(cv2.cvtColor(src[i][y1:y2, x1:x2], cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        left = cv2.Laplacian(cv2.cvtColor(dst[i][y1:y2, x1:x2], cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
        assert left < 0.25 * sharp, f"frame {i}: face still sharp ({left:.0f} vs {sharp:.0f})"


def test_a_face_whose_numbers_go_bad_after_tracking_keeps_its_last_cover(synthetic, detector):
    from collections import Counter

    from pipeline.track.guard import NumberGuard

    frames = _frames(synthetic.path)[:6]
    tracker, guard = FaceTracker(), NumberGuard()
    for f in frames[:5]:
        d, placeholder, repairs = guard.detections(detector.detect([f.image])[0], f.image.shape[:2])
        last = guard.faces(tracker.update(d, f.image), f.image.shape[:2], repairs, placeholder)
    good_cover = last[0].cover.copy()
    faces = tracker.update(detector.detect([frames[5].image])[0], frames[5].image)
    faces[0].box[:] = np.nan
    faces[0].cover[:] = np.nan
    repairs = Counter()
    fixed = guard.faces(faces, frames[5].image.shape[:2], repairs)
    assert repairs == {"bad_face_last_cover": 1}
    np.testing.assert_array_equal(fixed[0].cover, good_cover)
    assert fixed[0].data["repaired"] == "bad_face", "its numbers are not the detector's: never swapped on"
    stranger = tracker.update(Detections.empty(), frames[5].image)
    for f in stranger:
        f.cover[:] = np.inf
        f.candidate_id = 10**6  # a face the guard never saw: nothing known, so the whole frame
    repairs = Counter()
    h, w = frames[5].image.shape[:2]
    out = guard.faces(stranger, (h, w), repairs)
    assert repairs["bad_face_whole_frame"] == len(stranger) >= 1
    np.testing.assert_array_equal(out[0].cover, [0, 0, w, h])


def test_a_face_with_placeholder_landmarks_is_blurred_not_swapped(detector):
    """Placeholder landmarks keep the track going but are never aligned on."""
    from skimage import data

    from pipeline.core.records import Frame, TrackedFrame
    from pipeline.track.guard import NumberGuard

    img = data.astronaut()
    d = detector.detect([img])[0]
    d.landmarks[0] = np.nan
    guard = NumberGuard()
    usable, placeholder, repairs = guard.detections(d, img.shape[:2])
    assert repairs == {"bad_landmarks": 1} and placeholder == {0: "bad_landmarks"} and np.isfinite(usable.landmarks).all()
    tracker = FaceTracker()
    faces = guard.faces(tracker.update(usable, img), img.shape[:2], repairs, placeholder)
    assert faces and all(f.data.get("repaired") == "bad_landmarks" for f in faces)
    for f in faces:
        f.track_id, f.source_id, f.source_latent = 1, "s", np.ones(512, np.float32) / np.sqrt(512)
    FaceSwapper(FlatGreen()).apply_batch([TrackedFrame(Frame(0, 0, 1, img.copy()), faces, 1)])
    assert [f.outcome for f in faces] == ["blur:bad_numbers"] * len(faces)


class Passthrough(Engine):
    """A generator that returns its input crop: a correct align → paste-back is then invisible."""

    inputs, outputs = FlatGreen.inputs, FlatGreen.outputs

    def __call__(self, feeds):
        return {"output": feeds["image"].copy()}


def test_a_passthrough_generator_leaves_the_face_as_it_was(fast_clip, detector):
    """Geometry and channel order of the swap path: crop, warp back and blend must land on
    the same pixels they came from; a shifted, flipped or channel-swapped paste would not."""
    frames = _frames(fast_clip)[:8]
    originals = [f.image.copy() for f in frames]
    tracked = list(track_stage(FaceTracker())(zip(frames, [detector.detect([f.image])[0] for f in frames])))
    for tf in tracked:
        for face in tf.faces:
            face.source_id, face.source_latent = "s", np.ones(512, np.float32) / np.sqrt(512)
    FaceSwapper(Passthrough()).apply_batch(tracked)
    checked = 0
    for tf, orig in zip(tracked, originals):
        for face in tf.faces:
            if face.outcome == "swap":
                x1, y1, x2, y2 = face.box.astype(int)
                diff = np.abs(tf.frame.image[y1:y2, x1:x2].astype(int) - orig[y1:y2, x1:x2]).mean()
                assert diff < 3.0, f"frame {tf.frame.index}: the round trip moved the face ({diff:.1f} levels)"
                checked += 1
    assert checked >= 5


# ---- a cover visibly removes the face, in the dark too ---------------------------------------


def _dim_faces() -> tuple[np.ndarray, list[np.ndarray]]:
    """One frame: an out-of-focus 30 px face darkened to a mean luminance of 14 with a spread of
    3 grey levels (the audience faces a blur leaves as they were, issue 31), and beside it the
    same face lit as the shared clip's lit audience (mean 35, spread 14)."""
    from skimage import data

    from pipeline.synthetic import _CROP_TLBR, _FACE_IN_CROP

    t, l, b, r = _CROP_TLBR
    crop, fbox = data.astronaut()[t:b, l:r], _FACE_IN_CROP
    s = 30 / (fbox[3] - fbox[1])
    face = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA).astype(np.float32)
    box = fbox * s
    grey = lambda im: im @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    x1, y1, x2, y2 = box.astype(int)
    dim = cv2.GaussianBlur(face, (0, 0), 1.5)
    g = grey(dim[y1:y2, x1:x2])
    dim = (dim - g.mean()) * (3.0 / g.std()) + 14.0
    g = grey(face[y1:y2, x1:x2])
    lit = (face - g.mean()) * (14.0 / g.std()) + 35.0  # as the shared clip's lit audience faces
    image = np.full((120, 240, 3), 12.0, np.float32)
    h, w = face.shape[:2]
    image[10:10 + h, 20:20 + w] = dim
    image[10:10 + h, 130:130 + w] = lit
    return np.clip(image, 0, 255).round().astype(np.uint8), [box + [20, 10, 20, 10], box + [130, 10, 130, 10]]


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
@pytest.mark.parametrize("path", ["host", "device"])
def test_a_dim_flat_face_the_cover_would_leave_as_it_was_gets_a_stronger_one(mode, path):
    """Where the run's cover would leave the inner face within 3 grey levels and keep its
    detail (region.weak_cover), that face gets the mask and says so; the same face at ordinary
    contrast keeps the run's cover. On the device path (TorchFaceOps on CPU here) the same
    decision and the same pixels as the host's."""
    from pipeline.anonymize.cover import FaceCover, face_region
    from pipeline.anonymize.face_ops import HostFaceOps
    from pipeline.anonymize.region import weak_cover
    from pipeline.audit.leaks import CHANGE_THRESHOLD, change_score
    from pipeline.core.records import Face, TrackedFrame

    image, boxes = _dim_faces()
    if path == "device":
        pytest.importorskip("torch", reason="the device path needs the gpu extra")
        from pipeline.anonymize.face_ops import TorchFaceOps

        ops = TorchFaceOps("cpu")
    else:
        ops = HostFaceOps()
    cover = FaceCover(mode, ops=ops)
    untouched = image.copy()
    for box in boxes[:2]:  # what the run's cover alone would do: weak on the dim face only
        region = face_region(box, untouched.shape[:2])
        roi = untouched[region.y0:region.y1, region.x0:region.x1]
        effect = cover._effect(roi, float(box[2] - box[0]))
        assert weak_cover(roi[region.inner].astype(np.float32), effect[region.inner].astype(np.float32)) == (box is boxes[0])
    # the ordinary face twice (two overlapping tracks): the second is judged against the face as
    # it was, not against the first one's cover, and keeps the run's cover
    boxes.append(boxes[1] + [4, 3, 4, 3])
    faces = [Face(box=b, landmarks=np.zeros((5, 2), np.float32), score=0.9, track_id=k, predicted=False, cover=b)
             for k, b in enumerate(boxes)]
    tf = TrackedFrame(Frame(0, 0, Fraction(1, 30), image), faces, detections=3)
    cover.apply_batch([tf])
    assert [f.data for f in faces] == [{"stronger_cover": "mask"}, {}, {}]
    assert [f.outcome for f in faces] == ["mask", mode, mode]  # the outcome names the effect used
    assert change_score(untouched, tf.frame.image, boxes[0]) >= CHANGE_THRESHOLD  # the audit sees it changed
    x1, y1, x2, y2 = (int(v) for v in boxes[0])
    assert np.abs(tf.frame.image[y1:y2, x1:x2].astype(int) - untouched[y1:y2, x1:x2]).mean() >= 3.0
    if path == "device":
        host = untouched.copy()
        assert HostFaceOps().cover([host], [(0, b) for b in boxes], FaceCover(mode)) == [mode if k else "mask" for k in range(3)]
        assert np.abs(host.astype(int) - tf.frame.image).max() <= 1
