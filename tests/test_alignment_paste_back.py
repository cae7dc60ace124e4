"""Alignment into SimSwap crops and the inverse paste-back."""

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.core.alignment import FRONTAL, align, estimate, inverse, templates
from pipeline.detect.retinaface import FaceDetector
from pipeline.anonymize.paste_back import paste_back, soft_mask


@pytest.fixture(scope="module")
def astronaut():
    img = data.astronaut()
    return img, FaceDetector().detect([img])[0].landmarks


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
    again = FaceDetector(detect_size=size).detect([batch.crops[0]])[0]
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
    inv = inverse(m)
    back = in_crop @ inv[:, :2].T + inv[:, 2]
    assert np.abs(back - lms[0]).max() < 1.0


def test_paste_back_changes_no_pixel_outside_the_mask(astronaut):
    img, lms = astronaut
    batch = align([img], [lms], 224)
    out = img.copy()
    paste_back(out, np.full((224, 224, 3), 255, np.uint8), batch.matrices[0])
    alpha = cv2.warpAffine(soft_mask(224), inverse(batch.matrices[0]), (img.shape[1], img.shape[0]))
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


def test_soft_mask_survives_small_faces():
    """The official fixed 40-px erosion erases faces below ~80 px; ours scales with the crop."""
    img = np.full((120, 160, 3), 100, np.uint8)
    tpl = templates(224)[FRONTAL]
    tiny_face = tpl * (30 / 224) + [60, 40]  # a face about 30 px across
    m, _ = estimate(tiny_face, 224)
    paste_back(img, np.full((224, 224, 3), 250, np.uint8), m)
    assert (img == 250).all(axis=2).sum() > 50
    mask = soft_mask(224)
    assert mask.max() == 1.0 and mask[0, 0] == 0.0 and mask[112, 112] == 1.0
