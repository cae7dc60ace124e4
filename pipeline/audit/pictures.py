"""The audit's pictures, as PNG bytes ready to inline in the report.

Everything returns bytes, never a file or a shown window: the report embeds them as data
URIs so the page is one file an officer can archive. Histograms use matplotlib's object API
(`Figure` + `FigureCanvasAgg`), not pyplot, so drawing in a server or a test leaves no global
figure behind and never asks for a display. Face sheets are composed with numpy and
encoded with OpenCV: pixels stay pixels (no resampling by a plotting library) and it is fast.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.audit.records import TrackSheet

# Colours picked so genuine/impostor/anonymized read apart also in greyscale print-outs.
PALETTE = ("#2a9d8f", "#8d99ae", "#e63946", "#7b2cbf", "#1d4ed8", "#f4a261")
_BG = 255
_INK = (40, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _finite(values) -> np.ndarray:
    a = np.asarray(list(values or ()), dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def histogram_png(
    series: dict[str, list[float]],
    *,
    threshold: float | None,
    title: str,
    xlabel: str,
    bins: int = 40,
    width_in: float = 7.5,
    height_in: float = 3.2,
) -> bytes:
    """Overlaid density histograms on shared bins, with an optional vertical threshold line.

    Densities, not counts: impostor pairs outnumber genuine ones by orders of magnitude and
    counts would flatten the genuine curve. Shared bins keep the shapes comparable. Empty
    or non-finite series are listed in the legend as n=0 instead of being dropped, so a
    missing measurement is visible rather than silently absent.
    """
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    data = {name: _finite(v) for name, v in (series or {}).items()}
    allv = np.concatenate([v for v in data.values() if v.size] or [np.zeros(0)])
    thr = float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None
    if allv.size:
        lo, hi = float(allv.min()), float(allv.max())
        if thr is not None:
            lo, hi = min(lo, thr), max(hi, thr)
        if hi - lo < 1e-6:  # one value everywhere: give the bar some width
            lo, hi = lo - 0.05, hi + 0.05
        edges = np.linspace(lo, hi, bins + 1)
    else:
        edges = None
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                color="#666666", fontsize=12)
        ax.set_xticks([])  # matplotlib's default ±0.04 axis would read as a measurement
        ax.set_yticks([])
    for i, (name, v) in enumerate(data.items()):
        color = PALETTE[i % len(PALETTE)]
        label = f"{name} (n={v.size})"
        if v.size and edges is not None:
            ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.30, color=color)
            ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.5, color=color,
                    label=label)
        else:
            ax.plot([], [], color=color, label=label)
    if thr is not None:
        ax.axvline(thr, color="#111111", linestyle="--", linewidth=1.3, label=f"threshold {thr:.3f}")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.grid(alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _rgb(image) -> np.ndarray:
    """Any thumbnail the measurement side may hand over, as H×W×3 uint8 RGB."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"thumbnails must be uint8 RGB; got dtype {a.dtype}, shape {a.shape}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"thumbnails must be H×W×3 uint8 RGB; got shape {a.shape}")
    return a


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h == height:
        return image
    width = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interp)


def _text(canvas: np.ndarray, text: str, center_x: int, baseline_y: int, scale: float = 0.45) -> None:
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.putText(canvas, text, (int(center_x - tw / 2), baseline_y), _FONT, scale, _INK, 1, cv2.LINE_AA)


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as PNG")
    return buf.tobytes()


def contact_sheet_png(sheet: TrackSheet, *, columns: int = 10, gap: int = 4) -> bytes:
    """Original thumbnails above anonymized ones, one column per sampled frame.

    Long tracks wrap into several bands of `columns` so the picture fits a page width
    without shrinking faces below what an officer can judge. The frame number sits under
    each column, so a doubtful face can be found in the video.
    """
    sheet.validate()  # the lists may have changed since it was built
    if columns < 1:
        raise ValueError(f"columns must be at least 1; got {columns}")
    label_w, label_h, head_h = 92, 18, 4
    if not len(sheet):
        canvas = np.full((40, 320, 3), _BG, np.uint8)
        _text(canvas, f"track {sheet.track_id}: no thumbnails", 160, 25)
        return _png(canvas)
    th, tw = np.asarray(sheet.original[0]).shape[:2]
    ncols = min(columns, len(sheet))
    nbands = math.ceil(len(sheet) / ncols)
    band_h = head_h + 2 * th + gap + label_h
    width = label_w + ncols * (tw + gap)
    canvas = np.full((nbands * band_h + gap, width, 3), _BG, np.uint8)
    for band in range(nbands):
        y0 = band * band_h + head_h
        for row, name in enumerate(("original", "anonymized")):
            y = y0 + row * (th + gap) + th // 2 + 5
            cv2.putText(canvas, name, (4, y), _FONT, 0.45, _INK, 1, cv2.LINE_AA)
        for c in range(ncols):
            i = band * ncols + c
            if i >= len(sheet):
                break
            x = label_w + c * (tw + gap)
            canvas[y0:y0 + th, x:x + tw] = _rgb(sheet.original[i])
            canvas[y0 + th + gap:y0 + 2 * th + gap, x:x + tw] = _rgb(sheet.anonymized[i])
            _text(canvas, str(int(sheet.frames[i])), x + tw // 2, y0 + 2 * th + gap + label_h - 4)
    return _png(canvas)


def thumbnail_strip_png(
    thumbs: Sequence[tuple[int, np.ndarray]], *, height: int = 96, columns: int = 10, gap: int = 4
) -> bytes | None:
    """Leak crops in a row (wrapping), each scaled to `height`, with "frame N" underneath.

    Crops come straight from boxes of different sizes, so each is scaled to one height and
    keeps its aspect ratio. Returns None when there is nothing to show.
    """
    if not thumbs:
        return None
    label_h = 18
    tiles = [(int(f), _fit(_rgb(im), height)) for f, im in thumbs]
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    width = max(sum(max(t.shape[1], 64) + gap for _, t in row) for row in rows) + gap
    canvas = np.full((len(rows) * (height + label_h + gap) + gap, width, 3), _BG, np.uint8)
    for r, row in enumerate(rows):
        y, x = gap + r * (height + label_h + gap), gap
        for frame, tile in row:
            cell = max(tile.shape[1], 64)
            off = (cell - tile.shape[1]) // 2
            canvas[y:y + height, x + off:x + off + tile.shape[1]] = tile
            _text(canvas, f"frame {frame}", x + cell // 2, y + height + label_h - 5, scale=0.4)
            x += cell + gap
    return _png(canvas)
