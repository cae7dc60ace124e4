"""`--backend openvino`: RetinaFace on OpenVINO finds the faces ONNX Runtime finds (f32, the
same graph), in the run as in the detector; it is the host path's alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines import load
from pipeline.detect.recall import SETTINGS, MultiPassDetector
from pipeline.detect.retinaface import RetinaFaceDetector

pytest.importorskip("openvino", reason="the openvino extra is not installed")


def test_openvino_finds_what_onnxruntime_finds_at_every_pass_shape():
    """The astronaut and a dark copy through `--recall fast`'s passes (plain, padded, dark:
    three input shapes, each compiled once and kept)."""
    from skimage import data

    image = data.astronaut()
    frames = [image, (image * 0.1).astype(np.uint8)]
    ov = load("retinaface-mnet025", "openvino")
    found = {name: MultiPassDetector([RetinaFaceDetector(engine)], SETTINGS["fast"]).detect(frames, weak=True)
             for name, engine in (("openvino", ov), ("onnxruntime", load("retinaface-mnet025")))}
    assert len(ov._compiled) == 3
    for a, b in zip(found["openvino"], found["onnxruntime"]):
        assert len(a) == len(b) >= 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
    with pytest.raises(ValueError, match="expects inputs"):
        ov({"x": np.zeros((1, 3, 32, 32), np.float32)})


def test_a_run_on_openvino_covers_the_faces_onnxruntime_covers(synthetic, tmp_path):
    from conftest import run_cli

    boxes = {}
    for backend in ("openvino", "onnxruntime"):
        out, rows, report = tmp_path / f"{backend}.mp4", tmp_path / f"{backend}.jsonl", tmp_path / f"{backend}.json"
        r = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--backend", backend, "--boxes", rows, "--report", report, "-q")
        assert r.returncode == 0, r.stderr
        assert json.loads(report.read_text())["settings"]["engines"]["detector"] == backend
        boxes[backend] = [[f["box"] for f in json.loads(line)["faces"]] for line in rows.read_text().splitlines()]
    assert sum(map(len, boxes["openvino"])) >= synthetic.frames
    for a, b in zip(boxes["openvino"], boxes["onnxruntime"]):
        np.testing.assert_allclose(a, b, atol=0.5)


def test_openvino_is_refused_off_the_host_path(synthetic, tmp_path):
    pytest.importorskip("torch", reason="--device cpu needs the gpu extra")
    from conftest import run_cli

    r = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--backend", "openvino", "--device", "cpu")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "host path" in r.stderr, r.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_centerface_and_the_generator_run_on_onnxruntime_under_openvino():
    """OpenVINO runs RetinaFace only: the ensemble's CenterFace and the generator take the
    host path's default instead of failing on a backend they do not have."""
    from pipeline.run.build import detector_models
    from pipeline.run.config import RunConfig, engine_choice

    config = RunConfig(backend="openvino", detector="ensemble")
    try:
        choice = engine_choice(config)
    except Exception as e:  # a GPU here: --device auto is not the host path
        pytest.skip(f"needs the host path: {e}")
    assert detector_models(config, choice) == [("retinaface-mnet025", "openvino"), ("centerface", "onnxruntime")]
    assert choice.generator_backend == "onnxruntime"
    assert engine_choice(RunConfig(backend="openvino", swap_backend="torch")).generator_backend == "torch"
