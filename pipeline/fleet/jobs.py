"""Which videos a fleet run covers, where each one's output goes, and which are already done.

Outputs mirror the inputs' relative paths under OUTDIR, so a dashcam archive's folder layout
(vehicle/date/clip) survives. Each video's report sits beside its output and is written last,
after the video was renamed into place: a report that says `complete` for the same input
file and the same settings is the only thing that lets a rerun skip a video.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

from pipeline.core.errors import InputNotFoundError, InvalidInputError, OutputError
from pipeline.io import atomic
from pipeline.io.video_writer import FORMATS

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".flv", ".wmv", ".3gp", ".h264", ".264", ".hevc", ".h265",
})
MANIFEST_EXTENSIONS = frozenset({".txt", ".lst", ".list", ".manifest"})
REPORT_SUFFIX = ".report.json"
FALLBACK_EXT = ".mkv"  # holds any audio codec, for inputs our writer has no same-named container for


@dataclass(frozen=True)
class Job:
    input: str   # absolute
    rel: str     # output path relative to OUTDIR, with the output's extension
    output: str  # absolute
    report: str  # absolute, beside the output

    @property
    def key(self) -> str:
        return self.rel


def is_fleet_input(path: str) -> bool:
    """A directory, or a manifest (a text file of paths); anything else is one video."""
    return os.path.isdir(path) or os.path.splitext(path)[1].lower() in MANIFEST_EXTENSIONS


def discover(input_path: str, outdir: str) -> list[Job]:
    """The fleet's jobs, sorted by input path; bad fleet input raises (one line, exit 2)."""
    if not os.path.exists(input_path):
        raise InputNotFoundError(f"input not found: {input_path}")
    outdir = os.path.abspath(outdir)
    if os.path.isdir(input_path):
        root = os.path.abspath(input_path)
        inputs = _walk(root, skip=outdir)
        if not inputs:
            raise InvalidInputError(f"no video files under {input_path} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    else:
        inputs = read_manifest(input_path)
        root = os.path.commonpath([os.path.dirname(p) for p in inputs])
    jobs, seen = [], {}
    for path in inputs:
        rel = output_rel(os.path.relpath(path, root))
        if rel in seen:
            raise InvalidInputError(f"two inputs would write the same output {rel}: {seen[rel]} and {path}")
        seen[rel] = path
        out = os.path.join(outdir, rel)
        jobs.append(Job(path, rel, out, out + REPORT_SUFFIX))
    return jobs


def read_manifest(path: str) -> list[str]:
    """One path per line; blank lines and `#` comments skipped; relative to the manifest's folder.

    A listed file that is missing is not an error here: it fails as that one video, so one bad
    line doesn't stop a fleet of thousands.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise InvalidInputError(f"manifest is not a readable UTF-8 text file ({e}): {path}") from e
    base = os.path.dirname(os.path.abspath(path))
    out, seen = [], set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = os.path.normpath(os.path.join(base, os.path.expanduser(line)))
        if p not in seen:
            seen.add(p)
            out.append(p)
    if not out:
        raise InvalidInputError(f"manifest lists no files: {path}")
    return out


def _walk(root: str, skip: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        # Hidden entries are skipped (our own temp files start with a dot), and so is the
        # output folder when it lies inside the input folder: outputs are not inputs.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) != skip)
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                found.append(os.path.join(folder, name))
    return sorted(found)


def output_rel(rel_input: str) -> str:
    stem, ext = os.path.splitext(rel_input)
    return stem + (ext if ext.lower() in FORMATS else FALLBACK_EXT)


def prepare_outdir(outdir: str) -> tuple[str, bool]:
    """(absolute folder, whether we created it): a fleet that fails before any video removes
    a folder it created, so a typo leaves nothing behind."""
    out = os.path.abspath(outdir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"fleet output must be a folder, not a file: {outdir}")
    parent = os.path.dirname(out)
    if not os.path.isdir(out) and not os.path.isdir(parent):
        raise OutputError(f"folder for the fleet output does not exist: {parent}")
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise OutputError(f"fleet output folder is not writable: {outdir}")
    return out, created


def fingerprint(path: str) -> dict:
    """Size and modification time: cheap, and enough to notice a replaced or re-copied input."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def settings_digest(config) -> str:
    """Changes whenever a setting that shapes the output changes, so a rerun redoes the video."""
    d = asdict(config)
    d.pop("queue_size", None)  # throughput only
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def completed(job: Job, digest: str) -> dict | None:
    """The job's report when it says this input was finished with these settings; else None."""
    try:
        with open(job.report, encoding="utf-8") as fh:
            report = json.load(fh)
        fleet = report["fleet"]
        if fleet["status"] != "complete" or fleet["settings_digest"] != digest:
            return None
        if fleet["input_fingerprint"] != fingerprint(job.input):
            return None
        if os.path.getsize(job.output) != fleet["output_bytes"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return report


def remove_partials(job: Job) -> int:
    """Temp files a killed worker left for this job's output and report, whatever their age:
    the fleet knows that attempt is dead."""
    return sum(atomic.remove_partials(final) for final in (job.output, job.report))
