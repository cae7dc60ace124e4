"""Alignment into SimSwap crops and the inverse paste-back."""

import cv2
import numpy as np
import pytest
from skimage import data

from conftest import assert_like_opencv
from pipeline.core.alignment import FRONTAL, align, estimate, templates
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.anonymize.paste_back import official_covers_face, official_inverse, paste_back, soft_mask
from simswap_kit import face_at, frame_alpha, official_full_frame


@pytest.fixture(scope="module")
def astronaut():
    img = data.astronaut()
    return img, RetinaFaceDetector().detect([img])[0].landmarks


def test_known_similarity_is_recovered():
    tpl = templates(224)[FRONTAL]
    angle, scale, shift = np.deg2rad(17), 0.6, np.array([300.0, 140.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face_in_frame = tpl @ rot.T + shift  # the frontal template, rotated, shrunk and moved
    m, pose = estimate(face_in_frame, 224)
    assert pose == FRONTAL
    back = face_in_frame @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(back, tpl, atol=1e-3)


@pytest.mark.parametrize("size", [224, 512])
def test_aligned_crop_puts_the_face_where_the_template_says(astronaut, size):
    img, lms = astronaut
    batch = align([img, img[:, ::-1].copy()], [lms, lms * [-1, 1] + [img.shape[1] - 1, 0]], size)
    assert batch.crops.shape == (2, size, size, 3) and list(batch.frame_index) == [0, 1]
    # The detector, run on the aligned crop, finds the landmarks near the template points.
    again = RetinaFaceDetector(detect_size=size).detect([batch.crops[0]])[0]
    assert len(again) >= 1
    tpl = templates(size)[batch.pose[0]]
    assert np.abs(again.landmarks[0] - tpl).max() < 0.08 * size


def test_alignment_of_nothing_has_fixed_empty_shapes():
    batch = align([np.zeros((10, 10, 3), np.uint8)], [np.zeros((0, 5, 2))], 224)
    assert len(batch) == 0 and batch.crops.shape == (0, 224, 224, 3) and batch.matrices.shape == (0, 2, 3)
    with pytest.raises(ValueError, match="224 or 512"):
        align([], [], 256)


@pytest.mark.parametrize("size", [224, 512])
def test_warp_then_inverse_warp_moves_landmarks_less_than_a_pixel(astronaut, size):
    img, lms = astronaut
    m = align([img], [lms], size).matrices[0]
    in_crop = lms[0] @ m[:, :2].T + m[:, 2]
    inv = official_inverse(m)  # the crop→frame matrix the paste-back warps with
    back = in_crop @ inv[:, :2].T + inv[:, 2]
    assert np.abs(back - lms[0]).max() < 1.0


def test_paste_back_changes_no_pixel_outside_the_mask(astronaut):
    img, lms = astronaut
    batch = align([img], [lms], 224)
    out = img.copy()
    paste_back(out, np.full((224, 224, 3), 255, np.uint8), batch.matrices[0])
    alpha = frame_alpha(batch.matrices[0], 224, img.shape[:2])
    assert np.array_equal(out[alpha == 0], img[alpha == 0])
    assert (out[alpha > 0.5] != img[alpha > 0.5]).any()


def test_paste_back_of_the_unchanged_crop_restores_the_frame(astronaut):
    img, lms = astronaut
    batch = align([img], [lms], 224)
    out = img.copy()
    x0, y0, x1, y1 = paste_back(out, batch.crops[0], batch.matrices[0])
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], img[outside])  # nothing outside the face's ROI is touched
    assert np.abs(out.astype(int) - img).mean() < 1.0  # inside, only resampling loss


def test_paste_back_replaces_the_face_core_and_feathers_the_edge(astronaut):
    img, lms = astronaut
    batch = align([img], [lms], 224)
    out = img.copy()
    paste_back(out, np.full((224, 224, 3), (0, 255, 0), np.uint8), batch.matrices[0])
    nose = lms[0, 2].astype(int)
    assert tuple(out[nose[1], nose[0]]) == (0, 255, 0)
    changed = np.abs(out.astype(int) - img).sum(axis=2) > 0
    partial = changed & ~np.all(out == (0, 255, 0), axis=2)
    assert partial.sum() > 0.1 * np.all(out == (0, 255, 0), axis=2).sum(), "edge must be feathered, not hard"


@pytest.mark.parametrize("size", [224, 512])
def test_roi_paste_is_the_official_full_frame_paste(size):
    """ROI-only, yet equal to the whole-frame computation: inside the frame, across each frame
    edge (where OpenCV's borders act), big and rotated faces, structured crop content."""
    rng = np.random.default_rng(size)
    frame = rng.integers(0, 256, (400, 640, 3), dtype=np.uint8)
    crop = cv2.resize(data.astronaut(), (size, size)).astype(np.float32) / 255
    for footprint, angle, centre in [(300, 0, (320, 200)), (260, 17, (60, 120)), (250, -30, (600, 300)),
                                     (420, 45, (300, 20)), (240, 5, (330, 390)), (180, 12, (200, 210))]:
        m = face_at(size, footprint, angle, centre)
        assert official_covers_face(m, size)
        ref, (alpha,) = official_full_frame(frame, [crop], [m])
        out = frame.copy()
        paste_back(out, crop, m)
        assert_like_opencv(np.abs(out.astype(int) - ref))
        assert np.abs(frame_alpha(m, size, frame.shape[:2]) - alpha).max() < 1e-12


def test_the_official_mask_is_fixed_in_frame_pixels():
    """Erosion and feather do not grow with the face: the band between the footprint's edge and
    the fully pasted core (alpha ≥ 0.999) is the same ~38 px on a 300 px and a 600 px crop."""
    bands = []
    for footprint in (300, 600):
        m = face_at(224, footprint, 0, (400, 400))
        alpha = frame_alpha(m, 224, (800, 800))
        row = alpha[400]
        left_edge = 400 - footprint / 2
        bands.append(np.flatnonzero(row >= 0.999)[0] - left_edge)
    assert abs(bands[0] - bands[1]) <= 1 and 35 <= bands[0] <= 41, bands  # 20 px erosion + 3.1 σ


def test_the_paste_truncates_as_official():
    frame = np.full((300, 300, 3), 10, np.uint8)
    paste_back(frame, np.full((224, 224, 3), 0.5, np.float32), face_at(224, 240, 0, (150, 150)))
    assert (frame[150, 150] == 127).all()  # 127.5 truncated; rounding would give 128


@pytest.mark.parametrize("size", [224, 512])
def test_small_face_rule_never_lets_the_official_mask_leave_the_face_showing(size):
    """`official_covers_face` is the measured truth, conservatively: wherever it picks the official
    mask, that mask is ≥ 0.99 over the whole inner face (the template's eyes–nose–mouth hull);
    and it gives up at most 8 px of footprint (≈ 2 px of eye distance) against the measurement."""
    tpl = templates(size)[FRONTAL if size == 224 else 0].astype(np.float32)
    hull = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(tpl)).astype(np.int32).reshape(-1, 2), 1)
    for angle in (0, 12, 30, 45):
        measured = rule = None
        for footprint in range(100, 240, 2):
            m = face_at(size, footprint, angle, (200, 200))
            _, (alpha,) = official_full_frame(np.zeros((400, 400, 3), np.uint8), [np.zeros((size, size, 3), np.float32)], [m])
            covered = cv2.warpAffine(alpha, m, (size, size))[hull > 0].min() >= 0.99
            if official_covers_face(m, size):
                assert covered, (angle, footprint)
                rule = rule or footprint
            measured = measured or (footprint if covered else None)
        assert rule is not None and 0 <= rule - measured <= 8, (angle, measured, rule)


def test_soft_mask_survives_small_faces():
    """The official fixed 40-px erosion erases faces below ~80 px; there the mask scales with the crop."""
    img = np.full((120, 160, 3), 100, np.uint8)
    tpl = templates(224)[FRONTAL]
    tiny_face = tpl * (30 / 224) + [60, 40]  # a face about 30 px across
    m, _ = estimate(tiny_face, 224)
    assert not official_covers_face(m, 224)
    _, (official,) = official_full_frame(img, [np.zeros((224, 224, 3), np.float32)], [m])
    assert official.max() == 0.0  # official would leave this face untouched
    paste_back(img, np.full((224, 224, 3), 250, np.uint8), m)
    assert (img == 250).all(axis=2).sum() > 50
    mask = soft_mask(224)
    assert mask.max() == 1.0 and mask[0, 0] == 0.0 and mask[112, 112] == 1.0
