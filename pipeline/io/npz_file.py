"""Our own data files (gallery, person registry): arrays + a JSON header in one `.npz`.

Loaded with `allow_pickle=False`, so reading a file runs no code; written to a temp file and
renamed, so a crash never leaves half a file under the final name. The header carries a
format name and version, checked on load. Both files hold face embeddings (biometric data),
so they are written 0600 whatever the umask.
"""

from __future__ import annotations

import json
import zipfile

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
        with open(path, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
        if zipped:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files if k != "meta"}
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:  # JSON and Unicode errors are ValueErrors
        raise InvalidInputError(f"not an {what} file ({e}): {path}") from None
    if not zipped:  # numpy would call anything else (a video given by mistake) "pickled data"
        raise InvalidInputError(f"not an {what} file (not an .npz archive, as anonswap writes it): {path}")
    if not isinstance(meta, dict) or meta.get("format") != fmt or meta.get("version") != version:
        found = f"format {meta.get('format')!r} v{meta.get('version')}" if isinstance(meta, dict) else f"a JSON {type(meta).__name__} header"
        raise InvalidInputError(f"not an {what} v{version} file ({found}): {path}")
    return meta, arrays


class Checker:
    """Validates a loaded file's header and arrays before anything uses them, so a damaged or
    hand-edited file is one line at open, not a KeyError (or a stage error) hours into a run."""

    def __init__(self, path: str, what: str, meta: dict, arrays: dict[str, np.ndarray]):
        self.path, self.what, self.meta, self.arrays = path, what, meta, arrays

    def fail(self, problem: str):
        raise InvalidInputError(f"{self.what} {self.path} is damaged or not ours: {problem}")

    def field(self, key: str, kind, *, optional: bool = False, where: dict | None = None, label: str = ""):
        where = self.meta if where is None else where
        if key not in where:
            if optional:
                return None
            self.fail(f"{label}{key!r} is missing")
        value, kinds = where[key], kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:  # JSON true is no number
            self.fail(f"{label}{key!r} is {type(value).__name__}, not {_names(kinds)}")
        return value

    def records(self, key: str, fields: dict, *, optional: bool = False) -> list[dict]:
        """A list of JSON objects, each with `fields` {name: type}."""
        rows = self.field(key, list, optional=optional)
        for i, row in enumerate(rows or []):
            if not isinstance(row, dict):
                self.fail(f"{key}[{i}] is {type(row).__name__}, not an object")
            for name, kind in fields.items():
                self.field(name, kind, where=row, label=f"{key}[{i}].")
        return rows or []

    def array(self, key: str, shape: tuple, dtype_kind: str, *, optional: bool = False) -> np.ndarray | None:
        """`shape`: ints to match, None for any size; `dtype_kind`: numpy's kind ("u", "f")."""
        a = self.arrays.get(key)
        if a is None:
            if optional:
                return None
            self.fail(f"array {key!r} is missing")
        if a.dtype.kind != dtype_kind or a.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, a.shape)):
            want = "×".join("N" if n is None else str(n) for n in shape)
            self.fail(f"array {key!r} is {a.dtype} {'×'.join(map(str, a.shape))}, expected {_DTYPES[dtype_kind]} {want}")
        if dtype_kind == "f" and not np.isfinite(a).all():
            self.fail(f"array {key!r} holds NaN or infinite values")
        return a


_DTYPES = {"u": "uint8", "f": "float", "i": "int"}


def _names(kinds: tuple) -> str:
    return " or ".join({str: "a string", list: "a list", dict: "an object", int: "an integer", float: "a number",
                        type(None): "null"}.get(k, k.__name__) for k in kinds)
