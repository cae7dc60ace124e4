"""The privacy audit: its statistics on known distributions, and whole audits of real video.

The video tests use the synthetic astronaut clip (a real face) and real runs of the pipeline:
the original against itself (nothing anonymized: every face re-identified, every face a
leak), against its blur output (no leak), and against a copy where one face was put back
for exactly 10 frames (exactly those frames listed).
"""

import json
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.stats import norm

from conftest import SHARED, no_leftovers, run_cli
from pipeline.audit import metrics
from pipeline.audit.boxes_file import read_boxes
from pipeline.audit.judgeable import destroyed_copy, is_judgeable
from pipeline.audit.leaks import CHANGE_THRESHOLD, change_score, covered_fraction
from pipeline.audit.thumbnails import TopThumbnails, TrackThumbnails
from pipeline.core.errors import InvalidInputError

IDENTITIES = SHARED / "data" / "faces" / "identities"


# --- statistics with known answers ----------------------------------------------------------

def test_far_threshold_on_a_grid_accepts_exactly_the_allowed_impostors():
    scores = np.arange(1000) / 1000.0  # 0.000 … 0.999, all distinct
    t = metrics.far_threshold(scores, 0.01)
    assert np.sum(scores >= t.value) == 10  # ⌊0.01·1000⌋ false accepts, no more
    assert 0.989 < t.value <= 0.990
    assert t.far_achieved == pytest.approx(0.01)


def test_far_threshold_on_a_gaussian_is_its_quantile():
    rng = np.random.default_rng(1)
    t = metrics.far_threshold(rng.normal(0.0, 1.0, 400_000), 0.001)
    assert t.value == pytest.approx(norm.ppf(0.999), abs=0.03)
    assert t.far_achieved <= 0.001


def test_far_threshold_never_exceeds_the_target_with_ties_or_few_pairs():
    t = metrics.far_threshold([0.5, 0.5, 0.5, 0.2], 0.3)  # k = 1, but the top score is a 3-way tie
    assert t.far_achieved <= 0.3 and t.value > 0.5
    few = metrics.far_threshold([0.1, 0.7, 0.3], 0.001)  # 3 pairs cannot resolve 0.001: above the max
    assert few.value > 0.7 and few.far_achieved == 0.0
    with pytest.raises(ValueError):
        metrics.far_threshold([], 0.001)
    with pytest.raises(ValueError):
        metrics.far_threshold([0.1], 1.5)


def test_eer_of_two_uniforms_and_two_gaussians():
    rng = np.random.default_rng(2)
    # genuine U(0.5, 1.5), impostor U(0, 1): FAR = 1 − τ, FRR = τ − 0.5 → cross at τ = 0.75, EER 0.25
    e = metrics.equal_error_rate(rng.uniform(0.5, 1.5, 200_000), rng.uniform(0.0, 1.0, 200_000))
    assert e.eer == pytest.approx(0.25, abs=0.005) and e.threshold == pytest.approx(0.75, abs=0.01)
    # N(1, 0.5) vs N(−1, 0.5): EER = Φ(−2), at τ = 0
    e = metrics.equal_error_rate(rng.normal(1, 0.5, 200_000), rng.normal(-1, 0.5, 200_000))
    assert e.eer == pytest.approx(norm.cdf(-2), abs=0.003) and abs(e.threshold) < 0.03


def test_eer_of_separable_and_identical_scores():
    assert metrics.equal_error_rate([2.0, 3.0], [0.0, 1.0]).eer == 0.0
    assert metrics.equal_error_rate([0.0, 1.0], [0.0, 1.0]).eer == pytest.approx(0.5)


def test_match_rates_and_temporal_distances():
    m = metrics.match_rate(np.array([0.2, 0.5, 0.9]), 0.5)
    assert (m.matches, m.faces) == (2, 3) and m.rate == pytest.approx(2 / 3)
    assert metrics.match_rate(np.array([]), 0.5).rate is None
    e = np.eye(3, dtype=np.float32)
    d = metrics.temporal_distances({1: [(5, e[1]), (0, e[0]), (9, e[1])], 2: [(0, e[2])]})
    assert sorted(d) == [0.0, 1.0]  # sorted by frame: e0→e1 (orthogonal), e1→e1 (same)
    lm = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], np.float32)
    assert metrics.landmark_displacement(lm, lm + [5, 0]) == pytest.approx(0.5)


# --- pieces of the leak check -------------------------------------------------------------

def test_change_score_tells_untouched_from_blurred():
    import cv2
    from skimage import data

    img = data.astronaut()
    box = np.array([180, 60, 270, 178], np.float32)  # the face
    assert change_score(img, img, box) == pytest.approx(0.0, abs=1e-9)
    blurred = img.copy()
    blurred[60:178, 180:270] = cv2.GaussianBlur(img[60:178, 180:270], (0, 0), 6)
    assert change_score(img, blurred, box) > 3 * CHANGE_THRESHOLD
    assert covered_fraction(box, np.array([[170, 50, 280, 190]], np.float32)) == 1.0
    assert covered_fraction(box, np.zeros((0, 4), np.float32)) == 0.0


def test_boxes_file_errors_are_input_errors(tmp_path):
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"frame": 0, "faces": [{"box": [1, 2, 3]}]}\n')
    with pytest.raises(InvalidInputError, match="line 1"):
        read_boxes(str(bad))


def test_thumbnails_stay_bounded_and_span_the_track():
    th = TrackThumbnails(columns=4)
    img = np.zeros((60, 80, 3), np.uint8)
    for f in range(1000):
        th.add(7, f, img, img, np.array([10, 10, 40, 40], np.float32))
    assert len(th._kept[7]) <= 8
    sheet = th.sheets()[0]
    assert len(sheet.frames) == 4 and sheet.frames[0] == 0 and sheet.frames[-1] >= 500
    assert sheet.original[0].shape == (96, 96, 3)


def test_destroyed_copy_blurs_the_grown_box_only():
    from skimage import data

    img = data.astronaut()
    box = np.array([180, 60, 270, 178], np.float32)  # the face; grown 1.3×: x 166.5–283.5, y 42.3–195.7
    d = destroyed_copy(img, box[None])
    assert d.shape == img.shape and d.dtype == img.dtype and not np.shares_memory(d, img)
    outside = np.ones(img.shape[:2], bool)
    outside[42:196, 166:284] = False
    assert np.array_equal(d[outside], img[outside])
    detail = lambda im: np.abs(np.diff(im[70:170, 190:260].astype(np.float64), axis=1)).mean()  # noqa: E731
    assert detail(d) < detail(img) / 5  # nothing sharp left in the face
    edge = destroyed_copy(img, np.array([[-40, -30, 20, 25], [520, 520, 560, 560]], np.float32))  # cut by / past the frame
    assert edge.shape == img.shape and np.array_equal(edge[100:], img[100:])


def _jpeg(image: np.ndarray) -> np.ndarray:
    """Through JPEG at quality 30: stands in for the video codec, which smooths small variations away."""
    import cv2

    bgr = cv2.imdecode(cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _night_face(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Issue 31's dark faces: mean luminance ~6 with a spread of ~2 grey levels in the face's box."""
    import cv2

    x0, y0, x1, y1 = box.astype(int)
    face = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1].astype(np.float64)
    return np.clip(6 + (image - face.mean()) * (2 / face.std()), 0, 255).round().astype(np.uint8)


@pytest.mark.skipif(not IDENTITIES.exists(), reason=f"needs ../shared test data ({IDENTITIES} not found)")
@pytest.mark.parametrize("photo", ["lin-manuel-miranda.png", "obama.jpg", "rose_leslie1.jpg"])
def test_a_near_black_face_is_not_judgeable_and_the_same_face_lit_is(photo):
    """dlib matches a near-black ~40-px face to a heavy blur of itself above τ (on the shared
    clip: 0.991–0.998), so its re-ID says nothing about the anonymizer; the same face lit is
    told apart from its blur (0.83–0.89 here)."""
    import cv2

    from engines.embedders import calibration, load_embedder
    from pipeline.detect.retinaface import RetinaFaceDetector

    detector, embedder = RetinaFaceDetector(), load_embedder("dlib")
    tau = calibration("dlib")[0]  # the audit's τ when no impostor pair sets one
    photo = cv2.cvtColor(cv2.imread(str(IDENTITIES / photo)), cv2.COLOR_BGR2RGB)
    (big,) = detector.detect([photo])[0].boxes
    s = 40 / (big[2] - big[0])
    lit = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    found = detector.detect([lit])[0]  # the dark copy has the same geometry: embedded at these landmarks
    assert len(found) == 1

    def destroyed_similarity(image: np.ndarray) -> float:
        z = embedder.embed(image, found.landmarks)
        return float(metrics.pair_scores(z, embedder.embed(destroyed_copy(image, found.boxes), found.landmarks))[0])

    dark = _jpeg(_night_face(lit, found.boxes[0]))
    x0, y0, x1, y1 = found.boxes[0].astype(int)
    grey = cv2.cvtColor(dark, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1]
    assert grey.mean() < 12 and grey.std() < 5  # as dark and flat as the shared clip's
    assert not is_judgeable(destroyed_similarity(dark), tau)
    assert is_judgeable(destroyed_similarity(_jpeg(lit)), tau)


def test_top_thumbnails_keep_the_highest_scores_in_frame_order():
    top = TopThumbnails(cap=3)
    img = np.zeros((60, 80, 3), np.uint8)
    for key, score in enumerate([0.5, 0.99, 0.2, 0.99, 0.97, 0.1, 0.98]):
        top.add(score, key, 10 * key, img, np.array([10, 10, 40, 40], np.float32))
    kept = top.kept()
    assert [(s, k, f) for s, k, f, _ in kept] == [(0.99, 1, 10), (0.99, 3, 30), (0.98, 6, 60)]
    assert kept[0][3].shape == (96, 96, 3)


# --- whole audits -------------------------------------------------------------------------

def _rewrite(src: str, dst: str, frames: list[np.ndarray]) -> None:
    with av.open(src) as c:
        rate = c.streams.video[0].average_rate
    with av.open(dst, "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "20", "preset": "veryfast"}
        for img in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def blurred(synthetic, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    out, boxes = d / "blur.mp4", d / "blur.jsonl"
    r = run_cli(synthetic.path, "-o", out, "--mode", "blur", "--boxes", boxes, "-q")
    assert r.returncode == 0, r.stderr
    return out, boxes


# The leak logic is tested with CenterFace on every frame (independent of these RetinaFace
# runs, and fast; also what `auto` picks for them); MTCNN, `auto`'s choice for CenterFace
# runs, and dlib's CNN, every 5th frame: test_audit_detector.py.
EVERY_FRAME = ("--leak-detector", "centerface")


def _audit(original, anonymized, tmp_path, *extra, name="audit", leak=EVERY_FRAME):
    out = tmp_path / f"{name}.json"
    r = run_cli("audit", original, anonymized, "-o", out, "--html", tmp_path / f"{name}.html", "-q", *leak, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_original_against_itself_is_fully_identified_and_all_leaks(synthetic, tmp_path):
    a = _audit(synthetic.path, synthetic.path, tmp_path)
    assert a["faces"] >= 30
    assert a["reid"]["rate"] == 1.0 and a["reid"]["mean_similarity"] > 0.999
    assert a["negated_reid"]["rate"] == 0.0
    assert a["detection"]["rate"] == 1.0 and a["detection"]["landmark_displacement"]["median"] < 0.01
    lk = a["leaks"]
    assert lk["detector_faces"] >= 35 and lk["count"] == lk["detector_faces"]
    assert lk["frames"] == sorted({i["frame"] for i in lk["items"]}) and len(lk["frames"]) >= 35
    assert a["threshold"]["source"].startswith("recognizer default")  # one person on screen: no impostor pairs
    assert (tmp_path / "audit.html").stat().st_size > 10_000


def test_blur_output_has_no_leak_and_is_not_reidentified(synthetic, blurred, tmp_path):
    out, boxes = blurred
    a = _audit(synthetic.path, out, tmp_path, "--boxes", boxes)
    assert a["leaks"]["count"] == 0 and a["leaks"]["suspect"] == []
    assert a["leaks"]["detector_faces"] >= 35
    assert a["reid"]["rate"] == 0.0
    assert a["reid"]["mean_similarity"] < 0.9
    # A lit face: every one judgeable, and re-ID and ¬ID are over the judgeable faces.
    j = a["judgeable"]
    assert j["faces"] == a["reid"]["faces"] == a["negated_reid"]["faces"] == a["faces"] >= 30
    assert j["not_judgeable"] == 0 and j["items"] == [] and "heavy blur" in j["rule"]
    tau = a["threshold"]["value"]
    assert all(f["judgeable"] and f["destroyed_similarity"] < tau for f in a["faces_detail"])
    assert len(a["distances"]["destroyed"]) == a["faces"]
    assert all(t["not_judgeable"] == 0 for t in a["tracks"])
    # Without the boxes file the pixels alone must say the same.
    b = _audit(synthetic.path, out, tmp_path, "--every", "8", name="noboxes")  # re-ID sampled: only the leaks matter here
    assert b["leaks"]["count"] == 0


@pytest.mark.parametrize("with_boxes", [True, False])
def test_a_face_left_untouched_for_10_frames_is_listed_on_exactly_those_frames(synthetic, blurred, tmp_path, with_boxes):
    out, boxes = blurred
    untouched = list(range(15, 25))
    orig, anon = _frames(synthetic.path), _frames(out)
    mixed = [orig[i] if i in untouched else anon[i] for i in range(len(anon))]
    tampered = tmp_path / "tampered.mp4"
    _rewrite(str(out), str(tampered), mixed)
    extra = []
    if with_boxes:  # as a run that lost the face on those frames would have written it
        lines = [json.loads(x) for x in Path(boxes).read_text().splitlines()]
        for row in lines:
            if row["frame"] in untouched:
                row["faces"] = []
        (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        extra = ["--boxes", tmp_path / "b.jsonl"]
    a = _audit(synthetic.path, tampered, tmp_path, *extra)
    assert a["leaks"]["frames"] == untouched
    assert a["leaks"]["count"] == 10
    assert a["reid"]["matches"] >= 8  # the put-back face is re-identified on its frames (2 may be untracked)


def test_suspect_when_the_boxes_claim_a_face_that_was_not_changed(synthetic, blurred, tmp_path):
    _, boxes = blurred  # the blur run's claims, against a video that was never anonymized
    a = _audit(synthetic.path, synthetic.path, tmp_path, "--boxes", boxes, "--every", "8")  # re-ID sampled: the leaks matter
    # Exact: the run covers every detection, confirmed or not (fail closed), so each face
    # the leak detector finds lies in a claimed cover (the blur run's own audit finds no leak, above),
    # and none of them changed: every one is a suspect, none a leak.
    lk = a["leaks"]
    assert lk["count"] == 0 and lk["detector_faces"] >= 35
    assert len(lk["suspect"]) == lk["detector_faces"]


def test_audit_flag_runs_after_anonymizing_and_leaves_no_scratch(synthetic, tmp_path):
    out = tmp_path / "o.mp4"
    r = run_cli(synthetic.path, "-o", out, "--mode", "pixelate", "--audit", "-q")
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "o.audit.json").read_text())
    assert (tmp_path / "o.audit.html").exists()
    assert a["leaks"]["count"] == 0 and a["leaks"]["claims"] == "boxes file"
    assert a["anonymized"].endswith("o.mp4") and a["frames"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.audit.html", "o.audit.json", "o.mp4"]


def test_fail_on_leak_gates(synthetic, tmp_path):
    r = run_cli("audit", synthetic.path, synthetic.path, "-o", tmp_path / "a.json", "--fail-on-leak", "-q", "--every", "5")
    assert r.returncode == 1 and (tmp_path / "a.json").exists()


def test_fail_on_leak_fails_on_suspects_alone(synthetic, blurred, tmp_path):
    """The boxes file claims a face on every frame, but the anonymizer "skipped" 8 of them;
    none of those is an embedded frame (every 5th), so no leak and no re-identified face
    remain to fail the gate: only the suspects show what happened."""
    out, boxes = blurred
    untouched = [i for i in range(15, 25) if i % 5]
    orig, anon = _frames(synthetic.path), _frames(out)
    tampered = tmp_path / "tampered.mp4"
    _rewrite(str(out), str(tampered), [orig[i] if i in untouched else anon[i] for i in range(len(anon))])
    args = ("audit", synthetic.path, tampered, "--boxes", boxes, "-o", tmp_path / "a.json", "-q", "--every", "5", *EVERY_FRAME)
    assert run_cli(*args).returncode == 0  # without the flag: the audit ran
    r = run_cli(*args, "--fail-on-leak")
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["leaks"]["count"] == 0 and a["reid"]["matches"] == 0 and a["reid"]["faces"] >= 7
    assert sorted(s["frame"] for s in a["leaks"]["suspect"]) == untouched
    assert r.returncode == 1, r.stderr


def test_bad_audit_inputs_are_one_line_errors(synthetic, blurred, tmp_path):
    from pipeline.synthetic import make_video

    out, _ = blurred
    short = make_video(str(tmp_path / "short.mp4"), frames=12).path
    short_mkv = make_video(str(tmp_path / "short.mkv"), frames=12).path  # Matroska stores no frame count
    other = make_video(str(tmp_path / "other.mp4"), width=256, height=192, frames=40).path
    cases = [
        (synthetic.path, tmp_path / "missing.mp4", "not found"),
        # told from the headers, before a pass over both videos
        (synthetic.path, short, "differ in length (40 vs 12 frames in their headers)"),
        (synthetic.path, short_mkv, "s in their headers)"),
        (synthetic.path, other, "differ in size"),
        (synthetic.path, out, "boxes file not found"),
    ]
    for orig, anon, msg in cases:
        extra = ["--boxes", tmp_path / "nope.jsonl"] if msg.startswith("boxes") else []
        r = run_cli("audit", orig, anon, "-o", tmp_path / "a.json", "-q", *extra)
        assert r.returncode == 2, (msg, r.stderr)
        assert r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr
        assert not (tmp_path / "a.json").exists() and not no_leftovers(tmp_path)
    r = run_cli("audit", synthetic.path, out, "-o", tmp_path / "a.json", "--far", "2")
    assert r.returncode == 2 and r.stderr.startswith("error:")


def test_an_unrelated_pair_or_another_video_s_boxes_are_refused_unless_allowed(synthetic, blurred, tmp_path):
    """Same size and length, so the headers cannot tell: the pair passed with re-ID 0 % and
    no leak, and another video's boxes were taken as this run's claims."""
    out, boxes = blurred
    mirrored = tmp_path / "mirrored.mp4"
    _rewrite(str(out), str(mirrored), [f[:, ::-1] for f in _frames(out)])  # another video: the blur output, mirrored
    rows = [json.loads(x) for x in Path(boxes).read_text().splitlines()]
    for row in rows:  # the boxes the mirrored video's run would have written
        for f in row["faces"]:
            for key in ("box", "cover"):
                x0, y0, x1, y1 = f[key]
                f[key] = [synthetic.width - x1, y0, synthetic.width - x0, y1]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("-o", tmp_path / "a.json", "-q", "--max-frames", "12", "--every", "12")  # the run's own pair: every test above
    for anon, extra, msg in ((mirrored, (), "the anonymized video is not a copy of the original"),
                             (out, ("--boxes", tmp_path / "m.jsonl"), "the boxes file is not this video's")):
        r = run_cli("audit", synthetic.path, anon, *extra, *common)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr and "--allow-unrelated" in r.stderr, r.stderr
        assert not (tmp_path / "a.json").exists()
    r = run_cli("audit", synthetic.path, mirrored, *common, "--allow-unrelated")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not IDENTITIES.exists(), reason=f"needs ../shared test data ({IDENTITIES} not found)")
def test_threshold_from_known_different_people(synthetic, blurred, tmp_path):
    out, boxes = blurred
    a = _audit(synthetic.path, out, tmp_path, "--boxes", boxes, "--every", "4",
               "--impostors", IDENTITIES, "--impostor-labels", IDENTITIES / "identities.csv")
    t = a["threshold"]
    assert t["impostor_sources"]["photos"] == t["impostor_pairs"] > 20  # the clip has one person: all from photos
    assert t["genuine_pairs"] > 0 and t["eer"] is not None
    assert t["far_achieved"] <= 0.001
    # dlib strangers never reach cos 1: the threshold sits just above the most similar strangers
    assert max(a["distances"]["impostor"]) <= t["value"] < 1.0 and t["far_achieved"] == 0.0
    assert a["reid"]["rate"] == 0.0
