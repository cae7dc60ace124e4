"""Where a run may write: checked before any work starts, so a bad path costs nothing."""

from __future__ import annotations

import os

from pipeline.core.errors import OutputError
from pipeline.io.video_writer import FORMATS


def check_output_path(output: str, input_path: str | None = None) -> str:
    """Refuses an output we could not finish, before any work is done."""
    out = os.path.abspath(output)
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise OutputError(f"unsupported output extension {ext or '(none)'!r}; use one of {', '.join(FORMATS)}: {output}")
    if os.path.isdir(out):
        raise OutputError(f"output path is a directory: {output}")
    if input_path is not None and (
        out == os.path.abspath(input_path) or (os.path.exists(out) and os.path.samefile(out, input_path))
    ):
        raise OutputError(f"output must differ from the input: {output}")
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    return out


def check_side_path(path: str, input_path: str, video_out: str) -> None:
    p = os.path.abspath(path)
    if p in (os.path.abspath(input_path), video_out):
        raise OutputError(f"report/boxes path must differ from the input and the output video: {path}")
    folder = os.path.dirname(p)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OutputError(f"folder for {path} does not exist or is not writable: {folder}")
