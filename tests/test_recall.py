"""Faces a single detector pass misses are still covered: cut by each border of the frame,
dark, profile-like, tiny in a 1080p frame (pipeline.synthetic.make_case_video), through the
real pipeline (PyAV decode and encode, the real detector weights, the tracker); two dim,
blurred faces of the shared clip checked by eye (benchmarks/by_eye_faces.json); and the
fusion of several passes or detectors into one face per face.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import RunConfig, anonymize_video
from pipeline.anonymize.cover import face_region
from pipeline.core.records import Detections
from pipeline.detect.recall import SETTINGS, MultiPassDetector, Passes, PadPlan, fuse, unflip, unpad
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.synthetic import make_case_video


def _dets(boxes, scores, shift=0.0) -> Detections:
    boxes = np.asarray(boxes, np.float32)
    lms = np.stack([np.stack([boxes[:, 0] + shift + k, boxes[:, 1] + k], 1) for k in range(5)], 1).astype(np.float32)
    return Detections(boxes, np.asarray(scores, np.float32), lms)


def test_overlapping_faces_from_two_detectors_become_one():
    a = _dets([[10, 10, 50, 60]], [0.9])
    b = _dets([[12, 8, 54, 62]], [0.6], shift=100)
    out = fuse([a, b])
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], [10, 8, 54, 62])  # the union: what either saw is covered
    assert out.scores[0] == pytest.approx(0.9)
    np.testing.assert_array_equal(out.landmarks[0], a.landmarks[0])  # the best member's


def test_disjoint_faces_from_two_detectors_stay_two():
    out = fuse([_dets([[10, 10, 50, 60]], [0.9]), _dets([[200, 10, 240, 60]], [0.55])])
    assert len(out) == 2 and sorted(out.scores.tolist()) == pytest.approx([0.55, 0.9])


def test_fuse_of_nothing_is_the_empty_record():
    out = fuse([Detections.empty(), Detections.empty()])
    assert out.boxes.shape == (0, 4) and out.landmarks.shape == (0, 5, 2)


def test_padded_and_mirrored_faces_come_back_to_the_frame():
    # the padded pass's image: the 160x120 frame at half scale (80x60) inside a 25 px border
    d = unpad(_dets([[10, 20, 45, 50], [0, 0, 10, 10]], [0.8, 0.7]), PadPlan(h=60, w=80, pad=25), h=120, w=160)
    assert len(d) == 1  # the second lay wholly in the padding
    np.testing.assert_allclose(d.boxes[0], [0, 0, 40, 50])  # cut by the edge: covered up to it
    np.testing.assert_allclose(d.landmarks[0, 1], [2 * (11 - 25), 2 * (21 - 25)])  # landmarks move alike
    m = unflip(_dets([[10, 20, 30, 40]], [0.9]), w=100)
    np.testing.assert_allclose(m.boxes[0], [70, 20, 90, 40])
    assert m.landmarks[0, 0, 0] == pytest.approx(100 - 11) and m.landmarks[0, 1, 0] == pytest.approx(100 - 10)


@pytest.mark.parametrize("plan", [PadPlan(h=60, w=80, pad=16), PadPlan(h=71, w=107, pad=21)], ids=["half", "uneven"])
def test_the_padded_pass_makes_the_same_pixels_on_both_paths(plan):
    """Shrunk (OpenCV's INTER_AREA on the host, its torch copy on the device), then padded."""
    torch = pytest.importorskip("torch", reason="the device path needs the gpu extra")
    from pipeline.detect.recall import _DevicePixels, _HostPixels

    frames = np.random.default_rng(0).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    host = np.stack(_HostPixels().padded(list(frames), plan))
    device = _DevicePixels().padded(torch.from_numpy(frames), plan).numpy()
    assert host.shape == (2, plan.h + 2 * plan.pad, plan.w + 2 * plan.pad, 3)
    np.testing.assert_array_equal(device, host)
    assert not host[:, :plan.pad].any() and not host[:, :, -plan.pad:].any()  # the black border


def test_unknown_settings_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid: gamma, clahe"):
        Passes(dark_looks=(("hist", 0.5),))
    with pytest.raises(ValueError, match="valid: retinaface, centerface, ensemble"):
        RunConfig(detector="yolo")


def test_faces_below_the_threshold_come_back_weak_only_when_asked():
    """`track_score`: the detector decodes down to it; the pipeline's detect stage gets those
    faces marked weak, every other caller detections only. Here the astronaut (0.9999) sits
    under a threshold set above it, and RetinaFace's 0.06 false face under `track_score`."""
    from skimage import data

    image = data.astronaut()
    multi = MultiPassDetector([RetinaFaceDetector(threshold=0.99995)], Passes(track_score=0.3))
    assert multi.threshold == 0.99995 and multi.detectors[0].threshold == 0.3
    (plain,) = multi.detect([image])
    (marked,) = multi.detect([image], weak=True)
    assert len(plain) == 0 and plain.weak is None
    assert len(marked) == 1 and marked.weak.tolist() == [True] and 0.3 < marked.scores[0] < 0.99995
    (strong,) = MultiPassDetector([RetinaFaceDetector()], Passes(track_score=0.3)).detect([image], weak=True)
    assert len(strong) == 1 and strong.weak is None  # a face above the threshold is a detection
    with pytest.raises(ValueError, match="track_score must be in"):
        Passes(track_score=1.0)
    with pytest.raises(ValueError, match="dark_looks must be"):
        Passes(dark_looks=())
    assert all(p.track_score == 0.3 for name, p in SETTINGS.items() if name != "plain") and SETTINGS["plain"] == Passes()


def test_the_dark_pass_runs_at_its_own_scales():
    """The dark pass detects on each enhanced copy at its scale of the plain pass's working
    size (`fast`: gamma and CLAHE at half, where dim blurred faces score higher)."""
    multi = MultiPassDetector([RetinaFaceDetector()], SETTINGS["fast"])
    assert multi._dark_looks(multi.detectors[0], 360, 640) == [("gamma", 320), ("clahe", 320)]
    full = MultiPassDetector([RetinaFaceDetector()], SETTINGS["full"])._dark_looks(RetinaFaceDetector(), 1080, 1920)
    assert full == [("gamma", 1280), ("gamma", 640), ("clahe", 640), ("clahe", 960)]
    # the padded pass: the frame at half the plain pass's scale, inside 20% of that long side
    assert multi._pad_plan(multi.detectors[0], 360, 640) == PadPlan(h=180, w=320, pad=64)


def _anonymized_fraction(covers, truth, shape) -> float:
    """Share of the true face box's pixels inside what the anonymizer really changes: the
    feathered ellipse around each cover (pipeline.anonymize.cover.face_region), alpha >= 0.5."""
    mask = np.zeros(shape, bool)
    for cover in covers:
        r = face_region(np.asarray(cover, np.float32), shape)
        if r is not None:
            mask[r.y0:r.y1, r.x0:r.x1] |= r.alpha >= 0.5
    x1, y1, x2, y2 = (int(round(v)) for v in truth)
    box = mask[max(0, y1):y2, max(0, x1):x2]
    return float(box.mean()) if box.size else 1.0


def _uncovered_frames(case: str, tmp_path, **cfg) -> list[int]:
    video = make_case_video(str(tmp_path / f"{case}.mp4"), case)
    return _uncovered(video.path, dict(enumerate(video.face_boxes)), (video.height, video.width), tmp_path, **cfg)


def _uncovered(path, truth: dict, shape, tmp_path, **cfg) -> list[int]:
    """The frames (of `truth`: frame → box) where the run's covers leave the face visible."""
    out, boxes = tmp_path / "out.mp4", tmp_path / "boxes.jsonl"
    anonymize_video(str(path), str(out), RunConfig(mode="blur", **cfg), boxes_path=str(boxes), progress=False, log=lambda m: None)
    rows = {r["frame"]: r for r in map(json.loads, boxes.read_text().splitlines())}
    assert set(truth) <= set(rows)
    return [i for i, box in truth.items() if _anonymized_fraction([f["cover"] for f in rows[i]["faces"]], box, shape) < 0.9]


def test_the_dim_blurred_faces_the_audit_found_are_covered_on_every_frame(shared_clip, tmp_path):
    """Issue 31: an out-of-focus dim head near the top edge and a blurred face in the dark
    audience, which another detector saw and the default left bare, checked by eye frame by
    frame. Both score higher on a CLAHE copy at half scale than on the frame, the padded look
    or the gamma copy (benchmarks/results/dark_pass.md); `--recall plain` leaves them bare.
    On the clip's own frames: a re-encoded cut shifts their scores by a few hundredths."""
    from conftest import ROOT

    faces = json.loads((ROOT / "benchmarks" / "by_eye_faces.json").read_text())["faces"]
    truth = {int(i): b for face in faces.values() for i, b in face["boxes"].items()}
    shape, frames = (360, 640), max(truth) + 1
    assert _uncovered(shared_clip, truth, shape, tmp_path, max_frames=frames) == []
    assert len(_uncovered(shared_clip, truth, shape, tmp_path, max_frames=frames, recall="plain")) >= len(truth) // 2


def test_a_profile_like_face_is_covered_by_the_ensemble_with_mirrored_frames(tmp_path):
    """benchmarks/results/recall.md: one RetinaFace pass leaves 11 of 24 frames uncovered,
    the mirrored pass alone 1; both detectors with it none."""
    assert _uncovered_frames("profile", tmp_path, detector="ensemble", recall="full") == []


def test_a_16px_face_in_1080p_is_covered_with_the_max_setting(tmp_path):
    """`--recall max` raises the working size until a 16 px face is 32 px there (2x in 1080p)."""
    assert _uncovered_frames("small-1080p", tmp_path, recall="max") == []


@pytest.mark.parametrize("case", ["border-top", "dark"])
def test_the_device_path_runs_the_same_passes(case, tmp_path):
    """`--device cpu`: padding and brightening as torch ops on the frame tensor."""
    assert _uncovered_frames(case, tmp_path, device="cpu") == []


def test_the_ensemble_on_the_device_path_runs_centerface_there_and_covers_the_profile(tmp_path):
    """`--detector ensemble --device cpu`: CenterFace's own torch module beside RetinaFace's,
    every pass as torch ops; the profile case the ensemble exists for stays covered."""
    assert _uncovered_frames("profile", tmp_path, detector="ensemble", recall="full", device="cpu") == []


def test_an_unknown_detector_on_the_command_line_is_one_line_exit_2(tmp_path):
    from conftest import run_cli

    r = run_cli(tmp_path / "in.mp4", "-o", tmp_path / "out.mp4", "--detector", "yolo")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "retinaface" in lines[0] and "ensemble" in lines[0], r.stderr
