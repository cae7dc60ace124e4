"""The privacy-audit page: self-contained, escaped, private, atomic, and readable in a browser."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from pipeline.audit.html_report import render_html
from pipeline.audit.pictures import contact_sheet_png, histogram_png, thumbnail_strip_png
from pipeline.audit.records import AuditThumbnails, TrackSheet

BANNER = "contains unanonymized faces: personal data, handle like the original video"
FACE = (slice(20, 200), slice(140, 320))  # the astronaut's head in skimage's 512x512 picture


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text, as the browser would see them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @classmethod
    def of(cls, path) -> "Page":
        p = cls()
        with open(path, encoding="utf-8") as fh:
            p.feed(fh.read())
        p.close()
        return p

    def imgs(self) -> list[str]:
        return [a.get("src", "") for t, a in self.tags if t == "img"]

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _thumb(dx: int = 0, dy: int = 0, size: int = 96) -> np.ndarray:
    img = astronaut()
    crop = img[FACE[0].start + dy:FACE[0].stop + dy, FACE[1].start + dx:FACE[1].stop + dx]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _anonymized(thumb: np.ndarray) -> np.ndarray:
    small = cv2.resize(thumb, (8, 8), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, thumb.shape[1::-1], interpolation=cv2.INTER_NEAREST)


def _sheet(track_id: int, frames: list[int]) -> TrackSheet:
    orig = [_thumb(dx=2 * i, dy=i) for i in range(len(frames))]
    return TrackSheet(track_id, frames, orig, [_anonymized(o) for o in orig])


def _audit(original="/data/in put/clip.mp4", anonymized="/data/out/clip_anon.mp4", *, leaks=2, reid=0.0125):
    rng = np.random.default_rng(0)
    items = [
        {"frame": 120 + 7 * i, "time": (120 + 7 * i) / 29.97, "box": [310.4, 88.0, 402.7, 201.2],
         "score": 0.91, "change": 0.0031, "covered": i % 2 == 0}
        for i in range(leaks)
    ]
    return {
        "original": original, "anonymized": anonymized, "boxes": "/data/out/clip_boxes.jsonl",
        "frames": 1800, "faces": 2412, "recognizer": "dlib", "independent_of_pipeline": False,
        "threshold": {"far_target": 0.001, "value": 0.9312, "source": "impostor pairs of this video",
                      "impostor_pairs": 48210, "genuine_pairs": 3150, "far_achieved": 0.00097,
                      "eer": 0.021, "eer_threshold": 0.905},
        "reid": {"rate": reid, "matches": round(reid * 2412), "faces": 2412, "mean_similarity": 0.8123},
        "negated_reid": {"rate": 0.0, "matches": 0, "faces": 2412},
        "temporal_consistency": {"output": {"mean": 0.0912, "std": 0.031, "pairs": 2300},
                                 "original": {"mean": 0.0644, "std": 0.022, "pairs": 2300}},
        "detection": {"rate": 0.974, "detected": 2349, "faces": 2412,
                      "landmark_displacement": {"mean": 0.061, "median": 0.048, "p95": 0.152,
                                                "unit": "inter-ocular distance"}},
        "leaks": {"count": leaks, "frames": [it["frame"] for it in items], "items": items,
                  "suspect": items[:1], "detector": "dlib-mmod", "detector_faces": 2398, "every": 5,
                  "change_threshold": 0.01},
        "leak_detector": {"name": "dlib-mmod", "every": 5, "run_detectors": ["retinaface-mnet025", "centerface"],
                          "independent_of_pipeline": True},
        "tracks": [
            {"track_id": 1, "faces": 1500, "first_frame": 0, "last_frame": 1499, "reid_rate": 0.0,
             "mean_similarity": 0.80, "m_tc_mean": 0.088, "leaks": 0},
            {"track_id": 7, "faces": 912, "first_frame": 400, "last_frame": 1799, "reid_rate": 0.033,
             "mean_similarity": 0.83, "m_tc_mean": 0.097, "leaks": leaks},
        ],
        "distances": {
            "genuine": rng.normal(0.95, 0.015, 3150).clip(-1, 1).tolist(),
            "impostor": rng.normal(0.80, 0.04, 48210).clip(-1, 1).tolist(),
            "original_vs_anonymized": rng.normal(0.81, 0.03, 2412).clip(-1, 1).tolist(),
            "negated": rng.normal(0.70, 0.05, 2412).clip(-1, 1).tolist(),
            "temporal_output": rng.gamma(4, 0.023, 2300).tolist(),
            "temporal_original": rng.gamma(4, 0.016, 2300).tolist(),
        },
    }


def _render(tmp_path, audit=None, sheets=None, thumbs=None, name="report.html"):
    audit = _audit() if audit is None else audit
    sheets = [_sheet(1, list(range(0, 1500, 150))), _sheet(7, [400, 700, 1000, 1300, 1600])] if sheets is None else sheets
    thumbs = [(120, _thumb(size=80)), (127, cv2.resize(_thumb(), (60, 90)))] if thumbs is None else thumbs
    path = tmp_path / name
    render_html(audit, sheets, thumbs if isinstance(thumbs, AuditThumbnails) else AuditThumbnails(leaks=thumbs), str(path))
    return path


def _decode(src: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    raw = base64.b64decode(src[len(prefix):], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.size
    return img


def test_page_is_self_contained_with_valid_images(tmp_path):
    path = _render(tmp_path)
    text = path.read_text(encoding="utf-8")
    page = Page.of(path)
    srcs = page.imgs()
    # 2 histograms + leak strip + 2 contact sheets
    assert len(srcs) == 5
    shapes = [_decode(s).shape for s in srcs]
    # Track 1 has 10 columns of 96 px: the sheet is at least that wide and two rows high.
    assert any(w >= 10 * 96 and h >= 2 * 96 for h, w, _ in shapes)
    assert "http://" not in text.lower() and "https://" not in text.lower()
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for key in ("href", "src", "action", "srcset"):
            assert key not in attrs or attrs[key].startswith("data:image/png;base64,"), (tag, key)
    visible = page.visible()
    assert BANNER in visible.lower()
    assert "/data/in put/clip.mp4" in visible and "/data/out/clip_anon.mp4" in visible
    assert "FAIL" in visible and "1.2%" in visible  # re-ID 0.0125, shown with one decimal
    assert "0.150" in visible and "0.075" in visible and "Table 5.6" in visible
    assert "Track 7" in visible and "Track 1" in visible


@pytest.mark.parametrize("bad", ['<script>alert("x")</script>', "a&b<img src=x onerror=alert(1)>", "\"'><b>"])
def test_paths_from_the_dict_are_escaped(tmp_path, bad):
    audit = _audit(original=f"/videos/{bad}.mp4", anonymized=f"/out/{bad}.mp4")
    audit["threshold"]["source"] = bad
    audit["leaks"]["items"][0]["covered"] = bad
    page = Page.of(_render(tmp_path, audit))
    clean = Page.of(_render(tmp_path, _audit(), name="clean.html"))
    # Same tags as with harmless paths: nothing in the strings became markup.
    assert [t for t, _ in page.tags] == [t for t, _ in clean.tags]
    assert "script" not in [t for t, _ in page.tags]
    assert f"/videos/{bad}.mp4" in page.visible()


@pytest.mark.parametrize(
    "audit",
    [
        {},
        {k: None for k in ("original", "anonymized", "boxes", "frames", "faces", "recognizer",
                           "independent_of_pipeline", "threshold", "reid", "negated_reid",
                           "temporal_consistency", "detection", "leaks", "tracks", "distances")},
        {"original": "a.mp4", "anonymized": "b.mp4", "frames": 10, "faces": 0,
         "threshold": {"value": None, "far_target": 0.001}, "reid": {"rate": None, "matches": 0, "faces": 0},
         "temporal_consistency": {"output": {"mean": None, "std": None, "pairs": 0}},
         "detection": {"rate": None, "landmark_displacement": {"mean": float("nan")}},
         "leaks": {"count": 0, "items": [], "suspect": [], "frames": []}, "tracks": [],
         "distances": {"genuine": [], "impostor": [], "original_vs_anonymized": [float("nan")],
                       "negated": [], "temporal_output": [], "temporal_original": []}},
    ],
    ids=["empty", "all-none", "no-faces"],
)
def test_empty_audit_renders_and_fails_closed(tmp_path, audit):
    page = Page.of(_render(tmp_path, audit, sheets=[], thumbs=[]))
    visible = page.visible()
    assert BANNER in visible.lower()
    assert "FAIL" in visible and "not measured" in visible  # nothing measured never reads as a pass
    assert len(page.imgs()) == 2  # the two histograms, saying "no data"
    for s in page.imgs():
        _decode(s)


def test_pass_only_when_no_leak_and_no_reidentification(tmp_path):
    audit = _audit(leaks=0, reid=0.0)
    audit["leaks"]["suspect"] = []
    page = Page.of(_render(tmp_path, audit, thumbs=[]))
    classes = [a.get("class", "") for t, a in page.tags if t == "div"]
    assert "verdict ok" in classes and "PASS" in page.visible()

    audit["leaks"]["suspect"] = _audit()["leaks"]["items"][:1]  # claimed anonymized, unchanged
    page = Page.of(_render(tmp_path, audit, thumbs=[], name="r2.html"))
    assert "verdict bad" in [a.get("class", "") for t, a in page.tags if t == "div"]


def test_file_is_private_and_no_temp_file_is_left(tmp_path):
    path = _render(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["report.html"]
    _render(tmp_path)  # overwriting keeps it private and leaves nothing beside it
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["report.html"]


def test_failing_render_leaves_no_file(tmp_path):
    sheet = _sheet(3, [1, 2, 3])
    sheet.anonymized.pop()  # changed after construction: caught when drawing
    with pytest.raises(ValueError, match="TrackSheet 3: expects as many"):
        _render(tmp_path, sheets=[_sheet(1, [0, 5]), sheet])
    assert os.listdir(tmp_path) == []


def test_failing_render_keeps_the_previous_report(tmp_path):
    path = _render(tmp_path)
    before = path.read_bytes()
    sheet = _sheet(3, [1, 2])
    sheet.frames.append(3)
    with pytest.raises(ValueError):
        _render(tmp_path, sheets=[sheet])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["report.html"]


@pytest.mark.parametrize(
    "frames, original, anonymized, match",
    [
        ([1, 2], [_thumb()], [_thumb()], "as many original and anonymized"),
        ([1], [_thumb()], [_thumb(size=64)], "same size"),
        ([1], [_thumb().astype(np.float32)], [_thumb()], "uint8 RGB"),
        ([1], [_thumb()[:, :, 0]], [_thumb()], "H×W×3"),
    ],
    ids=["lengths", "sizes", "dtype", "channels"],
)
def test_track_sheet_rejects_mismatched_thumbnails(frames, original, anonymized, match):
    with pytest.raises(ValueError, match=match):
        TrackSheet(5, frames, original, anonymized)


def test_contact_sheet_wraps_long_tracks_and_keeps_pixels():
    sheet = _sheet(2, list(range(0, 130, 10)))  # 13 columns → two bands of up to 10
    img = _decode("data:image/png;base64," + base64.b64encode(contact_sheet_png(sheet)).decode())
    one = _decode("data:image/png;base64," + base64.b64encode(contact_sheet_png(_sheet(2, [0]))).decode())
    assert img.shape[0] > 2 * one.shape[0] - 10 and img.shape[1] > 10 * 96
    # The first original thumbnail appears unscaled somewhere in the sheet.
    hit = cv2.matchTemplate(img, cv2.cvtColor(sheet.original[0], cv2.COLOR_RGB2BGR), cv2.TM_SQDIFF)
    assert hit.min() == 0
    assert contact_sheet_png(TrackSheet(4, [], [], []))[:4] == b"\x89PNG"


def test_histogram_and_strip_edge_cases():
    for series in ({}, {"a": []}, {"a": [0.5, 0.5]}, {"a": [float("nan"), float("inf")], "b": [0.1]}):
        png = histogram_png(series, threshold=0.3, title="t", xlabel="x")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert histogram_png({"a": [1, 2]}, threshold=None, title="t", xlabel="x")[:4] == b"\x89PNG"
    assert thumbnail_strip_png([]) is None
    gray = np.full((40, 30), 128, np.uint8)
    assert thumbnail_strip_png([(3, gray)])[:4] == b"\x89PNG"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium/chromium-browser on PATH (Debian: apt-get install -y chromium)")
def test_chromium_renders_the_page(tmp_path):
    path = _render(tmp_path)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
         path.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert shot.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (2000, 1200)
    assert img.std() > 20, "the screenshot is (nearly) uniform: the page did not render"
    non_white = (img < 235).any(axis=2).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
    # The red privacy banner is drawn at the top: CSS was applied, not just raw text.
    b, g, r = (img[:60].reshape(-1, 3).astype(int).T)
    assert ((r > 150) & (g < 60) & (b < 80)).mean() > 0.2


def test_the_page_names_the_leak_detector_and_its_independence(tmp_path):
    visible = Page.of(_render(tmp_path)).visible()
    assert "dlib-mmod" in visible and "every 5th frame" in visible and "CenterFace" not in visible
    assert "retinaface-mnet025, centerface" in visible  # what the run used, beside the verdict on it
    assert "misses faces in the dark and faces cut by the frame's edge" in visible  # its measured blind spots

    dependent = _audit()
    dependent["leak_detector"].update(name="centerface", run_detectors=["centerface"], independent_of_pipeline=False)
    visible = Page.of(_render(tmp_path, dependent, name="dep.html")).visible()
    assert "cannot see the faces the run missed" in visible

    # A report written before the detector was named: CenterFace on every frame.
    old = _audit(leaks=0)
    old["leaks"] = {"count": 0, "items": [], "suspect": [], "frames": [], "centerface_faces": 2398, "change_threshold": 0.08}
    del old["leak_detector"]
    visible = Page.of(_render(tmp_path, old, thumbs=[], name="old.html")).visible()
    assert "all 2,398 faces the leak detector (centerface, every frame)" in visible


NOT_JUDGEABLE = ("3 faces are not judgeable: the recognizer cannot tell them from a heavy blur of themselves "
                 "(too dark or flat to carry an identity), so they are left out of re-ID and ¬ID.")


def test_faces_not_judgeable_are_said_and_shown_and_suspects_shown(tmp_path):
    audit = _audit()
    dark = [{"frame": 30 + i, "track_id": 7, "box": [1, 2, 30, 40], "similarity": 0.99, "destroyed_similarity": 0.995}
            for i in range(3)]
    audit["judgeable"] = {"faces": 2409, "not_judgeable": 3, "rule": "below τ", "items": dark}
    audit["tracks"][1]["not_judgeable"] = 3
    dim = (_thumb() // 20).astype(np.uint8)
    thumbs = AuditThumbnails(leaks=[(120, _thumb())], suspects=[(120, np.hstack([_thumb(), _thumb()]))],
                             not_judgeable=[(30 + i, dim) for i in range(3)])
    page = Page.of(_render(tmp_path, audit, thumbs=thumbs))
    visible = page.visible()
    assert NOT_JUDGEABLE in visible and "Faces not judgeable" in visible
    assert len(page.imgs()) == 7  # 2 histograms, the strips of faces not judgeable, leaks and suspects, 2 sheets
    assert "not judgeable 3" in visible  # track 7's line
    for s in page.imgs():
        _decode(s)

    # none left: no sentence; and a page with no face judgeable fails, saying why
    assert "not judgeable:" not in Page.of(_render(tmp_path, _audit(), name="plain.html")).visible()
    audit["judgeable"] = {"faces": 0, "not_judgeable": 5, "rule": "below τ", "items": dark}
    audit["reid"] = {"rate": None, "matches": 0, "faces": 0, "mean_similarity": None}
    visible = Page.of(_render(tmp_path, audit, name="none.html")).visible()
    assert "FAIL" in visible and "none of the 5 faces is judgeable" in visible
