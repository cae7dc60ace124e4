"""Self-contained test video: scikit-image's bundled astronaut face moving and scaling.

Used by the tests and the benchmarks (no `../shared` needed). The ground-truth face box of
every frame is returned, so a test can check that the face was covered where it really was.
Also a command, for a first run on a fresh machine:

    python -m pipeline.synthetic demo.mp4 [--width 1920 --height 1080 --frames 120]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

# Astronaut head and shoulders inside skimage.data.astronaut() (512×512), and the face box
# RetinaFace finds there, in the crop's coordinates.
_CROP_TLBR = (20, 130, 250, 330)  # top, left, bottom, right
_FACE_IN_CROP = np.array([178 - 130, 59 - 20, 273 - 130, 178 - 20], np.float32)


@dataclass
class SyntheticVideo:
    path: str
    width: int  # as displayed (the stored pixels are height×width when `rotation` is ±90)
    height: int
    frames: int
    time_base: Fraction
    pts: list[int]
    face_boxes: np.ndarray  # (frames, 4) ground truth x1, y1, x2, y2, in the displayed picture
    audio: bool
    metadata: dict = field(default_factory=dict)
    rotation: int = 0  # the display matrix written (PyAV's convention: degrees counterclockwise)
    mirror: bool = False  # … and flipped left-right (`ffmpeg -display_hflip`), as front cameras write


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([80 + 60 * np.sin(xx / 37.0), 90 + 50 * np.cos(yy / 29.0), 120 + 40 * np.sin((xx + yy) / 53.0)], -1)
    noise = rng.normal(0, 6, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    base += cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(base, 0, 255).astype(np.uint8)


def make_video(
    path: str,
    *,
    width: int = 320,
    height: int = 240,
    frames: int = 40,
    fps: Fraction = Fraction(30000, 1001),
    codec: str = "libx264",
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    mirror: bool = False,
    metadata: dict | None = None,
    face_height: float = 0.45,
    seed: int = 0,
) -> SyntheticVideo:
    """Writes the clip and returns its ground truth. `face_height` is the crop height as a
    fraction of the frame height at the start; the face grows by 30% along the way.

    `rotation` makes the clip a phone would write: the picture a viewer sees is the upright
    width×height scene (and the ground truth is in its coordinates), but the pixels are stored
    turned the other way (by the nearest quarter turn), with a display matrix of `rotation`
    degrees counterclockwise that turns them upright again. `mirror` also flips the matrix
    left-right (`ffmpeg -display_rotation R -display_hflip`), and the stored pixels with it.
    """
    from pipeline.io.orientation import display_matrix, orientation, to_stored

    from skimage import data

    rng = np.random.default_rng(seed)
    astro = data.astronaut()
    t, l, b, r = _CROP_TLBR
    crop = astro[t:b, l:r]
    bg = _background(height, width, rng)
    fmt = {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "matroska", "ts": "mpegts"}[path.rsplit(".", 1)[1]]
    out = av.open(path, "w", format=fmt)
    if metadata:
        out.metadata.update(metadata)
    time_base = Fraction(1, 90000)
    matrix = display_matrix(rotation, hflip=mirror) if rotation or mirror else None
    shown, flipped = orientation(matrix) if matrix else (0, False)
    turns = round(shown / 90) % 4  # np.rot90's k, stored → displayed (pipeline.io.orientation)
    vs = out.add_stream(codec, rate=fps, options={"preset": "ultrafast", "crf": "18"} if codec == "libx264" else {})
    vs.width, vs.height = (height, width) if turns % 2 else (width, height)
    vs.pix_fmt = "yuv444p" if (width % 2 or height % 2) else "yuv420p"
    vs.time_base = time_base
    vs.codec_context.time_base = time_base
    if matrix:
        vs.set_display_matrix(list(matrix))
    a_stream = None
    if audio:
        a_stream = out.add_stream("aac", rate=48000, layout="mono")
    step = float(1 / (fps * time_base))
    pts_list, boxes = [], []
    pts = 0
    for i in range(frames):
        u = i / max(1, frames - 1)
        scale = face_height * height / crop.shape[0] * (1.0 + 0.3 * u)
        ch, cw = max(2, round(crop.shape[0] * scale)), max(2, round(crop.shape[1] * scale))
        patch = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
        x0 = int(round(0.05 * width + u * (width - cw - 0.1 * width)))
        y0 = int(round(0.5 * (height - ch) + 0.15 * height * np.sin(2 * np.pi * u)))
        x0, y0 = max(0, min(width - cw, x0)), max(0, min(height - ch, y0))
        img = bg.copy()
        img[y0 : y0 + ch, x0 : x0 + cw] = patch
        sx, sy = cw / crop.shape[1], ch / crop.shape[0]
        boxes.append(_FACE_IN_CROP * [sx, sy, sx, sy] + [x0, y0, x0, y0])
        frame = av.VideoFrame.from_ndarray(to_stored(img, turns, flipped), format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        pts_list.append(pts)
        out.mux(vs.encode(frame))
        pts += int(round(step * (rng.choice([0.5, 1.0, 2.0]) if vfr else 1.0)))
    out.mux(vs.encode(None))
    if a_stream is not None:
        duration = pts * time_base
        n = int(duration * 48000)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
        for s in range(0, n, 1024):
            chunk = tone[s : s + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = s
            out.mux(a_stream.encode(af))
        out.mux(a_stream.encode(None))
    out.close()
    return SyntheticVideo(path, width, height, frames, time_base, pts_list, np.array(boxes, np.float32), audio,
                          dict(metadata or {}), rotation, mirror)


@dataclass
class Actor:
    """One face in a scene: the astronaut, or her mirror image (a second face on screen that
    the embedders see as the same person: the strictest case for 'never share at once').
    `at(frame) -> (x0, y0, height) | None` places the head-and-shoulders crop, None = absent."""

    at: object
    mirror: bool = False


def make_scene_video(path: str, actors: list[Actor], *, frames: int, width: int = 320, height: int = 240,
                     fps: Fraction = Fraction(30000, 1001), seed: int = 0) -> list[list[np.ndarray | None]]:
    """Writes a silent clip of several faces; returns per actor the true face box per frame."""
    from skimage import data

    rng = np.random.default_rng(seed)
    t, l, b, r = _CROP_TLBR
    crop = data.astronaut()[t:b, l:r]
    bg = _background(height, width, rng)
    out = av.open(path, "w")
    vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    truth: list[list] = [[] for _ in actors]
    for i in range(frames):
        img = bg.copy()
        for k, actor in enumerate(actors):
            place = actor.at(i)
            if place is None:
                truth[k].append(None)
                continue
            x0, y0, h = (int(round(v)) for v in place)
            scale = h / crop.shape[0]
            patch = cv2.resize(crop[:, ::-1] if actor.mirror else crop, (max(2, round(crop.shape[1] * scale)), h), interpolation=cv2.INTER_AREA)
            ys, xs = slice(max(0, y0), min(height, y0 + h)), slice(max(0, x0), min(width, x0 + patch.shape[1]))
            img[ys, xs] = patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            box = _FACE_IN_CROP.copy()
            if actor.mirror:
                box[[0, 2]] = crop.shape[1] - box[[2, 0]]
            truth[k].append(box * scale + [x0, y0, x0, y0])
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        out.mux(vs.encode(frame))
    out.mux(vs.encode(None))
    out.close()
    return truth


# Recall cases (tests/test_recall.py, benchmarks/recall.py): each one a way a face is missed
# in real footage. The truth is the visible part of the face box (clipped to the frame).
CASES = ("border-top", "border-bottom", "border-left", "border-right", "dark", "small-1080p", "profile")


def _luma(img: np.ndarray) -> float:
    return float((img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean())


def profile_like(face: np.ndarray, face_box: np.ndarray, squeeze: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """A frontal head-and-shoulders crop turned into a profile-like one, and its face box.

    The half of the face away from the camera is cut just past the nose line, and what is
    left is foreshortened towards the cut by a perspective warp (the far edge keeps `squeeze`
    of its height), as a head turned by 60-75 degrees shows itself. The face box is the
    warped corners' bounding box."""
    h, w = face.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face_box)
    kw = max(2, int(round(min(w, x1 + 0.55 * (x2 - x1)))))
    half = np.ascontiguousarray(face[:, :kw])
    src = np.float32([[0, 0], [kw, 0], [kw, h], [0, h]])
    dy = h * (1 - squeeze) / 2
    dst = np.float32([[0, 0], [kw * 0.8, dy], [kw * 0.8, h - dy], [0, h]])
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(half, m, (kw, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    corners = cv2.perspectiveTransform(np.float32([[[x1, y1], [kw, y1], [kw, y2], [x1, y2]]]), m)[0]
    return warped, np.array([*corners.min(0), *corners.max(0)], np.float32)


def make_case_video(path: str, case: str, *, frames: int = 24, fps: Fraction = Fraction(30000, 1001), seed: int = 0,
                    face: np.ndarray | None = None, face_box: np.ndarray | None = None) -> SyntheticVideo:
    """One recall case as a silent H.264 clip (PyAV), with the visible face box per frame.

    - `border-*`: 320x240, a face the height of 60% of the frame drifts along that border with
      45-70% of the face box outside the picture (40-60% at the bottom, which keeps the eyes);
    - `dark`: 320x240, the moving astronaut with the whole picture scaled down until the face's
      mean luminance is about 20 (of 255), as in a dim audience;
    - `small-1080p`: 1920x1080, a face box 16 px tall growing to about 20 px;
    - `profile`: 320x240, `profile_like` of the crop.
    `face`/`face_box` replace the astronaut crop (another head-and-shoulders picture and its
    face box in it), e.g. a photo from ../shared for the benchmark.
    """
    if case not in CASES:
        raise ValueError(f"unknown recall case {case!r}; valid: {', '.join(CASES)}")
    from skimage import data

    rng = np.random.default_rng(seed)
    if face is None:
        t, l, b, r = _CROP_TLBR
        face, face_box = data.astronaut()[t:b, l:r], _FACE_IN_CROP
    face_box = np.asarray(face_box, np.float32).copy()
    if case == "profile":
        face, face_box = profile_like(face, face_box)
    width, height = (1920, 1080) if case == "small-1080p" else (320, 240)
    fb_h = face_box[3] - face_box[1]
    if case == "small-1080p":
        start_h = 16.0 * face.shape[0] / fb_h
    elif case.startswith("border"):
        start_h = 0.6 * height * face.shape[0] / fb_h
    else:
        start_h = 0.45 * height
    bg = _background(height, width, rng)
    gain = 1.0
    out = av.open(path, "w", format="mp4")
    vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    time_base = Fraction(1, 90000)
    vs.time_base = vs.codec_context.time_base = time_base
    step = int(round(float(1 / (fps * time_base))))
    boxes, pts_list = [], []
    for i in range(frames):
        u = i / max(1, frames - 1)
        h = start_h * (1.0 + (0.3 if case in ("small-1080p", "dark", "profile") else 0.1) * u)
        s = h / face.shape[0]
        patch = cv2.resize(face, (max(2, round(face.shape[1] * s)), max(2, round(h))), interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        fb = face_box * s
        # share of the face box outside: 45-70% (a bottom cut keeps the eyes: 40-60%)
        lo, span = (0.4, 0.2) if case == "border-bottom" else (0.45, 0.25)
        out_frac = lo + span * (0.5 + 0.5 * np.sin(2 * np.pi * u))
        along = 0.2 + 0.6 * u
        if case == "border-top":
            x0, y0 = along * (width - pw), -(fb[1] + out_frac * (fb[3] - fb[1]))
        elif case == "border-bottom":
            x0, y0 = along * (width - pw), height - fb[3] + out_frac * (fb[3] - fb[1])
        elif case == "border-left":
            x0, y0 = -(fb[0] + out_frac * (fb[2] - fb[0])), along * (height - ph)
        elif case == "border-right":
            x0, y0 = width - fb[2] + out_frac * (fb[2] - fb[0]), along * (height - ph)
        else:
            x0 = 0.05 * width + u * (0.9 * width - pw)
            y0 = 0.5 * (height - ph) + 0.15 * height * np.sin(2 * np.pi * u)
        x0, y0 = int(round(x0)), int(round(y0))
        img = bg.copy()
        ys, xs = slice(max(0, y0), min(height, y0 + ph)), slice(max(0, x0), min(width, x0 + pw))
        img[ys, xs] = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        box = fb + [x0, y0, x0, y0]
        box[[0, 2]] = box[[0, 2]].clip(0, width)
        box[[1, 3]] = box[[1, 3]].clip(0, height)
        if case == "dark":
            if i == 0:
                x1, y1, x2, y2 = (int(v) for v in box)
                gain = 20.0 / max(1.0, _luma(img[y1:y2, x1:x2]))
            img = np.clip(img.astype(np.float32) * gain + rng.normal(0, 1.0, img.shape), 0, 255).astype(np.uint8)
        boxes.append(box)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i * step, time_base
        pts_list.append(i * step)
        out.mux(vs.encode(frame))
    out.mux(vs.encode(None))
    out.close()
    return SyntheticVideo(path, width, height, frames, time_base, pts_list, np.array(boxes, np.float32), False,
                          {"case": case, "gain": gain})


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.args import OneLineParser
    from pipeline.core.errors import AnonswapError, fail
    from pipeline.io.atomic import atomic_write
    from pipeline.io.paths import check_outputs

    p = OneLineParser(prog="python -m pipeline.synthetic", description="Write a moving-face demo video.")
    p.add_argument("output", help="video path (.mp4, .mov, .mkv, .ts)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--no-audio", action="store_true")
    args = p.parse_args(argv)
    try:
        check_outputs([], {"output": args.output}, video="output")
    except AnonswapError as e:
        return fail(e)
    with atomic_write(args.output) as f:
        v = make_video(f.path, width=args.width, height=args.height, frames=args.frames, audio=not args.no_audio)
    print(f"wrote {f.final_path}: {v.width}x{v.height}, {v.frames} frames, audio={'yes' if v.audio else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
