"""Our own data files (gallery, person registry): arrays + a JSON header in one `.npz`.

Loaded with `allow_pickle=False`, so reading a file runs no code; written to a temp file and
renamed, so a crash never leaves half a file under the final name. The header carries a
format name and version, checked on load. Both files hold face embeddings (biometric data),
so they are written 0600 whatever the umask.
"""

from __future__ import annotations

import json

import numpy as np

from pipeline.core.errors import InvalidInputError


def write_npz(path: str, fmt: str, version: int, meta: dict, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> None:
    from pipeline.io.atomic import atomic_write

    header = np.frombuffer(json.dumps({"format": fmt, "version": version, **meta}).encode(), np.uint8)
    with atomic_write(path, private=True) as f, open(f.path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, meta=header, **arrays)


def read_npz(path: str, fmt: str, version: int, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays other than the header); InvalidInputError naming `what` when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"not an {what} file ({e}): {path}") from None
    if meta.get("format") != fmt or meta.get("version") != version:
        raise InvalidInputError(f"not an {what} v{version} file (format {meta.get('format')!r} v{meta.get('version')}): {path}")
    return meta, arrays
