"""Fetching, caching and verifying the models a user downloads (SimSwap's weights).

- Cache: `$ANONSWAP_HOME/models`, else `$XDG_CACHE_HOME/anonswap/models`, else `~/.cache/anonswap/models`.
- Fetch: resumable (HTTP Range on a `.part` file; `file://` URLs seek), with a progress bar.
- Verify: always by structure (the real loaders: strict state_dict / restricted unpickler);
  by sha256 once pinned. The first verified download pins its hash in a lock file
  (`$ANONSWAP_LOCK`, else `./anonswap-models.lock.json`) that a team can commit, so every later
  fetch, on any machine, must produce the same bytes.
- Offline or failed: a `FetchError` saying where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from .models import DOWNLOADS, Downloadable

CHUNK = 1 << 20


class FetchError(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("ANONSWAP_HOME"):
        return Path(os.environ["ANONSWAP_HOME"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonswap" / "models"


def lock_path() -> Path:
    return Path(os.environ.get("ANONSWAP_LOCK", "anonswap-models.lock.json"))


def model_path(name: str) -> Path:
    return cache_dir() / _spec(name).file


def _spec(name: str) -> Downloadable:
    try:
        return DOWNLOADS[name]
    except KeyError:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(DOWNLOADS)}") from None


def read_lock() -> dict:
    p = lock_path()
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FetchError(f"lock file {p} is not valid JSON ({e})") from e


def _write_lock(lock: dict) -> None:
    p = lock_path()
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_structure(spec: Downloadable, path: Path) -> None:
    """Loads the file with the loader the pipeline uses; raises FetchError if it is not that model."""
    try:
        if spec.kind.startswith("generator-"):
            from .simswap import load_generator

            load_generator(str(path), spec.kind.split("-", 1)[1])
        elif spec.kind == "arcface":
            from .simswap import load_arcface_checkpoint

            load_arcface_checkpoint(str(path))
        elif spec.kind.startswith("embedder-"):
            from .embedders import EMBEDDERS
            from .embedders.arcface_embedder import ArcFaceEmbedder

            ArcFaceEmbedder(str(path), EMBEDDERS[spec.kind.split("-", 1)[1]])
    except (ValueError, OSError, RuntimeError) as e:
        raise FetchError(f"{path} is not the expected {spec.description}: {e}") from e


def _download(url: str, part: Path, progress: bool) -> None:
    """Appends to `part` from where it stops (HTTP Range / file seek); restarts if the server ignores Range."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        src = open(urllib.request.url2pathname(parsed.path), "rb")
        total = os.fstat(src.fileno()).st_size
        src.seek(min(have, total))
        append = True
    else:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        src = urllib.request.urlopen(req, timeout=30)
        append = have > 0 and getattr(src, "status", 200) == 206
        length = int(src.headers.get("Content-Length") or 0)
        total = (have if append else 0) + length if length else None
        if not append:
            have = 0
    with src, open(part, "ab" if append else "wb") as out, tqdm(
        total=total, initial=have, unit="B", unit_scale=True, disable=not progress, desc=part.name
    ) as bar:
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
            bar.update(len(block))


def fetch(name: str, *, url: str | None = None, progress: bool = True, log=print) -> Path:
    """Downloads (or resumes), checks and installs one model; returns its cached path."""
    spec = _spec(name)
    url = url or spec.url
    if spec.non_commercial:
        log(f"note: {spec.name} is licensed {spec.licence}")
    dest = model_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    download = dest.parent / (Path(urllib.parse.urlparse(url).path).name or spec.file)
    part = download.with_name(download.name + ".part")
    try:
        if download.exists():
            # Put there by hand (the archive, or the file itself): check and pin it, no download.
            # The archive is consumed; the file itself stays installed while it is checked.
            (shutil.copyfile if download == dest else os.replace)(download, part)
        else:
            _download(url, part, progress)
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(
            f"could not download {spec.name} from {url} ({getattr(e, 'reason', e)}). Offline? Download it yourself "
            f"and put {'the archive at ' + str(download) + ' or ' if spec.member else ''}the file at {dest}, "
            f"then run: python run_pipeline.py models verify"
        ) from e
    digest = sha256(part)
    lock = read_lock()
    pinned = lock.get(spec.name, {}).get("sha256")
    if pinned and pinned != digest:
        part.unlink()
        raise FetchError(f"{spec.name}: sha256 mismatch (lock file {lock_path()} pins {pinned}, download is {digest}); the download was removed")
    try:
        _install(spec, part, dest)
        verify_structure(spec, dest)
    except BaseException:
        if dest.exists():
            dest.unlink()
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    if not pinned:
        lock[spec.name] = {"sha256": digest, "url": url, "file": spec.file, "file_sha256": sha256(dest)}
        _write_lock(lock)
        log(f"pinned {spec.name} sha256 {digest} in {lock_path()}")
    return dest


def _install(spec: Downloadable, downloaded: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        if spec.member:
            if not zipfile.is_zipfile(downloaded):
                raise FetchError(f"{spec.name}: download from {spec.url} is not a zip archive")
            with zipfile.ZipFile(downloaded) as zf:
                members = [m for m in zf.namelist() if m.endswith(spec.member) and not m.startswith("__MACOSX")]
                if len(members) != 1:
                    raise FetchError(f"{spec.name}: archive has {len(members)} entries ending in {spec.member}, expected 1")
                with zf.open(members[0]) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        else:
            shutil.copyfile(downloaded, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def status() -> list[dict]:
    """One row per known model: installed?, structure ok?, hash matches the lock?"""
    lock = read_lock()
    rows = []
    for name, spec in DOWNLOADS.items():
        path = model_path(name)
        row = {"name": name, "path": str(path), "installed": path.exists(), "licence": spec.licence, "size": spec.size,
               "description": spec.description, "url": spec.url, "structure": None, "hash": None}
        if path.exists():
            try:
                verify_structure(spec, path)
                row["structure"] = "ok"
            except FetchError as e:
                row["structure"] = f"bad: {e}"
            pinned = lock.get(name, {}).get("file_sha256")
            row["hash"] = "not pinned" if not pinned else ("ok" if sha256(path) == pinned else "MISMATCH")
        rows.append(row)
    return rows
