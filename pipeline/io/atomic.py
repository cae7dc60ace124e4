"""Files that appear under their final name only when complete.

Every file a run writes goes to a temp file in the target's folder first; `commit()` renames
it into place (atomic within one folder), `discard()` removes it. A crash or an error never
leaves a half-written file under the final name.

Permissions follow the user's umask (0644 under umask 022), as ffmpeg's outputs do, except
files that hold biometric data or original faces (the person registry, galleries, the audit
page): those stay 0600, readable by their owner only (`private=True`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)


PRIVATE_MODE = 0o600
# Errors that say the storage, not the data, failed: the user's to fix (free space, quota,
# a read-only or broken disk), so one line and exit status 2, never a traceback.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


@contextmanager
def writing(path: str):
    """Turns a storage failure while writing `path` into an OutputError naming it:
    "no space left on device while writing OUT"."""
    from pipeline.core.errors import OutputError

    try:
        yield
    except OSError as e:
        if e.errno in STORAGE_ERRNOS:
            raise OutputError(f"{os.strerror(e.errno).lower()} while writing {path}") from e
        raise
# A temp file of ours untouched this long belongs to a run that was killed (a live run writes
# to its file every frame, an offline one every batch): the next run for the same output
# removes it. Younger ones may belong to a run still going, and are left alone.
STALE_AFTER_S = 3600.0


# A temp file's name: `.STEM.anonswap-HASH.XXXXXXXX.partialEXT`. The marker and HASH (of the
# final name) say whose it is: clean-up takes only names with both, never a user's file that
# merely looks like a temp file. STEM (cut to a few dozen bytes, for a person reading the
# folder) and EXT stay within a file name's 255 bytes whatever the final name's length.
MARKER = "anonswap"
_STEM_BYTES, _EXT_BYTES = 48, 24
# Paths a command reads (check_outputs registers them before any work): never removed as a
# stale temp file, whatever their name.
_protected: set[str] = set()
_protected_lock = threading.Lock()


def protect(paths) -> None:
    """Marks a command's inputs: clean-up never removes them (links resolved)."""
    with _protected_lock:
        _protected.update(os.path.realpath(p) for p in paths if p)


def _cut(text: str, limit: int) -> str:
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def temp_parts(final_path: str) -> tuple[str, str, str]:
    """(folder, prefix, suffix) of `final_path`'s temp files; mkstemp puts 8 random
    characters between prefix and suffix."""
    folder, name = os.path.split(os.path.abspath(final_path))
    stem, ext = os.path.splitext(name)
    tag = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return folder, f".{_cut(stem, _STEM_BYTES)}.{MARKER}-{tag}.", f".partial{_cut(ext, _EXT_BYTES)}"


def partials(final_path: str, older_than_s: float | None = None) -> list[str]:
    """Temp files AtomicFile made for `final_path` (and not renamed): our marker, the hash of
    this final name and exactly mkstemp's 8 characters, so `b.mp4`'s pattern never takes
    `b.x.mp4`'s temp file, nor a user's file. With `older_than_s`, only those not modified
    for that long. An input of this process's command is never one of them."""
    folder, prefix, suffix = temp_parts(final_path)
    own = re.compile(rf"{re.escape(prefix)}[a-z0-9_]{{8}}{re.escape(suffix)}")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    now = time.time()
    found = []
    with _protected_lock:
        protected = set(_protected)
    for n in names:
        path = os.path.join(folder, n)
        if own.fullmatch(n) and os.path.realpath(path) not in protected:
            try:
                if older_than_s is None or now - os.path.getmtime(path) > older_than_s:
                    found.append(path)
            except OSError:
                continue
    return found


def remove_partials(final_path: str, older_than_s: float | None = None) -> int:
    removed = 0
    for path in partials(final_path, older_than_s):
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask can only be
    read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode() -> int:
    return 0o666 & ~current_umask()


class AtomicFile:
    """A temp path in the target's folder; `commit()` renames it into place, `discard()` removes it.

    Same folder, so the rename is atomic and a crash never leaves a half-written file under
    the final name. mkstemp creates the temp file 0600; unless `private`, it is opened up to
    what the umask allows before anything is written, and the rename keeps that mode.
    """

    def __init__(self, final_path: str, *, private: bool = False):
        self.final_path = os.path.abspath(final_path)
        if stale := remove_partials(self.final_path, STALE_AFTER_S):
            log.warning("removed %d stale temp file(s) of an earlier, killed run for %s", stale, self.final_path)
        folder, prefix, suffix = temp_parts(self.final_path)
        fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        try:
            try:
                os.fchmod(fd, PRIVATE_MODE if private else public_mode())
            finally:
                os.close(fd)
        except BaseException:  # a signal the moment the file exists: nobody else could remove it
            self.discard()
            raise

    def commit(self) -> str:
        os.replace(self.path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def write_json(path: str, data: dict, *, final_path: str | None = None) -> None:
    """`final_path`: the name errors give (a temp file's name would mean nothing to the user)."""
    with writing(final_path or path), open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


@contextmanager
def atomic_write(path: str, *, private: bool = False):
    """`with atomic_write(path) as f:` write `f.path`; it becomes `path` when the block ends,
    and is removed if the block raises (an interrupt included)."""
    f = AtomicFile(path, private=private)
    try:
        yield f
        f.commit()
    except BaseException:
        f.discard()
        raise


def write_json_atomic(path: str, data: dict, *, private: bool = False) -> None:
    with atomic_write(path, private=private) as f:
        write_json(f.path, data, final_path=f.final_path)
