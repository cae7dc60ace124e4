"""The run report (JSON) and the per-frame boxes export (JSON Lines) reviewers audit."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from pipeline.core.records import TrackedFrame, VideoInfo
from pipeline.io.atomic import AtomicFile, writing


def _r(values, nd=1) -> list:
    return [round(float(v), nd) for v in values]


class BoxesWriter:
    """One JSON line per output frame: every face anonymized on it, detected or predicted.

    Coordinates are in the picture as displayed (the input's display matrix applied:
    `VideoInfo.display_width`×`display_height`), since that is the picture the faces were
    found and covered in; for a rotated phone clip it is not the stored pixel grid.
    """

    def __init__(self, path: str):
        self._file = AtomicFile(path)
        try:
            self._fh = open(self._file.path, "w", encoding="utf-8")
        except BaseException:
            self._file.discard()
            raise

    def write(self, tf: TrackedFrame) -> None:
        f = tf.frame
        row = {
            "frame": f.index,
            "pts": f.pts,
            "time": round(f.time, 6),
            "faces": [
                {
                    "track_id": face.track_id,
                    "box": _r(face.box),
                    "cover": _r(face.cover),
                    "score": round(face.score, 4),
                    "landmarks": [_r(p) for p in face.landmarks],
                    "predicted": face.predicted,
                    "anonymized_by": face.outcome,
                    "person_id": face.person_id,
                    "source_id": face.source_id,
                }
                for face in tf.faces
            ],
        }
        with writing(self._file.final_path):
            self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    def finish(self) -> None:
        """Flushes and closes the temp file (a full disk shows here, at the latest)."""
        with writing(self._file.final_path):
            self._fh.close()

    def commit(self) -> None:
        self._file.commit()

    def discard(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # the flush of a file being thrown away may fail on a full disk too
        self._file.discard()


@dataclass
class _TrackStats:
    first_frame: int
    last_frame: int
    frames: int = 0
    predicted: int = 0
    person_id: int | None = None
    source_ids: list = None  # in order of appearance; more than one would be a bug (tests check)

    def __post_init__(self) -> None:
        self.source_ids = []


class ReportBuilder:
    def __init__(self, input_path: str, output_path: str, mode: str, info: VideoInfo, requested_mode: str | None = None):
        self.input_path = input_path
        self.output_path = output_path
        self.mode = mode
        self.requested_mode = requested_mode or mode
        self.info = info
        self.tracks: dict[int, _TrackStats] = {}
        self.detections = 0
        self.anonymized = 0
        self.predicted = 0
        self.unconfirmed = 0
        self.frames_with_faces = 0
        self.outcomes: Counter[str] = Counter()
        self.swap_errors: Counter[str] = Counter()  # what made an attempted swap fail, per face
        self.repairs: Counter[str] = Counter()
        self.parsing: Counter[str] = Counter()  # --parsing-mask: per swapped face, mask used or why not
        self.stronger: Counter[str] = Counter()  # covers the run's effect left weak: the effect used instead
        self.stage_ms: dict[str, float] = {}
        self.settings: dict = {}
        self.shot_cuts: list[int] = []
        self.persons: list[dict] | None = None  # from the identity stage, when it ran
        self._done: dict = {}

    def _fallback(self) -> dict[str, int]:
        """Faces a swap wanted and could not do, per reason ("blur:<reason>", or "mask:<reason>"
        where the blur was too weak for the face: pipeline.anonymize.cover)."""
        reasons: Counter[str] = Counter()
        for outcome, n in self.outcomes.items():
            if ":" in outcome:
                reasons[outcome.partition(":")[2]] += n
        return dict(sorted(reasons.items()))

    def add(self, tf: TrackedFrame) -> None:
        self.detections += tf.detections
        self.anonymized += len(tf.faces)
        self.frames_with_faces += bool(tf.faces)
        if tf.shot_cut:
            self.shot_cuts.append(tf.frame.index)
        self.repairs.update(tf.repairs)
        for face in tf.faces:
            self.predicted += face.predicted
            self.outcomes[face.outcome or "unknown"] += 1
            if "swap_error" in face.data:
                self.swap_errors[face.data["swap_error"]] += 1
            if "parsing_mask" in face.data:
                self.parsing[face.data["parsing_mask"]] += 1
            if "stronger_cover" in face.data:
                self.stronger[face.data["stronger_cover"]] += 1
            if face.track_id is None:
                self.unconfirmed += 1
                continue
            st = self.tracks.setdefault(face.track_id, _TrackStats(tf.frame.index, tf.frame.index))
            st.last_frame = tf.frame.index
            st.frames += 1
            st.predicted += face.predicted
            if face.person_id is not None:
                st.person_id = face.person_id
            if face.source_id is not None and face.source_id not in st.source_ids:
                st.source_ids.append(face.source_id)

    def finish(self, reader, writer, wall_s: float) -> None:
        self._done = {
            "frames_in": reader.frames_read,
            "frames_out": writer.frames_written,
            "audio_packets": writer.audio_packets,
            "audio_reencoded": list(writer.reencoded),
            "start_shift_ms": round(writer.ts_shift_s * 1000, 1),
            "decode_errors": reader.decode_errors,
            "timestamp_fixes": reader.timestamp_fixes,
            "rotation": reader.rotation,
            "other_streams": reader.other_streams,
            "wall_s": wall_s,
        }

    def to_dict(self) -> dict:
        info, d = self.info, self._done
        rate = info.average_rate
        frames = d["frames_out"]
        wall = d["wall_s"]
        return {
            "input": self.input_path,
            "output": self.output_path,
            "mode": self.mode,
            "mode_requested": self.requested_mode,
            "video": {
                "width": info.width,  # stored
                "height": info.height,
                "display_width": info.display_width,  # as viewed, the boxes' coordinates
                "display_height": info.display_height,
                "fps": float(rate) if rate else None,
                "fps_exact": f"{rate.numerator}/{rate.denominator}" if rate else None,
                "time_base": f"{info.time_base.numerator}/{info.time_base.denominator}",
                "frames_in": d["frames_in"],
                "frames_out": frames,
                "duration_s": info.duration_s,
                "codec_in": info.codec,
                "audio_streams": info.audio_streams,
                "audio_packets_copied": d["audio_packets"],
                "audio_reencoded": d["audio_reencoded"],  # codecs the output container cannot hold, re-encoded to AAC
                "start_shift_ms": d["start_shift_ms"],  # MPEG-TS output only: how much later every stream starts
                "rotation": d["rotation"],
                "mirror": info.mirror,  # the display matrix also flips the picture left-right
                "other_streams_dropped": d["other_streams"],
                "shot_cuts": self.shot_cuts,
            },
            "faces": {
                "detections": self.detections,
                "anonymized": self.anonymized,
                "predicted": self.predicted,
                "unconfirmed": self.unconfirmed,
                "frames_with_faces": self.frames_with_faces,
                "swapped": self.outcomes.get("swap", 0),
                "fallback": self._fallback(),
                "by_outcome": dict(sorted(self.outcomes.items())),
                "swap_errors": dict(self.swap_errors.most_common()),
                "repaired": dict(sorted(self.repairs.items())),
                "parsing_mask": dict(sorted(self.parsing.items())),
                "stronger_cover": dict(sorted(self.stronger.items())),
            },
            "tracks": [
                {
                    "track_id": tid,
                    "person_id": st.person_id,
                    "source_id": st.source_ids[0] if st.source_ids else None,
                    "source_ids": st.source_ids,
                    "first_frame": st.first_frame,
                    "last_frame": st.last_frame,
                    "frames": st.frames,
                    "predicted_frames": st.predicted,
                }
                for tid, st in sorted(self.tracks.items())
            ],
            "persons": self.persons,
            "timing": {
                "wall_s": round(wall, 3),
                "fps": round(frames / wall, 2) if wall > 0 else None,
                "stages_ms": self.stage_ms,
            },
            "decode_errors": d["decode_errors"],
            "timestamp_fixes": d["timestamp_fixes"],
            "settings": self.settings,
        }


def swap_failures(report: dict) -> tuple[str | None, bool]:
    """(one line for stderr, whether the swap never worked) from a run's report: faces the
    swap attempted and could not do were blurred; a run must say so even when quiet, and
    fail when no attempt succeeded (a broken model blurs everything otherwise, exit 0)."""
    f = report["faces"]
    failed = f["fallback"].get("engine_error", 0) + f["fallback"].get("swap_error", 0)
    if report["mode"] != "swap" or not failed:
        return None, False
    why = "; ".join(f"{reason} ({n})" for reason, n in list(f["swap_errors"].items())[:2])
    none = f["swapped"] == 0
    line = (f"{'error' if none else 'warning'}: swap failed on {failed} of {failed + f['swapped']} faces it attempted "
            f"({why}): blurred instead" + (f"; {report['output']} is blurred, not swapped" if none else ""))
    return line, none
