"""`--device cpu` (the torch data path: frames uploaded once, detection, crops, generator,
paste-back and cover all on the device, one download for the encoder) against the host path
(OpenCV + ONNX Runtime on NumPy frames): same tracks, same outcomes, pixels within rounding.

The same code runs on a GPU (tests/test_gpu.py checks it there); CI holds it to the host
path here, on the CPU, with the detector and generator captured and replayed through the CUDA
graph stand-in (pipeline.device.graphs), so that a graph bug fails here and not on the device.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_video
from pipeline import RunConfig, anonymize_video
from pipeline.device.select import GRAPH_STANDIN_ENV
from simswap_kit import make_swap_kit


@pytest.fixture(autouse=True)
def graph_standin(monkeypatch):
    monkeypatch.setenv(GRAPH_STANDIN_ENV, "1")


def _run(video, tmp_path, name: str, **cfg) -> tuple[dict, list[dict], list[np.ndarray]]:
    out, boxes = tmp_path / f"{name}.mp4", tmp_path / f"{name}.jsonl"
    # crf 0: x264 near-lossless, so a one-level difference in a face does not spread through
    # the encoder's decisions into the rest of the frame (it does at crf 20)
    report = anonymize_video(str(video), str(out), RunConfig(crf=0, **cfg), boxes_path=str(boxes), progress=False, log=lambda m: None)
    rows = [json.loads(line) for line in boxes.read_text().splitlines()]
    return report, rows, read_video(out)["frames"]


COVERS = {"blur", "pixelate", "mask"}


def _same_faces(host_rows, dev_rows, box_tol: float = 1.0) -> int:
    """Faces per frame match one to one: same track, same outcome, boxes within `box_tol` px.

    One exception: a dim face at the weak-cover threshold (pipeline.anonymize.region.weak_cover)
    may take the stronger cover on one path only, as pixels within rounding can put its
    numbers either side; such a face is marked `"flip"` in the host row (`_flips` counts them,
    `_pixels_close` skips them)."""
    faces = 0
    for h, d in zip(host_rows, dev_rows, strict=True):
        key = lambda f: (f["track_id"] is None, f["track_id"] or 0, f["box"][0])  # noqa: E731
        hf, df = sorted(h["faces"], key=key), sorted(d["faces"], key=key)
        assert [(f["track_id"], f["predicted"]) for f in hf] == [(f["track_id"], f["predicted"]) for f in df], f"frame {h['frame']}"
        for a, b in zip(hf, df):
            assert np.abs(np.subtract(a["box"], b["box"])).max() <= box_tol, (h["frame"], a["box"], b["box"])
            (ea, _, ra), (eb, _, rb) = a["anonymized_by"].partition(":"), b["anonymized_by"].partition(":")
            a["flip"] = a["anonymized_by"] != b["anonymized_by"]
            assert not a["flip"] or (ra == rb and {ea, eb} <= COVERS), (h["frame"], a["anonymized_by"], b["anonymized_by"])
        faces += len(hf)
    return faces


def _flips(rows) -> int:
    return sum(f.get("flip", False) for r in rows for f in r["faces"])


def _same_report_faces(host: dict, dev: dict, flips: int) -> bool:
    """The reports' face counts agree, but for the `flips` faces whose cover differs (`_same_faces`)."""
    loose = ("by_outcome", "stronger_cover")
    if {k: v for k, v in host.items() if k not in loose} != {k: v for k, v in dev.items() if k not in loose}:
        return False
    return all(sum(abs(host[k].get(o, 0) - dev[k].get(o, 0)) for o in {*host[k], *dev[k]}) <= 2 * flips for k in loose)


def _reach(box, shape) -> list[int]:
    """The pixels a cover's feathered ellipse can reach: its ROI (region.face_ellipse)."""
    from pipeline.anonymize.region import face_ellipse

    e = face_ellipse(np.asarray(box, np.float32), shape)
    return [0, 0, 0, 0] if e is None else [e.x0, e.y0, e.x1, e.y1]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pixels_close(host, dev, mean_tol: float, region_tol: float, rows) -> None:
    assert len(host) == len(dev)
    diff = np.abs(np.stack(host).astype(np.int16) - np.stack(dev)).astype(np.float32)
    assert diff.mean() < mean_tol, diff.mean()
    for r, d in zip(rows, diff):
        flipped = [_reach(f["cover"], d.shape[:2]) for f in r["faces"] if f.get("flip")]
        for f in r["faces"]:
            if any(_overlap(f["cover"], box) for box in flipped):  # a flipped face's cover, or one it reaches into
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in f["cover"])
            roi = d[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
            if roi.size:
                assert roi.mean() < region_tol, (r["frame"], roi.mean())


@pytest.mark.parametrize("mode", ["blur", "pixelate", "mask"])
def test_device_path_matches_the_host_path_on_the_synthetic_clip(synthetic, tmp_path, mode):
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", mode=mode)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, "dev", mode=mode, device="cpu")
    assert rep_h["settings"]["engines"]["data_path"].startswith("host")
    assert rep_d["settings"]["engines"] == {"device": "cpu", "data_path": "torch on cpu", "detector": "torch",
                                            "generator": "torch", "dtype": "float32", "cuda_graphs": "cpu stand-in", "compile": False,
                                            "hwaccel": None, "hwaccel_fallback": None}
    assert _same_faces(rows_h, rows_d) >= synthetic.frames
    assert rep_h["faces"] == rep_d["faces"] and [t["track_id"] for t in rep_h["tracks"]] == [t["track_id"] for t in rep_d["tracks"]]
    _pixels_close(px_h, px_d, mean_tol=0.3, region_tol=3.0, rows=rows_h)


def test_device_path_matches_the_host_path_in_swap_mode(synthetic, tmp_path):
    (tmp_path / "kit").mkdir()
    gen, arc, gallery = make_swap_kit(tmp_path / "kit")
    # 10 frames: a SimSwap generator call costs ~0.4 s a face on 2 CPU cores, and each frame is compared
    common = dict(mode="swap", generator=str(gen), arcface=str(arc), gallery=str(gallery), max_frames=10)
    rep_h, rows_h, px_h = _run(synthetic.path, tmp_path, "host", swap_backend="torch", **common)
    rep_d, rows_d, px_d = _run(synthetic.path, tmp_path, "dev", device="cpu", **common)
    assert rep_d["faces"]["swapped"] >= 8 and rep_h["faces"] == rep_d["faces"]
    assert _same_faces(rows_h, rows_d) >= 10
    assert [(t["track_id"], t["source_id"]) for t in rep_h["tracks"]] == [(t["track_id"], t["source_id"]) for t in rep_d["tracks"]]
    _pixels_close(px_h, px_d, mean_tol=0.3, region_tol=3.0, rows=rows_h)


def test_device_path_matches_the_host_path_on_the_shared_clip(shared_clip, tmp_path):
    """Several people, a shot cut, dark faces: the tracker and every outcome agree."""
    rep_h, rows_h, px_h = _run(shared_clip, tmp_path, "host", mode="blur", max_frames=90)
    rep_d, rows_d, px_d = _run(shared_clip, tmp_path, "dev", mode="blur", max_frames=90, device="cpu")
    faces = _same_faces(rows_h, rows_d)
    assert faces >= 90 and _flips(rows_h) <= 0.01 * faces
    assert _same_report_faces(rep_h["faces"], rep_d["faces"], _flips(rows_h)) and rep_h["video"]["shot_cuts"] == rep_d["video"]["shot_cuts"]
    _pixels_close(px_h, px_d, mean_tol=0.3, region_tol=3.0, rows=rows_h)


def test_the_embedder_runs_on_the_device_with_the_host_results(perface_onnx):
    """The same ONNX through torch (engines/onnx_torch.py) and ONNX Runtime; on the device path the
    samples are cut from the frame tensor and must embed as the host cuts do."""
    import torch
    from skimage import data

    from engines.embedders import load_embedder
    from engines.placement import Placement
    from pipeline.detect.retinaface import RetinaFaceDetector
    from pipeline.anonymize.torch_faces import embed_faces

    host, dev = load_embedder("perface", perface_onnx), load_embedder("perface", perface_onnx, "torch", placement=Placement("cpu"))
    crops = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    assert np.abs(host.embed_crops(crops) - dev.embed_crops(crops)).max() <= 1e-4
    image = np.ascontiguousarray(np.tile(data.astronaut(), (1, 2, 1)))
    lms = RetinaFaceDetector().detect([image])[0].landmarks
    assert len(lms) == 2
    want = host.embed(image, lms)
    got = embed_faces(dev, torch.from_numpy(image), lms)
    assert got.shape == want.shape == (2, 512)
    assert (got * want).sum(1).min() >= 0.999, (got * want).sum(1)
    flipped = embed_faces(dev, torch.from_numpy(np.ascontiguousarray(image[:, ::-1])), lms)
    assert (flipped * want).sum(1).min() < 0.99, "a wrong crop (here: the mirrored frame) must show"


def test_device_path_embeds_identity_samples_on_the_device(synthetic, tmp_path, perface_onnx, monkeypatch):
    from engines.embedders.arcface_embedder import ArcFaceEmbedder
    from simswap_kit import make_gallery_file

    on_device = []
    real = ArcFaceEmbedder.embed_crop_tensors

    def spy(self, crops):  # records, then runs the real thing
        assert hasattr(crops, "device"), "crops cut on the device, as tensors"
        on_device.append(len(crops))
        return real(self, crops)

    monkeypatch.setattr(ArcFaceEmbedder, "embed_crop_tensors", spy)

    gallery = tmp_path / "gallery.npz"
    make_gallery_file(gallery, n=6, dim=512, embedder="perface")
    common = dict(mode="blur", gallery=str(gallery), embedder="perface", embedder_model=str(perface_onnx), max_frames=30)
    rep_h, rows_h, _ = _run(synthetic.path, tmp_path, "host", **common)
    assert on_device == []
    rep_d, rows_d, _ = _run(synthetic.path, tmp_path, "dev", device="cpu", **common)
    assert sum(on_device) >= 2, "the device path's samples were embedded from the frame tensor"
    assert rep_h["settings"]["identity"]["embedder_backend"] == "onnxruntime"
    assert rep_d["settings"]["identity"]["embedder_backend"] == "torch"
    assert len(rep_d["persons"]) == len(rep_h["persons"]) >= 1
    assert [(t["track_id"], t["person_id"], t["source_id"]) for t in rep_h["tracks"]] == \
           [(t["track_id"], t["person_id"], t["source_id"]) for t in rep_d["tracks"]]
    _same_faces(rows_h, rows_d)
