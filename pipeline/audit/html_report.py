"""The audit as one self-contained HTML page for a privacy officer.

One file, no scripts, no links out: images are inlined as data URIs and a Content Security
Policy forbids loading anything else, so the page can be archived with the case, mailed, or
opened on an offline machine, and opening it tells no server that it was read. It holds
crops of the original faces, so it is written like the videos are: to a private (0600)
temp file beside the target, renamed into place only when complete.

Every string from the audit dict is escaped: video paths are user input and may hold
anything. Every key may be missing or None (a video with no faces, an aborted measurement);
the page then says "—" or "not measured" instead of failing, and the verdict fails closed.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterator

import numpy as np

from pipeline.io.atomic import atomic_write
from pipeline.audit.pictures import contact_sheet_png, histogram_png, thumbnail_strip_png
from pipeline.audit.records import AuditThumbnails, TrackSheet

MAX_LEAK_ROWS = 500  # beyond this the table is unreadable anyway; the JSON has them all

# Identity distance (1 − cos) between consecutive frames of one person, Rosberg thesis Table 5.6.
THESIS_TEMPORAL = (("real data (thesis)", 0.150), ("FIVA + ITM (thesis)", 0.075))

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;
 margin:0 auto;padding:0 20px 40px;max-width:1160px;line-height:1.4;background:#fff}
h1{font-size:1.6em;margin:.6em 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd;
 padding-bottom:.2em}h3{font-size:1.05em;margin:1.2em 0 .3em}
.banner{background:#b00020;color:#fff;font-weight:600;padding:10px 16px;margin:0 -20px 12px;
 text-align:center;letter-spacing:.01em}
.paths{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.4em 0 1em}
.paths code,.wrap{word-break:break-all;overflow-wrap:anywhere}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.92em;background:#f4f4f4;
 padding:0 3px;border-radius:3px}
.verdict{padding:12px 16px;border-radius:6px;font-size:1.15em;font-weight:700;margin:1em 0}
.verdict ul{font-size:.85em;font-weight:400;margin:.4em 0 0;padding-left:1.3em}
.verdict.ok{background:#e3f4e8;color:#14532d;border:2px solid #2f9e55}
.verdict.bad{background:#fde8ea;color:#7f1d1d;border:2px solid #c62838}
td.pass{background:#e3f4e8;color:#14532d}td.fail{background:#c62838;color:#fff}td.info{color:#555;font-weight:400}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.92em}
th,td{border:1px solid #d6d6d6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.st{font-weight:700;text-align:center;white-space:nowrap}
tr.flag td{background:#fde8ea;color:#7f1d1d}
.explain{color:#555;font-size:.92em}
.note{color:#555;font-size:.9em;margin:.3em 0}
.pics{display:flex;flex-wrap:wrap;gap:12px}
img{max-width:100%;height:auto;display:block}
.sheet{overflow-x:auto;margin-bottom:1em}
footer{margin-top:2em;color:#777;font-size:.85em}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---- small formatting helpers: every one returns escaped HTML ----------------------------


def _e(value) -> str:
    return "—" if value is None else html.escape(str(value), quote=True)


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _real(value) -> float | None:
    """A finite float, or None for anything that is not one (None, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _num(value, nd: int = 3) -> str:
    v = _real(value)
    if v is None:
        return _e(value) if isinstance(value, str) else "—"
    return f"{v:.{nd}f}"


def _int(value) -> str:
    v = _real(value)
    if v is None:
        return _e(value) if isinstance(value, str) else "—"
    return f"{int(round(v)):,}"


def _pct(value) -> str:
    v = _real(value)
    if v is None:
        return "not measured"
    if 0 < v < 0.001:
        return "&lt;0.1%"
    return f"{100 * v:.1f}%"


def _rate(value, part, whole) -> str:
    """"1.2% (30 of 2,412)", or just "not measured" when there is nothing to count."""
    counts = "" if _real(part) is None and _real(whole) is None else f" ({_int(part)} of {_int(whole)})"
    return _pct(value) + counts


def _yes_no(value) -> str:
    return {True: "yes", False: "no"}.get(value, "unknown") if isinstance(value, bool) or value is None else _e(value)


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _status(ok: bool | None) -> str:
    if ok is None:
        return '<td class="st info">info</td>'
    return '<td class="st pass">pass</td>' if ok else '<td class="st fail">FAIL</td>'


# ---- sections -----------------------------------------------------------------------------


def _verdict(audit: dict) -> tuple[bool, list[str]]:
    """Pass only on positive evidence: zero leaks and a measured re-ID rate of exactly zero.

    Anything not measured counts against the video: an officer must never read green
    because a number was missing.
    """
    leaks, reid = _d(audit.get("leaks")), _d(audit.get("reid"))
    reasons = []
    count = _real(leaks.get("count"))
    if count is None:
        reasons.append("leak check not measured")
    elif count > 0:
        reasons.append(f"{int(count):,} leak(s): real faces visible unchanged in the anonymized video")
    suspect = len(_list(leaks.get("suspect")))
    if suspect:
        reasons.append(f"{suspect:,} face(s) the boxes file marks anonymized but whose pixels are unchanged")
    rate = _real(reid.get("rate"))
    dark = _real(_d(audit.get("judgeable")).get("not_judgeable"))
    if rate is None and dark:
        reasons.append(f"re-identification rate not measured: none of the {_int(dark)} faces is judgeable "
                       "(too dark or flat to carry an identity)")
    elif rate is None:
        reasons.append("re-identification rate not measured (no face pairs compared)")
    elif rate > 0:
        reasons.append(
            f"re-identification rate {_pct(rate)}: {_int(reid.get('matches'))} of "
            f"{_int(reid.get('faces'))} anonymized faces still match their original"
        )
    return not reasons, reasons


# What a leak detector is known not to see (benchmarks/results/audit_detector.md): said beside
# its leak count, since a face it cannot see is never reported as a leak.
BLIND_SPOTS = {name: f"{who} misses faces in the dark and faces cut by the frame's edge, so none of those is counted "
                     "here (--leak-detector centerface sees them, for runs that did not use it)"
               for name, who in (("dlib-mmod", "dlib's CNN"), ("mtcnn", "MTCNN"))}


def _leak_detector(leaks: dict) -> tuple[str, object, str]:
    """(name, faces it found, sampling) of the leak check; reports written before the
    detector was named used CenterFace on every frame (`centerface_faces`)."""
    name = leaks.get("detector") or "centerface"
    faces = leaks.get("detector_faces", leaks.get("centerface_faces"))
    every = _real(leaks.get("every")) or 1
    return name, faces, "every frame" if every == 1 else f"every {_int(every)}th frame"


def _header(audit: dict) -> str:
    rows = [("original", audit.get("original")), ("anonymized", audit.get("anonymized"))]
    if audit.get("boxes"):
        rows.append(("boxes file", audit.get("boxes")))
    paths = "".join(f"<div>{k}</div><div><code>{_e(v)}</code></div>" for k, v in rows)
    indep = audit.get("independent_of_pipeline")
    rec = (
        f"recognizer <b>{_e(audit.get('recognizer'))}</b>, independent of the anonymization "
        f"pipeline: <b>{_yes_no(indep)}</b>"
    )
    if indep is False:
        rec += " — the pipeline uses the same recognizer, so these numbers may be optimistic"
    ld = _d(audit.get("leak_detector"))
    if ld:
        lindep = ld.get("independent_of_pipeline")
        used = ", ".join(str(d) for d in _list(ld.get("run_detectors"))) or "unknown: no run report"
        rec += (f"; leak detector <b>{_e(ld.get('name'))}</b>, independent of the run's detectors "
                f"({_e(used)}): <b>{_yes_no(lindep)}</b>")
        if lindep is False:
            rec += " — the run used this detector, so it cannot see the faces the run missed"
    return (
        '<div class="banner">Contains unanonymized faces: personal data, handle like the '
        "original video.</div>\n"
        f"<h1>Privacy audit</h1>\n<div class=\"paths\">{paths}</div>\n"
        f'<p class="note">{_int(audit.get("frames"))} frames, {_int(audit.get("faces"))} faces '
        f"measured; {rec}.</p>\n"
    )


def _summary(audit: dict) -> str:
    ok, reasons = _verdict(audit)
    head = "PASS: no leak and no re-identification" if ok else "FAIL: not shown to be anonymous"
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    verdict = f'<div class="verdict {"ok" if ok else "bad"}">{head}{f"<ul>{items}</ul>" if items else ""}</div>'

    thr, reid, neg = _d(audit.get("threshold")), _d(audit.get("reid")), _d(audit.get("negated_reid"))
    leaks, det = _d(audit.get("leaks")), _d(audit.get("detection"))
    tc = _d(audit.get("temporal_consistency"))
    tco, tci = _d(tc.get("output")), _d(tc.get("original"))
    lm = _d(det.get("landmark_displacement"))
    far = _real(thr.get("far_target"))
    far_txt = f"FAR {far:g}" if far is not None else "the FAR target"
    rate = _real(reid.get("rate"))
    count = _real(leaks.get("count"))
    suspect = leaks.get("suspect")
    n_suspect = len(_list(suspect))
    eer = _real(thr.get("eer"))
    eer_txt = f"; EER {_pct(eer)} at {_num(thr.get('eer_threshold'))}" if eer is not None else ""

    ld_name, ld_faces, ld_every = _leak_detector(leaks)
    rows = [
        ("Re-identification rate", _rate(rate, reid.get("matches"), reid.get("faces")),
         (rate == 0) if rate is not None else False,
         f"Share of anonymized faces the recognizer still matches to the same person's original "
         f"face at the {far_txt} threshold, over the judgeable faces (below). Must be 0."),
        ("Leaks", _int(count) if count is not None else "not measured", (count == 0) if count is not None else False,
         f"Faces the leak detector ({_e(ld_name)}, {ld_every}) finds in the original ({_int(ld_faces)} "
         f"in all) that no anonymized region covers and whose pixels changed less than "
         f"{_num(leaks.get('change_threshold'))} (1 − SSIM): real faces left visible. {_e(BLIND_SPOTS.get(ld_name, ''))}"),
        ("Suspect boxes", f"{n_suspect:,}" if suspect is not None else "not checked",
         (n_suspect == 0) if suspect is not None else None,
         "Faces the boxes file marks as anonymized although their pixels are unchanged."),
        ("¬ID rate", _rate(neg.get("rate"), neg.get("matches"), neg.get("faces")), None,
         "Share of anonymized faces that match the negated original identity −z at the same threshold "
         "(Rosberg/FIVA: an anonymization pushed towards −z is easy to reverse). Must be 0."),
        ("Similarity, original vs anonymized", _num(reid.get("mean_similarity")), None,
         "Mean cosine similarity of each original face with its anonymized version; far below the threshold is wanted."),
        ("Match threshold", _num(thr.get("value")), None,
         f"Cosine similarity above which two faces count as one person ({_e(thr.get('source'))}; "
         f"FAR achieved {_num(thr.get('far_achieved'), 4)} on {_int(thr.get('impostor_pairs'))} impostor and "
         f"{_int(thr.get('genuine_pairs'))} genuine pairs{eer_txt})."),
        ("Temporal consistency", f"{_num(tco.get('mean'))} (original {_num(tci.get('mean'))})", None,
         "Identity distance (1 − cos) between consecutive faces of one track: near the original's "
         "value means the fake identity does not flicker."),
        ("Detection rate", _rate(det.get("rate"), det.get("detected"), det.get("faces")), None,
         "Share of original faces still found in the anonymized video: the output stays usable as face data."),
        ("Landmark displacement", f"{_num(lm.get('median'))} median", None,
         f"How far the five facial landmarks moved, in {_e(lm.get('unit') or 'inter-ocular distance')} "
         "units: small means pose and expression were kept."),
    ]
    body = "".join(
        f"<tr><th>{name}</th><td class=\"n\">{value}</td>{_status(ok_)}<td class=\"explain\">{why}</td></tr>"
        for name, value, ok_, why in rows
    )
    return (
        f"<h2>Verdict</h2>\n{verdict}\n<table><tr><th>Metric</th><th>Value</th><th>Check</th>"
        f"<th>What it means</th></tr>{body}</table>\n{_judgeable_note(audit)}"
    )


def _judgeable_note(audit: dict) -> str:
    """The one sentence that says which faces re-ID and ¬ID leave out, and why."""
    dark = _real(_d(audit.get("judgeable")).get("not_judgeable"))
    if not dark:
        return ""
    return (f'<p class="note">{_int(dark)} faces are not judgeable: the recognizer cannot tell them from a heavy '
            "blur of themselves (too dark or flat to carry an identity), so they are left out of re-ID and ¬ID.</p>\n")


def _not_judgeable(audit: dict, thumbs: list) -> str:
    """The faces left out of re-ID, as the original shows them: a reader checks that none holds a face."""
    j = _d(audit.get("judgeable"))
    dark = _real(j.get("not_judgeable"))
    if not dark:
        return ""
    shown = f" ({len(thumbs):,} shown)" if len(thumbs) < dark else ""
    strip = thumbnail_strip_png(thumbs)
    return (f"<h2>Faces not judgeable</h2>\n<p class=\"note\">The {_int(dark)} faces left out of re-ID and ¬ID{shown}, "
            f"as the original shows them. The rule: {_e(j.get('rule'))}.</p>\n" + (_img(strip, "faces not judgeable") + "\n" if strip else ""))


def _histograms(audit: dict) -> str:
    dist = _d(audit.get("distances"))
    thr = _real(_d(audit.get("threshold")).get("value"))
    sim = histogram_png(
        {
            "genuine (same person)": _list(dist.get("genuine")),
            "impostor (different people)": _list(dist.get("impostor")),
            "original vs anonymized": _list(dist.get("original_vs_anonymized")),
            "¬ID (negated)": _list(dist.get("negated")),
            "original vs its heavy blur": _list(dist.get("destroyed")),
        },
        threshold=thr, title="Face similarity", xlabel="cosine similarity",
    )
    tmp = histogram_png(
        {"anonymized output": _list(dist.get("temporal_output")),
         "original": _list(dist.get("temporal_original"))},
        threshold=None, title="Temporal identity distance, consecutive faces of a track",
        xlabel="identity distance (1 − cos)",
    )
    return (
        "<h2>Distributions</h2>\n"
        '<p class="note">Anonymized faces (red, judgeable faces only) should sit with the impostors, left of the dashed '
        "threshold; the genuine pairs show where a real match would fall. A face whose heavy blur (blue) "
        "reaches the threshold is not judgeable.</p>\n"
        f'<div class="pics">{_img(sim, "similarity histogram")}{_img(tmp, "temporal distance histogram")}</div>\n'
    )


def _temporal(audit: dict) -> str:
    tc = _d(audit.get("temporal_consistency"))
    rows = []
    for label, key in (("anonymized output", "output"), ("original video", "original")):
        t = _d(tc.get(key))
        rows.append(f"<tr><td>{label}</td><td class=\"n\">{_num(t.get('mean'))}</td>"
                    f"<td class=\"n\">{_num(t.get('std'))}</td><td class=\"n\">{_int(t.get('pairs'))}</td></tr>")
    for label, value in THESIS_TEMPORAL:
        rows.append(f"<tr><td>{label}</td><td class=\"n\">{value:.3f}</td><td class=\"n\">—</td>"
                    "<td class=\"n\">—</td></tr>")
    return (
        "<h2>Temporal consistency</h2>\n"
        '<p class="note">Mean identity distance between consecutive faces of one track (lower = steadier). '
        "Reference values: Rosberg thesis, Table 5.6; they were measured with another recognizer, so "
        "compare the output with this video's original first.</p>\n"
        "<table><tr><th>video</th><th>mean</th><th>std</th><th>pairs</th></tr>" + "".join(rows) + "</table>\n"
    )


def _detection(audit: dict) -> str:
    det = _d(audit.get("detection"))
    lm = _d(det.get("landmark_displacement"))
    return (
        "<h2>Utility: detection and landmarks</h2>\n"
        "<table><tr><th>detection rate</th><td class=\"n\">"
        f"{_pct(det.get('rate'))}</td><td>{_int(det.get('detected'))} of {_int(det.get('faces'))} faces found again</td></tr>"
        f"<tr><th>landmark displacement</th><td class=\"n\">{_num(lm.get('mean'))}</td><td>mean</td></tr>"
        f"<tr><th></th><td class=\"n\">{_num(lm.get('median'))}</td><td>median</td></tr>"
        f"<tr><th></th><td class=\"n\">{_num(lm.get('p95'))}</td><td>95th percentile</td></tr></table>\n"
        f'<p class="note">Displacement unit: {_e(lm.get("unit") or "inter-ocular distance")}.</p>\n'
    )


def _leak_rows(items: list) -> str:
    rows = []
    for i, it in enumerate(items[:MAX_LEAK_ROWS], 1):
        it = _d(it)
        box = _list(it.get("box"))
        box_txt = ", ".join(_int(v) for v in box) if box else "—"
        rows.append(
            f"<tr><td class=\"n\">{i}</td><td class=\"n\">{_int(it.get('frame'))}</td>"
            f"<td class=\"n\">{_num(it.get('time'))}</td><td class=\"n\">{box_txt}</td>"
            f"<td class=\"n\">{_num(it.get('score'), 2)}</td><td class=\"n\">{_num(it.get('change'), 4)}</td>"
            f"<td>{_yes_no(it.get('covered'))}</td></tr>"
        )
    more = (f'<p class="note">First {MAX_LEAK_ROWS:,} of {len(items):,} shown; the audit JSON lists all.</p>'
            if len(items) > MAX_LEAK_ROWS else "")
    return (
        "<table><tr><th>#</th><th>frame</th><th>time (s)</th><th>box x1, y1, x2, y2</th><th>score</th>"
        "<th>change</th><th>in boxes file</th></tr>" + "".join(rows) + "</table>" + more
    )


def _leaks(audit: dict, thumbs: AuditThumbnails) -> str:
    leaks = _d(audit.get("leaks"))
    items, suspect = _list(leaks.get("items")), _list(leaks.get("suspect"))
    count = _real(leaks.get("count"))
    out = ["<h2>Leaks</h2>\n"]
    name, faces, every = _leak_detector(leaks)
    if count is None and not items:
        out.append('<p class="note">Leak check not measured.</p>\n')
    elif not items and not count:
        out.append(f'<p class="note">No leak: all {_int(faces)} faces the leak detector ({_e(name)}, {every}) '
                   "found in the original were covered or changed.</p>\n")
    else:
        out.append(f'<p class="note">Faces {_e(name)} found in the original ({every}) that no claimed region covers and whose '
                   f'pixels changed less than {_num(leaks.get("change_threshold"))} (1 − SSIM) in the anonymized video.</p>\n' + _leak_rows(items) + "\n")
    strip = thumbnail_strip_png(thumbs.leaks)
    if strip:
        out.append(f"<h3>Leaked faces, as they appear in the anonymized video</h3>\n{_img(strip, 'leak thumbnails')}\n")
    if suspect:
        out.append("<h3>Suspect: marked anonymized, pixels unchanged</h3>\n" + _leak_rows(suspect) + "\n")
        strip = thumbnail_strip_png(thumbs.suspects)
        if strip:
            shown = f"the first {len(thumbs.suspects):,}, " if len(thumbs.suspects) < len(suspect) else ""
            out.append(f'<p class="note">Each suspect ({shown}original left, anonymized right): look whether it holds a face.</p>\n'
                       f"{_img(strip, 'suspect thumbnails')}\n")
    return "".join(out)


def _track_line(t: dict) -> str:
    return (f"<td class=\"n\">{_int(t.get('track_id'))}</td><td class=\"n\">{_int(t.get('faces'))}</td>"
            f"<td class=\"n\">{_int(t.get('first_frame'))}–{_int(t.get('last_frame'))}</td>"
            f"<td class=\"n\">{_pct(t.get('reid_rate'))}</td><td class=\"n\">{_int(t.get('not_judgeable'))}</td>"
            f"<td class=\"n\">{_num(t.get('mean_similarity'))}</td>"
            f"<td class=\"n\">{_num(t.get('m_tc_mean'))}</td><td class=\"n\">{_int(t.get('leaks'))}</td>")


def _track_bad(t: dict) -> bool:
    return bool((_real(t.get("reid_rate")) or 0) > 0 or (_real(t.get("leaks")) or 0) > 0)


_TRACK_HEAD = ("<tr><th>track</th><th>faces</th><th>frames</th><th>re-ID rate</th><th>not judgeable</th><th>similarity</th>"
               "<th>temporal</th><th>leaks</th></tr>")


def _tracks(audit: dict, sheets: list[TrackSheet]) -> Iterator[str]:
    tracks = [_d(t) for t in _list(audit.get("tracks"))]
    yield "<h2>Tracks</h2>\n"
    if not tracks and not sheets:
        yield '<p class="note">No tracks.</p>\n'
        return
    if tracks:
        rows = "".join(('<tr class="flag">' if _track_bad(t) else "<tr>") + _track_line(t) + "</tr>" for t in tracks)
        yield (f"<table>{_TRACK_HEAD}{rows}</table>\n"
               '<p class="note">re-ID rate and similarity (mean cosine original vs anonymized) over the track\'s '
               "judgeable faces; temporal: mean identity distance between consecutive anonymized faces.</p>\n")
    by_id = {t.get("track_id"): t for t in tracks}
    for sheet in sheets:
        png = contact_sheet_png(sheet)  # raises on a malformed sheet: no half page is committed
        t = by_id.get(sheet.track_id, {})
        numbers = (f"re-ID {_pct(t.get('reid_rate'))}, not judgeable {_int(t.get('not_judgeable'))}, "
                   f"similarity {_num(t.get('mean_similarity'))}, "
                   f"temporal {_num(t.get('m_tc_mean'))}, leaks {_int(t.get('leaks'))}, "
                   f"frames {_int(t.get('first_frame'))}–{_int(t.get('last_frame'))}") if t else "no numbers for this track"
        yield (f"<h3>Track {_int(sheet.track_id)}</h3>\n<p class=\"note\">{numbers}</p>\n"
               f'<div class="sheet">{_img(png, f"track {sheet.track_id}: original above, anonymized below")}</div>\n')


def _page(audit: dict, sheets: list[TrackSheet], thumbs: AuditThumbnails) -> Iterator[str]:
    title = os.path.basename(str(audit.get("anonymized") or "")) or "video"
    yield (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>Privacy audit: {_e(title)}</title>\n<style>{CSS}</style></head><body>\n"
    )
    yield _header(audit)
    yield _summary(audit)
    yield _histograms(audit)
    yield _temporal(audit)
    yield _detection(audit)
    yield _not_judgeable(audit, thumbs.not_judgeable)
    yield _leaks(audit, thumbs)
    yield from _tracks(audit, sheets)
    yield ('<footer>Written by anonswap audit. Contains unanonymized faces: personal data, handle '
           "like the original video.</footer>\n</body></html>\n")


def render_html(audit: dict, sheets: list[TrackSheet], thumbs: AuditThumbnails | None, path: str) -> None:
    """Write the report to `path`, complete or not at all.

    Sections are written as they are drawn, so a long video's hundreds of sheets never sit
    in memory together; any failure removes the temp file and leaves no page behind.
    """
    # original faces: owner-only, whatever the umask
    with atomic_write(path, private=True) as out, open(out.path, "w", encoding="utf-8") as fh:
        for part in _page(_d(audit), list(sheets or ()), thumbs or AuditThumbnails()):
            fh.write(part)
