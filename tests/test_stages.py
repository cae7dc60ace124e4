"""Unit behaviour of each stage: detector, tracker, face cover, thread plumbing."""

import threading
import time

import numpy as np
import pytest
from skimage import data

from pipeline.anonymize.cover import FaceCover, face_region
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.core.errors import StageError
from pipeline.core.records import Detections, Face, Frame, TrackedFrame
from pipeline.core.stages import StagePipeline
from trackers import FaceTracker, TrackerConfig

ASTRONAUT_FACE = np.array([178, 59, 273, 178], np.float32)  # x1, y1, x2, y2 in skimage.data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector()


def _iou(a, b):
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detector_finds_the_astronaut_with_landmarks(detector):
    img = data.astronaut()
    (d,) = detector.detect([img])
    assert len(d) == 1 and d.scores[0] > 0.9
    assert _iou(d.boxes[0], ASTRONAUT_FACE) > 0.8
    lm = d.landmarks[0]
    assert lm[0, 0] < lm[1, 0], "right eye (image left) comes first"
    assert lm[3, 1] > lm[2, 1] > lm[0, 1], "mouth below nose below eyes"
    x1, y1, x2, y2 = d.boxes[0]
    assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()


@pytest.mark.parametrize("detect_size", [320, 480, 800])
def test_boxes_map_back_to_full_resolution_at_any_working_size(detect_size):
    big = np.kron(data.astronaut(), np.ones((2, 2, 1), np.uint8))  # 1024×1024
    (d,) = RetinaFaceDetector(detect_size=detect_size).detect([big])
    assert len(d) == 1 and _iou(d.boxes[0], ASTRONAUT_FACE * 2) > 0.75


def test_batch_gives_the_same_answer_as_one_by_one(detector):
    img = data.astronaut()
    flipped = np.ascontiguousarray(img[:, ::-1])
    blank = np.full_like(img, 127)
    batch = detector.detect([img, flipped, blank])
    alone = [detector.detect([x])[0] for x in (img, flipped, blank)]
    for b, a in zip(batch, alone):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
    assert len(batch[2]) == 0 and batch[2].boxes.shape == (0, 4) and batch[2].landmarks.shape == (0, 5, 2)
    w = img.shape[1]
    assert _iou(batch[1].boxes[0], [w - ASTRONAUT_FACE[2], ASTRONAUT_FACE[1], w - ASTRONAUT_FACE[0], ASTRONAUT_FACE[3]]) > 0.8


def test_detector_settings_are_validated():
    with pytest.raises(ValueError, match="threshold must be in"):
        RetinaFaceDetector(threshold=1.5)
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: "):
        RetinaFaceDetector(model="nope")


def _det(*boxes):
    b = np.array(boxes, np.float32).reshape(-1, 4)
    lm = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None, :], 5, axis=1)
    return Detections(b, np.full(len(b), 0.9, np.float32), lm)


def test_tracker_keeps_ids_and_separates_two_faces():
    t = FaceTracker()
    seen = []
    for f in range(10):
        faces = t.update(_det([10 + 2 * f, 10, 60 + 2 * f, 70], [200 - 2 * f, 20, 250 - 2 * f, 80]))
        seen.append(faces)
    final = [f.track_id for f in seen[-1]]
    assert None not in final and len(set(final)) == 2
    for faces in seen[3:]:
        assert sorted(f.track_id for f in faces) == sorted(final)


def test_unconfirmed_detections_are_still_returned():
    t = FaceTracker(TrackerConfig(confirm_hits=3))
    faces = t.update(_det([10, 10, 60, 70]))
    assert len(faces) == 1 and faces[0].track_id is None and not faces[0].predicted


def _weak(*faces):
    """Detections from (box, weak) pairs: weak ones score 0.35, the others 0.9."""
    d = _det(*(b for b, _ in faces))
    weak = np.array([w for _, w in faces], bool)
    return Detections(d.boxes, np.where(weak, 0.35, 0.9).astype(np.float32), d.landmarks, {"weak": weak})


def test_a_weak_face_continues_a_confirmed_track_and_nothing_else():
    """ByteTrack's second association: a face below the detector's threshold keeps a confirmed
    track detected (not predicted, not drifting); a weak face elsewhere is no face at all, and
    a weak face never starts a track, even repeated."""
    t = FaceTracker()
    for f in range(4):
        t.update(_det([10 + 2 * f, 10, 60 + 2 * f, 70]))
    for f in range(4, 30):  # longer than the track's patience: only the weak faces keep it
        faces = t.update(_weak(([10 + 2 * f, 10, 60 + 2 * f, 70], True), ([300, 10, 350, 70], True)))
        assert len(faces) == 1, f"frame {f}: the weak face away from every track must be dropped"
        (face,) = faces
        assert not face.predicted and face.track_id is not None and face.detection == 0 and face.score == pytest.approx(0.35)
    fresh = FaceTracker()
    for f in range(5):
        assert fresh.update(_weak(([10, 10, 60, 70], True))) == []
    (strong,) = fresh.update(_weak(([10, 10, 60, 70], False)))
    assert strong.track_id is None and not strong.predicted


def test_weak_marks_must_match_the_faces():
    d = _det([0, 0, 10, 10], [20, 0, 30, 10])
    with pytest.raises(ValueError, match=r"data\[.weak.\] must have one entry per face"):
        Detections(d.boxes, d.scores, d.landmarks, {"weak": np.zeros(3, bool)})
    s = Detections(d.boxes, d.scores, d.landmarks, {"weak": np.array([True, False])}).subset(np.array([False, True]))
    assert len(s) == 1 and s.boxes[0, 0] == 20 and s.weak.tolist() == [False]


def test_track_survives_misses_with_growing_prediction_then_ends():
    cfg = TrackerConfig(patience=6)
    t = FaceTracker(cfg)
    for f in range(8):
        t.update(_det([10 + 3 * f, 10, 60 + 3 * f, 70]))
    covers = []
    for miss in range(1, 30):
        faces = t.update(Detections.empty())
        if not faces:
            break
        (face,) = faces
        assert face.predicted and face.missed_frames == miss
        covers.append(face.cover[2] - face.cover[0])
    assert 3 <= len(covers) <= cfg.patience + 1, "track must outlive a short miss, then end (hysteresis)"
    assert all(b > a for a, b in zip(covers, covers[1:])), "prediction must grow while the face is unseen"


def _face(box):
    b = np.array(box, np.float32)
    return Face(b, np.zeros((5, 2), np.float32), 0.9, 1, False, b)


def _cover(mode, img, boxes):
    """The cover stage as the run calls it (apply_batch on a batch of TrackedFrames, host ops):
    `img` is edited in place; returns the frame's faces."""
    tf = TrackedFrame(Frame(0, 0, 1, img), [_face(b) for b in boxes], len(boxes))
    FaceCover(mode).apply_batch([tf])
    return tf.faces


@pytest.mark.parametrize("mode", ["blur", "pixelate", "mask"])
def test_cover_changes_the_face_and_nothing_beyond_the_feather(mode):
    img = data.astronaut().copy()
    original = img.copy()
    box = ASTRONAUT_FACE
    faces = _cover(mode, img, [box])
    assert [f.outcome for f in faces] == [mode]
    x1, y1, x2, y2 = box.astype(int)
    inner = np.abs(img[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].astype(int) - original[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]).mean()
    assert inner > 20
    r = face_region(box, img.shape[:2])
    outside = np.ones(img.shape[:2], bool)
    outside[r.y0 : r.y1, r.x0 : r.x1] = False
    assert np.array_equal(img[outside], original[outside])
    assert r.alpha.max() == 1.0 and r.alpha.min() == 0.0  # full strength inside, feathered edge


def test_cover_handles_boxes_off_the_frame_edge():
    img = np.full((100, 100, 3), 200, np.uint8)
    _cover("mask", img, [[-30, -30, 20, 20], [500, 500, 600, 600]])
    assert img[0, 0].sum() == 0 and img[99, 99].sum() == 600


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="valid modes: blur, pixelate, mask"):
        FaceCover("smudge")


def test_failing_stage_stops_the_pipeline_instead_of_hanging():
    def source(_):
        for i in range(10_000):
            yield i

    def boom(items):
        for i in items:
            if i == 5:
                raise ValueError("bad item")
            yield i

    start = time.monotonic()
    with pytest.raises(StageError, match="boom stage failed: ValueError: bad item"):
        with StagePipeline([("source", source), ("boom", boom)], maxsize=2) as pipe:
            for _ in pipe:
                pass
    assert time.monotonic() - start < 5
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("anonswap-")], "threads left running"


def test_pipeline_keeps_order_and_bounds_memory():
    produced = []

    def source(_):
        for i in range(200):
            produced.append(i)
            yield i

    def double(items):
        for i in items:
            yield 2 * i

    out = []
    with StagePipeline([("source", source), ("double", double)], maxsize=4) as pipe:
        for x in pipe:
            if len(out) == 0:
                time.sleep(0.3)  # a slow consumer: the source must wait, not run ahead
                assert len(produced) <= 4 * 2 + 3
            out.append(x)
    assert out == [2 * i for i in range(200)]


def test_a_user_error_in_a_stage_comes_out_as_itself():
    """Bad input found mid-stream (e.g. by the decoder) keeps its one-line message and exit status 2, not a StageError wrapper."""
    from pipeline.core.errors import InvalidInputError

    def source(_):
        yield 1
        raise InvalidInputError("input is truncated or corrupt")

    with pytest.raises(InvalidInputError, match="^input is truncated or corrupt$"):
        with StagePipeline([("source", source), ("pass", lambda items: items)], maxsize=2) as pipe:
            for _ in pipe:
                pass


def test_a_stage_that_outlives_the_join_timeout_is_named(caplog):
    """A stage stuck in a call that ignores the stop flag is reported, not silently left."""
    release = threading.Event()

    def source(_):
        yield 1
        release.wait(5)  # blocked, as in a network read with no timeout
        yield 2

    with caplog.at_level("WARNING", logger="pipeline.core.stages"):
        with StagePipeline([("source", source), ("pass", lambda items: items)], maxsize=1, join_timeout_s=0.2) as pipe:
            assert next(iter(pipe)) == 1
    source_thread = next(s for s in pipe.stages if s.stage_name == "source")
    assert pipe.stuck == ["source"] and source_thread.is_alive()
    assert "still running" in caplog.text and "source" in caplog.text
    release.set()


def test_the_reader_is_not_closed_under_a_decode_call_in_flight(synthetic, caplog):
    """close() waits for the demux/decode call another thread is in; if it does not finish,
    the container is left open (freeing it there would crash FFmpeg) and decoding stops after."""
    from pipeline.io.video_reader import VideoReader

    reader = VideoReader(synthetic.path).open()
    frames = reader.frames()
    next(frames)
    in_call = threading.Thread(target=lambda: (reader._libav.acquire(), time.sleep(1.0), reader._libav.release()))
    in_call.start()
    time.sleep(0.1)
    with caplog.at_level("WARNING"):
        reader.close(wait_s=0.2)
    assert reader.left_open and reader.container is not None and "leaving" in caplog.text
    in_call.join()
    assert list(frames) == [], "the decode thread stops at its next call"
    reader.close()
    assert reader.container is None


def test_closing_the_reader_while_another_thread_decodes_ends_it_cleanly(synthetic):
    from pipeline.io.video_reader import VideoReader

    reader = VideoReader(synthetic.path).open()
    got, errors = [], []

    def consume():
        try:
            for f in reader.frames():
                got.append(f.index)
                time.sleep(0.01)
        except BaseException as e:  # noqa: BLE001 - the test reports whatever happened
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.1)
    reader.close()
    t.join(5)
    assert not t.is_alive() and errors == [] and 0 < len(got) < synthetic.frames
