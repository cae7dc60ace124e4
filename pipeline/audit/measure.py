"""One pass over the original and the anonymized video, frame by frame, into the audit's numbers.

Per frame:
- the original faces, found by the audit's own RetinaFace + tracker (track ids are the
  audit's); the run's boxes export, when given, only says which regions the run claims it
  covered;
- RetinaFace on the output: is the anonymized face still a detectable face (Barattin et
  al.: a good anonymizer keeps it one) and where did its landmarks go;
- the recognizer on both: the original face against "the same face" in the output. When the
  output face is not detected the output is embedded at the original's landmarks: the
  attacker knows where the face was, and the audit assumes the stronger attacker;
- the recognizer on a destroyed copy of the original (the face's region heavily blurred,
  `pipeline.audit.judgeable`): a face it cannot tell from that copy at τ carries no identity
  to judge and is left out of re-ID and ¬ID;
- a leak detector the run did not use (by default CenterFace, or MTCNN for a run that used
  CenterFace: `pipeline.audit.leak_detector`) on the original, every `leak_every`-th frame,
  against the output pixels (leaks).
Both videos stream; memory is bounded by the thumbnails kept per track and per list
(leaks, suspects, faces not judgeable: at most MAX_THUMBS or MAX_SUSPECT_THUMBS each).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from trackers import FaceTracker
from trackers.norfair_tracker import boxes_iou

from pipeline.detect.retinaface import DEFAULT_DETECT_SIZE, RetinaFaceDetector
from pipeline.core.errors import InvalidInputError
from pipeline.core.records import Detections
from pipeline.track.shot_cuts import ShotCutDetector
from pipeline.io.video_reader import VideoReader
from pipeline.audit import metrics
from pipeline.audit.boxes_file import ClaimedFace, read_boxes
from pipeline.audit.derivation import Derivation
from pipeline.audit.judgeable import RULE as JUDGEABLE_RULE, destroyed_copy, is_judgeable
from pipeline.audit.leak_detector import LEAK_DETECTORS, build as build_leak_detector, check_independent, default_every
from pipeline.audit.leak_detector import choose as choose_leak_detector
from pipeline.audit.leaks import CHANGE_THRESHOLD, check_frame
from pipeline.audit.records import AuditThumbnails
from pipeline.audit.reference_pairs import ReferencePairs, photo_embeddings
from pipeline.audit.thumbnails import TopThumbnails, TrackThumbnails, crop_thumb, side_by_side

RECOGNIZERS = ("auto", "dlib", "arcface-r50", "perface")
MAX_THUMBS = 60  # per list of faces shown apart (leaks, faces not judgeable); the JSON lists all
MAX_SUSPECT_THUMBS = 120  # suspects are looked at one by one (does any hold a face?): the shared clip's 107 fit


@dataclass(frozen=True)
class AuditConfig:
    far: float = 0.001
    recognizer: str = "auto"  # auto: ArcFace R50 when fetched and not the run's embedder, else dlib
    recognizer_model: str | None = None
    pipeline_embedder: str | None = None  # the embedder the run chose sources with, when known
    every: int = 1  # identity metrics on every N-th frame (leaks are checked on every frame)
    min_face: float = 20.0  # narrower original faces are not embedded: a 150-px chip of them is noise
    match_iou: float = 0.3
    change_threshold: float = CHANGE_THRESHOLD
    leak_detector: str = "auto"  # pipeline.audit.leak_detector.LEAK_DETECTORS; resolved against run_detectors
    leak_threshold: float | None = None  # None: the model table's
    leak_every: int | None = None  # leak checks on every N-th frame; None: the detector's (the model table's audit_every: 1, dlib-mmod 5)
    run_detectors: tuple | None = None  # the detectors (model names) the run used; None: unknown
    allow_dependent: bool = False  # audit with a detector the run used (the report says so)
    allow_unrelated: bool = False  # audit a pair (or boxes) that do not look derived (pipeline.audit.derivation)
    impostors: str | None = None
    impostor_labels: str | None = None
    max_frames: int | None = None
    detect_size: int | None = DEFAULT_DETECT_SIZE
    columns: int = 8  # thumbnails per track on the contact sheet

    def __post_init__(self) -> None:
        if not 0.0 < self.far < 1.0:
            raise ValueError(f"--far must be in (0, 1), got {self.far}")
        if self.recognizer not in RECOGNIZERS:
            raise ValueError(f"unknown recognizer {self.recognizer!r}; valid: {', '.join(RECOGNIZERS)}")
        if self.every < 1:
            raise ValueError(f"--every must be >= 1, got {self.every}")
        if not 0.0 < self.change_threshold < 1.0:
            raise ValueError(f"--change-threshold must be in (0, 1), got {self.change_threshold}")
        if self.leak_detector not in LEAK_DETECTORS:
            raise ValueError(f"unknown leak detector {self.leak_detector!r}; valid: {', '.join(LEAK_DETECTORS)}")
        object.__setattr__(self, "leak_detector", choose_leak_detector(self.leak_detector, self.run_detectors))
        if self.leak_every is not None and self.leak_every < 1:
            raise ValueError(f"--leak-every must be >= 1, got {self.leak_every}")
        check_independent(self.leak_detector, self.run_detectors, self.allow_dependent)  # refuses before any work
        if self.leak_detector == "mtcnn":  # run in torch, which the audit extra leaves out (it is GBs)
            from engines.extras import require

            require("swap", "the mtcnn leak detector (it runs in torch)", ("torch",))

    @property
    def leak_stride(self) -> int:
        return self.leak_every if self.leak_every is not None else default_every(self.leak_detector)


def choose_recognizer(config: AuditConfig) -> str:
    """Prefer a recognizer other than the one that picked the sources: a swap chosen to be far
    from z in dlib's space is, by construction, far in dlib's space; an independent model is
    the fair judge."""
    if config.recognizer != "auto":
        return config.recognizer
    from engines import model_store

    if config.pipeline_embedder != "arcface-r50" and model_store.model_path("arcface-r50").exists():
        return "arcface-r50"
    return "dlib"


@dataclass
class _AuditFace:
    track_id: int | None
    box: np.ndarray
    landmarks: np.ndarray
    predicted: bool


class _OriginalFaces:
    """The original's faces as the audit itself finds them: RetinaFace + tracker + shot cuts.

    Found by the audit even when the run's boxes export is given: the export only says what
    the run claims it covered, and a face the run missed must still be scored for re-ID.
    """

    def __init__(self, detector: RetinaFaceDetector):
        self.detector = detector
        self.tracker = FaceTracker()
        self.cuts = ShotCutDetector()

    def faces(self, image: np.ndarray) -> tuple[list[_AuditFace], Detections]:
        if self.cuts.update(image):
            self.tracker.reset()
        raw = self.detector.detect([image])[0]
        found = self.tracker.update(raw, image)
        return [_AuditFace(f.track_id, f.box, f.landmarks, f.predicted) for f in found], raw


class _Claims:
    """What the run's boxes export says it covered on each frame."""

    def __init__(self, path: str):
        self.frames = read_boxes(path)

    def covers(self, index: int) -> np.ndarray:
        claimed: list[ClaimedFace] = self.frames.get(index, [])
        return np.array([c.cover for c in claimed], np.float32).reshape(-1, 4)


def _owner(box: np.ndarray, faces: list[_AuditFace]) -> int | None:
    """The track a leaked face belongs to, when the original faces have one there."""
    tracked = [f for f in faces if f.track_id is not None]
    if not tracked:
        return None
    iou = boxes_iou(np.asarray(box, np.float32)[None], np.stack([f.box for f in tracked]).astype(np.float32))[0]
    k = int(np.argmax(iou))
    return tracked[k].track_id if iou[k] >= 0.3 else None


def _match(orig: list[_AuditFace], found: Detections, min_iou: float) -> list[int | None]:
    """Greedy IoU matching, best pairs first: which output detection is which original face."""
    if not orig or not len(found):
        return [None] * len(orig)
    iou = boxes_iou(np.stack([f.box for f in orig]).astype(np.float32), found.boxes)
    out: list[int | None] = [None] * len(orig)
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if out[i] is None and j not in used:
            out[i] = j
            used.add(j)
    return out


def audit_videos(original: str, anonymized: str, *, boxes: str | None = None, config: AuditConfig = AuditConfig(),
                 progress: bool = True, log=lambda m: print(m, file=sys.stderr)):
    """Returns (audit dict, TrackSheets, AuditThumbnails: crops of leaks, suspects and faces not judgeable)."""
    from engines.embedders import calibration, load_embedder

    name = choose_recognizer(config)
    try:
        embedder = load_embedder(name, config.recognizer_model)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"recognizer {name!r} unusable: {e}") from e
    detector = RetinaFaceDetector(detect_size=config.detect_size)
    leak_finder = build_leak_detector(config.leak_detector, config.leak_threshold)
    source = _OriginalFaces(detector)
    claims = _Claims(boxes) if boxes else None
    reader_o = VideoReader(original, max_frames=config.max_frames).open()
    try:
        reader_a = VideoReader(anonymized, max_frames=config.max_frames).open()
    except BaseException:
        reader_o.close()
        raise
    io, ia = reader_o.info, reader_a.info
    try:
        # Compared as viewed (the frames are): a copy whose rotation was baked into its pixels
        # still lines up with its original.
        so, sa = (io.display_width, io.display_height), (ia.display_width, ia.display_height)
        if so != sa:
            raise InvalidInputError(f"the videos differ in size ({so[0]}x{so[1]} vs {sa[0]}x{sa[1]}): not an original and its anonymized copy")
        if config.max_frames is None:
            _check_lengths(io, ia)
        state = _Pass(config, embedder, detector, leak_finder, source, claims)
        total = config.max_frames or io.frames_hint or None
        frames_o, frames_a = reader_o.frames(), reader_a.frames()
        with tqdm(total=total, unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True, desc="audit") as bar:
            while True:
                fo, fa = next(frames_o, None), next(frames_a, None)
                if fo is None or fa is None:
                    if fo is not None or fa is not None:
                        raise InvalidInputError(
                            f"the videos differ in length (the {'anonymized' if fa is None else 'original'} one ends at frame {state.frames}): "
                            "not an original and its anonymized copy (--max-frames N audits the first N frames)")
                    break
                state.frame(fo, fa)
                bar.update(1)
        state.derivation.decide()  # a video shorter than the frames it looks at
    finally:
        reader_o.close()
        reader_a.close()
    result = state.summary(calibration(name)[0], name)
    result.update(original=original, anonymized=anonymized, boxes=boxes)
    if config.impostors is None and not result["threshold"]["impostor_pairs_video"]:
        log("audit: no two faces on screen together and no --impostors photos: threshold is the recognizer's default")
    return result, state.thumbs.sheets(), state.thumbnails()


def _check_lengths(io, ia) -> None:
    """What the headers already say, before a pass over both videos: their declared frame
    counts (mp4, mov) or video durations (Matroska, when no count is stored) must agree.
    Loose on durations (a re-encode may round them), so only a different video fails here;
    the pass itself still compares frame by frame."""
    if io.frames_hint and ia.frames_hint and io.frames_hint != ia.frames_hint:
        raise InvalidInputError(f"the videos differ in length ({io.frames_hint} vs {ia.frames_hint} frames in their headers): "
                                "not an original and its anonymized copy (--max-frames N audits the first N frames)")
    if io.duration_s and ia.duration_s and abs(io.duration_s - ia.duration_s) > max(0.5, 0.05 * io.duration_s):
        raise InvalidInputError(f"the videos differ in length ({io.duration_s:.2f} s vs {ia.duration_s:.2f} s in their headers): "
                                "not an original and its anonymized copy (--max-frames N audits the first N frames)")


class _Pass:
    """Everything the streaming pass accumulates; `summary()` turns it into the audit dict."""

    def __init__(self, config: AuditConfig, embedder, detector, leak_finder, source, claims):
        self.config, self.embedder, self.detector, self.leak_finder = config, embedder, detector, leak_finder
        self.source, self.claims = source, claims
        self.frames = 0
        self.records: list[dict] = []  # one per embedded original face
        self.z_orig: dict[int, list[np.ndarray]] = defaultdict(list)
        self.t_orig: dict[int, list] = defaultdict(list)
        self.t_out: dict[int, list] = defaultdict(list)
        self.together: set[tuple[int, int]] = set()
        self.overlapping: set[tuple[int, int]] = set()
        self.checks = []
        self.detector_faces = 0  # faces the leak detector found on the original
        self.leak_frames = 0  # frames it looked at
        self.thumbs = TrackThumbnails(config.columns)
        self.leak_thumbs: list[tuple[int, np.ndarray]] = []
        self.suspect_thumbs: list[tuple[int, np.ndarray]] = []
        # not judgeable = destroyed_similarity ≥ τ, and τ is known only at the end: the faces
        # with the highest destroyed_similarity are the candidates, whatever τ turns out to be
        self.dark_thumbs = TopThumbnails(MAX_THUMBS)
        self.derivation = Derivation(config.allow_unrelated)

    def frame(self, fo, fa) -> None:
        self.frames += 1
        orig, out = fo.image, fa.image
        faces, raw = self.source.faces(orig)
        covers = self.claims.covers(fo.index) if self.claims else None
        self.derivation.add(orig, out, np.array([f.box for f in faces], np.float32).reshape(-1, 4), covers)
        usable = [f for f in faces if not f.predicted and f.box[2] - f.box[0] >= self.config.min_face]
        if usable and fo.index % self.config.every == 0:
            self._identity(fo.index, orig, out, usable, raw)
        for f in faces:
            if f.track_id is not None and not f.predicted:
                self.thumbs.add(f.track_id, fo.index, orig, out, f.box)
        if fo.index % self.config.leak_stride:
            return
        found = self.leak_finder.detect([orig])[0]
        self.leak_frames += 1
        self.detector_faces += len(found)
        for c in check_frame(fo.index, fo.time, orig, out, found, covers, threshold=self.config.change_threshold):
            if c.unchanged:
                self.checks.append((c, _owner(c.box, faces)))
                if c.leak and len(self.leak_thumbs) < MAX_THUMBS:
                    self.leak_thumbs.append((c.frame, crop_thumb(orig, c.box)))
                if c.suspect and len(self.suspect_thumbs) < MAX_SUSPECT_THUMBS:
                    self.suspect_thumbs.append((c.frame, side_by_side(orig, out, c.box)))

    def thumbnails(self) -> AuditThumbnails:
        """The crops the report shows apart; call after `summary` (which decides judgeability)."""
        dark = [(frame, crop) for _, i, frame, crop in self.dark_thumbs.kept() if not self.records[i].get("judgeable", True)]
        return AuditThumbnails(leaks=self.leak_thumbs, suspects=self.suspect_thumbs, not_judgeable=dark)

    def _note_together(self, faces: list[_AuditFace]) -> None:
        """Two tracks on one frame are two people, unless their boxes overlap: then they may be
        one face the tracker split in two, and their pairs would be genuine, not impostors."""
        tracked = [f for f in faces if f.track_id is not None]
        if len(tracked) < 2:
            return
        iou = boxes_iou(*(np.stack([f.box for f in tracked]).astype(np.float32),) * 2)
        for i, a in enumerate(tracked):
            for j in range(i + 1, len(tracked)):
                b = tracked[j]
                if a.track_id == b.track_id:
                    continue
                key = (min(a.track_id, b.track_id), max(a.track_id, b.track_id))
                (self.overlapping if iou[i, j] > 0.1 else self.together).add(key)

    def _identity(self, index: int, orig: np.ndarray, out: np.ndarray, faces: list[_AuditFace], raw: Detections) -> None:
        # The same detector on both frames: landmarks compared raw against raw, not against the
        # tracker's smoothed estimate (which lags a moving face by a few pixels).
        found = self.detector.detect([out])[0]
        own = _match(faces, raw, self.config.match_iou)
        lm_o = np.stack([raw.landmarks[j] if j is not None else f.landmarks for f, j in zip(faces, own)]).astype(np.float32)
        match = _match(faces, found, self.config.match_iou)
        lm_a = np.stack([found.landmarks[j] if j is not None else lm_o[k] for k, j in enumerate(match)]).astype(np.float32)
        z_o, z_a = self.embedder.embed(orig, lm_o), self.embedder.embed(out, lm_a)
        # The original with every face destroyed, at the same landmarks: one embed call more per frame.
        z_d = self.embedder.embed(destroyed_copy(orig, np.stack([f.box for f in faces])), lm_o)
        sims, destroyed = metrics.pair_scores(z_o, z_a), metrics.pair_scores(z_o, z_d)
        self._note_together(faces)
        for k, (f, j) in enumerate(zip(faces, match)):
            disp = metrics.landmark_displacement(lm_o[k], found.landmarks[j]) if j is not None else None
            self.dark_thumbs.add(float(destroyed[k]), len(self.records), index, orig, f.box)
            self.records.append({
                "frame": index, "track_id": f.track_id, "box": [round(float(v), 1) for v in f.box],
                "similarity": round(float(sims[k]), 4), "destroyed_similarity": round(float(destroyed[k]), 4),
                "detected_in_output": j is not None,
                "landmark_displacement": None if disp is None else round(disp, 4),
            })
            if f.track_id is not None:
                self.z_orig[f.track_id].append(z_o[k])
                self.t_orig[f.track_id].append((index, z_o[k]))
                self.t_out[f.track_id].append((index, z_a[k]))

    def summary(self, default_threshold: float, recognizer: str) -> dict:
        cfg = self.config
        pairs = ReferencePairs()
        pairs.add_video(self.z_orig, self.together - self.overlapping)
        video_impostors = len(pairs.impostor)
        if cfg.impostors:
            emb, persons = photo_embeddings(cfg.impostors, cfg.impostor_labels, self.detector, self.embedder)
            pairs.add_photos(emb, persons)
        if pairs.impostor:
            t = metrics.far_threshold(np.array(pairs.impostor), cfg.far)
            tau, far_achieved = t.value, t.far_achieved
            how = "impostor pairs at the target FAR (thesis Algorithm 2)"
        else:
            tau, far_achieved = default_threshold, None
            how = f"recognizer default ({recognizer} same-person threshold): no impostor pairs"
        eer = metrics.equal_error_rate(pairs.genuine, pairs.impostor) if pairs.genuine and pairs.impostor else None
        for r in self.records:  # decided now that τ is known; faces_detail carries the flag
            r["judgeable"] = is_judgeable(r["destroyed_similarity"], tau)
        judged = [r for r in self.records if r["judgeable"]]
        sims = np.array([r["similarity"] for r in judged], np.float64)
        reid = metrics.match_rate(sims, tau)
        neg = metrics.match_rate(-sims, tau)
        tc_per_track = {tid: metrics.track_distances(samples) for tid, samples in self.t_out.items()}
        tc_out = [d for ds in tc_per_track.values() for d in ds]
        tc_orig = metrics.temporal_distances(self.t_orig)
        detected = [r for r in self.records if r["detected_in_output"]]
        disp = np.array([r["landmark_displacement"] for r in detected], np.float64)
        leaks = [(c, t) for c, t in self.checks if c.leak]
        suspects = [(c, t) for c, t in self.checks if c.suspect]
        leaks_per_track = defaultdict(int)
        for _, t in leaks:
            leaks_per_track[t] += 1
        r4 = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        per_track: dict[int, list[dict]] = defaultdict(list)
        for r in self.records:
            if r["track_id"] is not None:
                per_track[r["track_id"]].append(r)
        tracks = []
        for tid, rs in sorted(per_track.items()):
            s = np.array([r["similarity"] for r in rs if r["judgeable"]], np.float64)
            tracks.append({
                "track_id": tid, "faces": len(rs), "first_frame": rs[0]["frame"], "last_frame": rs[-1]["frame"],
                "reid_rate": r4(np.mean(s >= tau)) if len(s) else None, "mean_similarity": r4(s.mean()) if len(s) else None,
                "not_judgeable": len(rs) - len(s),
                "m_tc_mean": metrics.spread(tc_per_track.get(tid, [])).as_dict()["mean"],
                "leaks": leaks_per_track.get(tid, 0),
            })
        return {
            "frames": self.frames,
            "faces": len(self.records),
            "recognizer": recognizer,
            "independent_of_pipeline": None if cfg.pipeline_embedder is None else recognizer != cfg.pipeline_embedder,
            "leak_detector": {"name": cfg.leak_detector, "every": cfg.leak_stride,
                              "run_detectors": None if cfg.run_detectors is None else list(cfg.run_detectors),
                              "independent_of_pipeline": check_independent(cfg.leak_detector, cfg.run_detectors, True)},
            "threshold": {
                "far_target": cfg.far, "value": r4(tau), "source": how,
                "impostor_pairs": len(pairs.impostor), "impostor_pairs_video": video_impostors,
                "impostor_sources": pairs.impostor_sources, "genuine_pairs": len(pairs.genuine),
                "far_achieved": r4(far_achieved),
                # With n pairs no FAR below 1/n can be told apart from 0.
                "far_resolution": r4(1.0 / len(pairs.impostor)) if pairs.impostor else None,
                "eer": r4(eer.eer) if eer else None, "eer_threshold": r4(eer.threshold) if eer else None,
            },
            "judgeable": {
                "faces": len(judged), "not_judgeable": len(self.records) - len(judged), "rule": JUDGEABLE_RULE,
                "items": [{k: r[k] for k in ("frame", "track_id", "box", "similarity", "destroyed_similarity")}
                          for r in self.records if not r["judgeable"]],
            },
            "reid": {"rate": r4(reid.rate), "matches": reid.matches, "faces": reid.faces, "mean_similarity": r4(sims.mean()) if len(sims) else None},
            "negated_reid": {"rate": r4(neg.rate), "matches": neg.matches, "faces": neg.faces},
            "temporal_consistency": {
                "output": metrics.spread(tc_out).as_dict(), "original": metrics.spread(tc_orig).as_dict(),
                "distance": "1 - cosine between consecutive embedded frames of a track",
            },
            "detection": {
                "rate": r4(len(detected) / len(self.records)) if self.records else None,
                "detected": len(detected), "faces": len(self.records),
                "landmark_displacement": {
                    "mean": r4(disp.mean()) if len(disp) else None, "median": r4(np.median(disp)) if len(disp) else None,
                    "p95": r4(np.percentile(disp, 95)) if len(disp) else None, "unit": "inter-ocular distance",
                },
            },
            "leaks": {
                "count": len(leaks), "frames": sorted({c.frame for c, _ in leaks}),
                "items": [{**c.as_dict(), "track_id": t} for c, t in leaks],
                "suspect": [{**c.as_dict(), "track_id": t} for c, t in suspects],
                "detector": cfg.leak_detector, "detector_faces": self.detector_faces, "every": cfg.leak_stride,
                "frames_checked": self.leak_frames, "change_threshold": cfg.change_threshold,
                "claims": "boxes file" if self.claims else None,
            },
            "tracks": tracks,
            "distances": {
                "genuine": [round(v, 4) for v in pairs.genuine], "impostor": [round(v, 4) for v in pairs.impostor],
                # over the judgeable faces, like the rates they illustrate; `destroyed` over all of them
                "original_vs_anonymized": [round(float(v), 4) for v in sims], "negated": [round(float(-v), 4) for v in sims],
                "destroyed": [r["destroyed_similarity"] for r in self.records],
                "temporal_output": [round(v, 4) for v in tc_out], "temporal_original": [round(v, 4) for v in tc_orig],
            },
            "faces_detail": self.records,
            "settings": {"every": cfg.every, "min_face": cfg.min_face, "match_iou": cfg.match_iou,
                         "leak_detector": cfg.leak_detector, "leak_threshold": cfg.leak_threshold, "leak_every": cfg.leak_stride,
                         "max_frames": cfg.max_frames,
                         "impostors": cfg.impostors, "impostor_labels": cfg.impostor_labels},
        }
