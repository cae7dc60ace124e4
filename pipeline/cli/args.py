"""What every command line shares: argparse value types (one wording for errors), the
parser class, and how a signal stops a command."""

from __future__ import annotations

import argparse
import signal
from dataclasses import MISSING, fields


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def open_unit_interval(text: str) -> float:
    """A probability or a share strictly between 0 and 1."""
    v = float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


# libx264's presets, fastest first; an unknown one would only fail later, as a container error.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
CRF_RANGE = (0, 51)  # libx264 (8-bit): a larger value is silently clamped to 51, about 2 KB a frame


def crf(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from {CRF_RANGE[0]} to {CRF_RANGE[1]}, got {text}") from None
    if not CRF_RANGE[0] <= v <= CRF_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be from {CRF_RANGE[0]} (lossless) to {CRF_RANGE[1]} (worst) for x264, got {text}")
    return v


def field_value(obj, path: str):
    """`field_value(config, "swap.size")`: a nested dataclass field by its dotted path."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def bound_option(group, *flags, to: str, defaults: dict, **kw) -> argparse.Action:
    """A flag declared once: `to` names the field it sets, as "KIND.FIELD[.FIELD]" ("config.swap.size",
    "live.transport"), which is also its argparse dest; its default is that field's in
    `defaults[KIND]` (a dataclass instance), so no default is written twice."""
    kind, path = to.split(".", 1)
    if "choices" not in kw and kw.get("action") not in ("store_true", "store_false"):
        kw.setdefault("metavar", flags[-1].lstrip("-").upper().replace("-", "_"))  # as argparse names it from the flag
    return group.add_argument(*flags, dest=to, default=field_value(defaults[kind], path), **kw)


def collect(args: argparse.Namespace, kind: str, cls, **more):
    """The `cls` instance the flags bound to KIND.… give (nested dataclass fields filled from
    their own dotted flags); `more`: fields no flag sets."""
    values = {dest.split(".", 1)[1]: v for dest, v in vars(args).items() if dest.startswith(kind + ".")}
    return _build(cls, {**values, **more})


def _build(cls, values: dict):
    top, nested = {}, {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    kinds = {f.name: f for f in fields(cls)}
    for head, inner in nested.items():
        f = kinds[head]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        top[head] = _build(type(default), inner)
    return cls(**top)


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end like every other user error: one line `error: …`, exit status 2
    (argparse's default prints the whole usage first, which log scrapers split in two).
    No abbreviated flags: argparse would take `--keep` for `--keep-metadata` (GPS and device
    tags kept), and any new flag could change what an abbreviation means. Subcommand parsers
    are made of this class too (argparse makes them of the parent's)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP (a closed terminal, a dropped ssh session), unwinding like
    Ctrl-C so that temp files are removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # the signals that stopped this command, in order


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread. Which one came is
    also kept here: code between the handler and the command's `except` may raise a
    KeyboardInterrupt of its own instead (Ray's waits do), and the exit status must still say."""
    def raise_interrupted(signum, frame):
        _received.append(signum)
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)


def interrupted_status(e: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process it stopped: SIGINT 130,
    SIGTERM 143, SIGHUP 129."""
    signum = getattr(e, "signum", None) or (_received[0] if _received else signal.SIGINT)
    return 128 + int(signum)
