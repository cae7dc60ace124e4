"""Where a command may write: every output checked before any work starts, so a bad path
costs nothing and no output can land on an input. `check_outputs` is the one rule every
command that writes goes through (run, live, fleet, audit, gallery, perface; tests/test_outputs.py
enumerates them); the files are then written atomically (pipeline.io.atomic).

Paths are compared as the filesystem sees them, not as typed: symbolic links (of the file or
of any folder above it) are resolved, and files that exist are compared with `samefile`, so
`--report LINK/v.mp4`, where LINK points at the input's folder, is the input video and is
refused instead of overwritten.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from pipeline.core.errors import OutputError
from pipeline.io.atomic import protect
from pipeline.io.video_writer import FORMATS


def same_file(a: str, b: str) -> bool:
    """True when the two paths name one file: through links, or as hard links of each other."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then only the resolved paths can tell
        return False


def check_output_path(output: str, input_path: str | None = None) -> str:
    """The video output: a known extension, a file (not a folder), in a writable folder."""
    out = os.path.abspath(output)
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise OutputError(f"unsupported output extension {ext or '(none)'!r}; use one of {', '.join(FORMATS)}: {output}")
    check_file_path(output, "output")
    if input_path is not None and same_file(out, input_path):
        raise OutputError(f"output must differ from the input: {output}")
    return out


def check_file_path(path: str, label: str) -> str:
    """A file we will create or replace: not a folder, its folder there and writable."""
    p = os.path.abspath(path)
    if os.path.isdir(p):
        raise OutputError(f"{label} is a folder, not a file: {path}")
    folder = os.path.dirname(p)
    if not os.path.isdir(folder):
        raise OutputError(f"{label}: folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{label}: folder is not writable: {folder}")
    return p


def files_under(paths: Iterable[str | None]) -> list[str]:
    """The files a command reads: a folder (of photos, of videos) stands for every file under it."""
    files = []
    for p in paths:
        if not p:
            continue
        if os.path.isdir(p):
            files.extend(os.path.join(root, n) for root, _, names in os.walk(p) for n in names)
        files.append(p)
    return files


def check_outputs(inputs: Iterable[str | None], outputs: Mapping[str, str | None], *, video: str | None = None,
                  written: Iterable[str] = ()) -> dict[str, str]:
    """Every output the command writes, checked together: `outputs` maps a label (the flag, for
    the message) to a path (None: not asked for). Each must be a file in a writable folder,
    differ from every input (links resolved, hard links too; a folder input stands for every
    file under it), from every other output, and from `written` (files this command writes
    otherwise: a fleet's videos, a live run's report beside its segments); `video` names the
    label that is the video (its extension is checked too). Returns the absolute paths by label."""
    files = files_under(inputs)
    protect(files)  # whatever their names, no clean-up of stale temp files removes them
    written = [p for p in written if p]
    given = {label: p for label, p in outputs.items() if p}
    checked: dict[str, str] = {}
    for label, path in given.items():
        checked[label] = check_output_path(path) if label == video else check_file_path(path, label)
        for src in files:
            if same_file(path, src):
                raise OutputError(f"{label} would overwrite an input ({src}): {path}")
        for other in written:
            if same_file(path, other):
                raise OutputError(f"{label} would overwrite another output of this command ({other}): {path}")
    labels = list(given)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if same_file(given[a], given[b]):
                raise OutputError(f"{a} and {b} name the same file: {given[a]}")
    return checked
