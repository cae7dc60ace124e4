"""The whole pipeline on a self-contained moving-face video, through the real CLI."""

import json

import numpy as np
import pytest

from conftest import read_video, run_cli
from pipeline import RunConfig, anonymize_video
from pipeline.anonymize.cover import face_region
from pipeline.detect.retinaface import RetinaFaceDetector


@pytest.fixture(scope="module")
def processed(synthetic, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("out")
    out, rep, boxes = out_dir / "anon.mp4", out_dir / "r.json", out_dir / "b.jsonl"
    res = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--report", rep, "--boxes", boxes, "-q")
    assert res.returncode == 0, res.stderr
    return out, json.loads(rep.read_text()), [json.loads(l) for l in boxes.read_text().splitlines()]


def test_output_keeps_frames_size_timestamps_and_audio(synthetic, processed):
    out, report, _ = processed
    src, dst = read_video(synthetic.path), read_video(out)
    assert len(dst["frames"]) == len(src["frames"]) == synthetic.frames
    assert dst["size"] == src["size"] == (synthetic.width, synthetic.height)
    assert dst["times"] == src["times"]  # exact Fractions, not rounded floats
    assert dst["rate"] == src["rate"]
    assert dst["audio_streams"] == 1 and dst["audio_packets"] == src["audio_packets"] > 0
    assert report["video"]["frames_in"] == report["video"]["frames_out"] == synthetic.frames
    assert report["video"]["audio_streams"] == 1


def test_face_changes_strongly_and_background_does_not(synthetic, processed):
    out, _, _ = processed
    src, dst = read_video(synthetic.path)["frames"], read_video(out)["frames"]
    for i in range(0, synthetic.frames, 5):
        x1, y1, x2, y2 = synthetic.face_boxes[i].astype(int)
        inner = (slice(y1 + 5, y2 - 5), slice(x1 + 5, x2 - 5))
        face_diff = np.abs(src[i][inner].astype(int) - dst[i][inner].astype(int)).mean()
        assert face_diff > 15, f"frame {i}: face region barely changed ({face_diff:.1f})"
        far = np.ones(src[i].shape[:2], bool)
        region = face_region(synthetic.face_boxes[i], src[i].shape[:2], scale=2.0, feather=0.5)
        far[region.y0 : region.y1, region.x0 : region.x1] = False
        bg_diff = np.abs(src[i][far].astype(int) - dst[i][far].astype(int)).mean()
        assert bg_diff < 3, f"frame {i}: background changed ({bg_diff:.1f}); only re-encoding loss is expected"


def test_boxes_export_covers_the_face_on_every_frame(synthetic, processed):
    _, report, rows = processed
    assert [r["frame"] for r in rows] == list(range(synthetic.frames))
    for r, truth in zip(rows, synthetic.face_boxes):
        assert r["faces"], f"frame {r['frame']}: no face exported"
        assert any(_covers(f["cover"], truth) for f in r["faces"]), f"frame {r['frame']}: face not covered"
        for f in r["faces"]:
            assert len(f["box"]) == 4 and len(f["landmarks"]) == 5 and isinstance(f["predicted"], bool)
    ids = {f["track_id"] for r in rows for f in r["faces"] if f["track_id"] is not None}
    assert ids == {t["track_id"] for t in report["tracks"]} and len(ids) == 1
    assert set(report) >= {"input", "output", "mode", "video", "faces", "tracks", "timing", "decode_errors"}
    assert report["tracks"][0]["person_id"] is None and report["tracks"][0]["source_id"] is None


def _covers(cover, truth, tol=0.9):
    """At least `tol` of the true face box lies inside the anonymized cover box."""
    x1, y1 = max(cover[0], truth[0]), max(cover[1], truth[1])
    x2, y2 = min(cover[2], truth[2]), min(cover[3], truth[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter >= tol * (truth[2] - truth[0]) * (truth[3] - truth[1])


class MissingDetector(RetinaFaceDetector):
    """The real detector, told to see nothing on some frames (a detector miss on demand)."""

    def __init__(self, miss: set[int], **kw):
        super().__init__(**kw)
        self.miss = miss
        self.seen = 0

    def detect(self, images):
        results = super().detect(images)
        for k in range(len(results)):
            if self.seen + k in self.miss:
                results[k] = type(results[k]).empty()
        self.seen += len(images)
        return results


def test_tracker_prediction_covers_forced_detector_misses(synthetic, tmp_path):
    miss = set(range(12, 18))
    out, boxes = tmp_path / "m.mp4", tmp_path / "m.jsonl"
    report = anonymize_video(
        synthetic.path, str(out), RunConfig(mode="blur", batch_size=3),
        boxes_path=str(boxes), detector=MissingDetector(miss), progress=False, log=lambda m: None,
    )
    rows = [json.loads(l) for l in boxes.read_text().splitlines()]
    for i in sorted(miss):
        faces = rows[i]["faces"]
        assert faces and all(f["predicted"] for f in faces), f"frame {i}: expected a predicted face"
        assert any(_covers(f["cover"], synthetic.face_boxes[i]) for f in faces), f"frame {i}: prediction missed the face"
    assert report["faces"]["predicted"] >= len(miss)
    src, dst = read_video(synthetic.path)["frames"], read_video(out)["frames"]
    for i in sorted(miss):
        x1, y1, x2, y2 = synthetic.face_boxes[i].astype(int)
        diff = np.abs(src[i][y1 + 5 : y2 - 5, x1 + 5 : x2 - 5].astype(int) - dst[i][y1 + 5 : y2 - 5, x1 + 5 : x2 - 5].astype(int)).mean()
        assert diff > 15, f"frame {i}: face left visible during a detector miss"


def test_mode_auto_says_which_mode_it_picked(synthetic, tmp_path):
    res = run_cli(synthetic.path, "-o", tmp_path / "a.mp4", "--max-frames", "3")
    assert res.returncode == 0, res.stderr
    assert "mode auto" in res.stderr and "blur" in res.stderr
    assert len(read_video(tmp_path / "a.mp4")["frames"]) == 3
