"""The audit's leak detector: CenterFace unless the run used it, then MTCNN; never one the
run used unless the user says so, and named in the JSON and the page. Real detectors on real faces."""

import json

import numpy as np
import pytest
from skimage import data

from conftest import run_cli
from engines import get_model, load
from pipeline.audit.leak_detector import (DependentDetectorError, check_independent, models_of,
                                          run_detectors_from_report, run_detectors_of)
from pipeline.audit.leaks import COVER_FRACTION, covered_fraction
from pipeline.audit.measure import AuditConfig
from pipeline.detect.retinaface import RetinaFaceDetector


def test_run_detectors_from_report_settings(tmp_path):
    assert models_of("ensemble") == ("retinaface-mnet025", "centerface")
    assert models_of(["centerface", "retinaface", "centerface"]) == ("centerface", "retinaface-mnet025")
    assert run_detectors_of({"detector": "centerface"}) == ("centerface",)
    assert run_detectors_of({"detectors": ["retinaface-mnet025", "centerface"]}) == ("retinaface-mnet025", "centerface")
    assert run_detectors_of({"detect_size": 640}) == ("retinaface-mnet025",)  # a report from before --detector
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"video": {}}))
    with pytest.raises(ValueError, match=r"r\.json is not a run report \(no 'settings'\)"):
        run_detectors_from_report(str(bad))
    with pytest.raises(FileNotFoundError, match="run report not found"):
        run_detectors_from_report(str(tmp_path / "absent.json"))


def test_a_detector_the_run_used_is_refused_unless_allowed():
    assert check_independent("dlib-mmod", models_of("ensemble"), False) is True
    assert check_independent("mtcnn", models_of("ensemble"), False) is True
    assert check_independent("centerface", None, False) is None  # the run's detectors unknown
    with pytest.raises(DependentDetectorError, match=r"centerface is one the run used \(retinaface-mnet025, centerface\).*--leak-detector \(mtcnn, dlib-mmod\)"):
        check_independent("centerface", models_of("ensemble"), False)
    assert check_independent("centerface", models_of("ensemble"), True) is False
    with pytest.raises(DependentDetectorError):  # refused when the config is built, before any work
        AuditConfig(leak_detector="centerface", run_detectors=("centerface",))
    with pytest.raises(ValueError, match="unknown leak detector 'hog'; valid: auto, centerface, mtcnn, dlib-mmod"):
        AuditConfig(leak_detector="hog")
    assert AuditConfig(leak_detector="dlib-mmod").leak_stride == get_model("dlib-mmod").settings["audit_every"] == 5
    assert AuditConfig(leak_detector="centerface").leak_stride == AuditConfig(leak_detector="mtcnn").leak_stride == 1


def test_auto_takes_the_best_judge_the_run_did_not_use():
    """CenterFace sees dark and edge-cut faces MTCNN and dlib's CNN cannot: it judges every run
    that did not use it; a run that did is judged by MTCNN (more faces than dlib, at a sixteenth
    of its time: benchmarks/results/audit_detector.md)."""
    assert AuditConfig(run_detectors=models_of("retinaface")).leak_detector == "centerface"
    assert AuditConfig(run_detectors=models_of("centerface")).leak_detector == "mtcnn"
    assert AuditConfig(run_detectors=models_of("ensemble")).leak_detector == "mtcnn"
    assert AuditConfig().leak_detector == "centerface"  # no report: unknown, the JSON says null


def _report(tmp_path, settings) -> str:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"settings": settings}))
    return str(path)


def test_cli_refuses_the_runs_own_detector_in_one_line(synthetic, tmp_path):
    out = tmp_path / "a.json"
    report = _report(tmp_path, {"detector": "ensemble"})
    r = run_cli("audit", synthetic.path, synthetic.path, "-o", out, "--report", report, "--leak-detector", "centerface", "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: the leak detector centerface is one the run used") and "--allow-dependent-leak-detector" in r.stderr
    assert not out.exists()
    r = run_cli("audit", synthetic.path, synthetic.path, "-o", out, "--report", report, "--leak-detector", "centerface",
                "--allow-dependent-leak-detector", "--max-frames", "4", "--every", "4", "-q")
    assert r.returncode == 0, r.stderr
    ld = json.loads(out.read_text())["leak_detector"]
    assert ld == {"name": "centerface", "every": 1, "run_detectors": ["retinaface-mnet025", "centerface"], "independent_of_pipeline": False}


def test_default_audit_of_a_centerface_run_uses_mtcnn_and_says_so(synthetic, tmp_path):
    """The original against itself: every face the leak detector sees is a leak. The run used
    CenterFace (ensemble), so auto chooses MTCNN, independent of it, on every frame; dlib's CNN
    stays available and samples every 5th."""
    out = tmp_path / "a.json"
    r = run_cli("audit", synthetic.path, synthetic.path, "-o", out, "--html", tmp_path / "a.html",
                "--report", _report(tmp_path, {"detector": "ensemble"}), "--max-frames", "6", "--every", "5", "-q")
    assert r.returncode == 0, r.stderr
    a = json.loads(out.read_text())
    lk = a["leaks"]
    assert (lk["detector"], lk["every"], lk["frames_checked"]) == ("mtcnn", 1, 6)
    assert lk["detector_faces"] == lk["count"] == 6 and lk["frames"] == list(range(6))
    assert a["leak_detector"] == {"name": "mtcnn", "every": 1, "run_detectors": ["retinaface-mnet025", "centerface"],
                                  "independent_of_pipeline": True}
    assert a["settings"]["leak_detector"] == "mtcnn" and "centerface_threshold" not in a["settings"]
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "mtcnn" in page and "MTCNN misses faces in the dark" in page
    r = run_cli("audit", synthetic.path, synthetic.path, "-o", out, "--report", _report(tmp_path, {"detector": "ensemble"}),
                "--leak-detector", "dlib-mmod", "--max-frames", "10", "--every", "5", "-q")
    assert r.returncode == 0, r.stderr
    lk = json.loads(out.read_text())["leaks"]
    assert (lk["detector"], lk["every"], lk["frames_checked"], lk["count"], lk["frames"]) == ("dlib-mmod", 5, 2, 2, [0, 5])


def test_dlib_boxes_lie_inside_the_runs_covers():
    """dlib's squares are ~1.1x wider and ~0.8x taller than the face box a detector of the
    pipeline gives: re-checks COVER_FRACTION against that geometry. On the astronaut, dlib's
    box lies almost wholly inside the run's cover (RetinaFace's box grown by the default region
    scale 1.3), and more than half of it inside the bare RetinaFace box."""
    from pipeline.run.config import RunConfig

    image = data.astronaut()
    (found,) = load("dlib-mmod").detect([image])
    (face,) = RetinaFaceDetector().detect([image])
    assert len(found) == len(face) == 1 and found.scores[0] > 0.9
    box, ref = found.boxes[0], face.boxes[0]
    assert 1.0 < (box[2] - box[0]) / (ref[2] - ref[0]) < 1.3 and 0.6 < (box[3] - box[1]) / (ref[3] - ref[1]) < 0.95
    c, half = (ref[:2] + ref[2:]) / 2, (ref[2:] - ref[:2]) / 2 * RunConfig().region_scale
    cover = np.concatenate([c - half, c + half])[None]
    assert covered_fraction(box, cover) > 0.95  # measured 0.974: dlib's square pokes 3 px out at the side
    assert covered_fraction(box, ref[None]) > COVER_FRACTION
    # five points placed in the box (dlib has none): inside it, eyes above the mouth
    lm = found.landmarks[0]
    assert (lm >= box[:2]).all() and (lm <= box[2:]).all() and lm[:2, 1].max() < lm[3:, 1].min()
    assert len(load("dlib-mmod").detect([np.full((240, 320, 3), 90, np.uint8)])[0]) == 0
