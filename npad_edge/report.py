"""A self-contained HTML evaluation report: one file, no network.

Images are embedded as ``data:`` URIs and charts are inline SVG drawn here, so the report
opens anywhere (an air-gapped line PC, an e-mail attachment) and needs no plotting library.
Sections: the metric table, per-defect-type detection, ROC curve, PRO curve (to 0.3 FPR),
the score histogram of good vs defective images with the threshold, and the worst-ranked
images (highest-scoring good, lowest-scoring defective) with their overlays.
"""

from __future__ import annotations

import base64
import html
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["collect_overlays", "worst_indices", "write_html_report"]

GOOD_COLOR = "#2b7bba"
BAD_COLOR = "#e4572e"
THR_COLOR = "#222222"
F1_COLOR = "#8a8a8a"
PRED_CONTOUR = (0, 255, 255)
THUMB = 384  # px, longest side of the overlays in the report
GT_CONTOUR = (60, 255, 60)


# --------------------------------------------------------------------------- public API


def worst_indices(labels: Sequence[int], scores: Sequence[float], k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` highest-scoring good images and the ``k`` lowest-scoring defective ones.

    These are the images a threshold gets wrong first: false alarms and missed defects.
    """
    lab = np.asarray(labels).astype(bool)
    sc = np.asarray(scores, dtype=np.float64)
    good = np.flatnonzero(~lab)
    bad = np.flatnonzero(lab)
    # Stable sorts so ties keep dataset order and the report is reproducible.
    g = good[np.argsort(-sc[good], kind="stable")][:k]
    b = bad[np.argsort(sc[bad], kind="stable")][:k]
    return [int(i) for i in g], [int(i) for i in b]


def collect_overlays(result: Any, model_path: str | os.PathLike, *, k: int = 4,
                     device: str = "CPU") -> list[tuple[str, bytes]]:
    """Re-run the model on the worst-ranked images of ``result`` and return ``(title, png)`` pairs.

    The overlays use the model threshold for a fixed colour range (see :mod:`npad_edge.viz`);
    the predicted mask is outlined in cyan and, where an MVTec ground-truth mask exists next to
    the data, the true defect in green.
    """
    from . import Detector
    from .data import read_image
    from .viz import map_range, mask_contour, overlay, resize_map, to_png_bytes

    good, bad = worst_indices(result.labels, result.scores, k)
    if not good and not bad:
        return []
    det = Detector.load(model_path, device=device)
    threshold = float(det.threshold)
    vmin, vmax = map_range(threshold)
    out: list[tuple[str, bytes]] = []
    for kind, idxs in (("good, high score", good), ("defective, low score", bad)):
        for rank, i in enumerate(idxs, 1):
            path = Path(result.paths[i])
            image = read_image(path)
            pred = det(image)
            # Draw at thumbnail size so that the 2 px contours stay visible in the page.
            small = _thumbnail(image, THUMB)
            hw = small.shape[:2]
            amap = resize_map(pred.anomaly_map, hw)
            mask = _resize_mask(pred.mask, hw) if np.ndim(pred.mask) == 2 else amap >= threshold
            rgb = overlay(small, amap, mask, vmin=vmin, vmax=vmax, contour_color=PRED_CONTOUR)
            gt = _ground_truth(path, hw)
            if gt is not None and gt.any():
                rgb[mask_contour(gt, width=2, outside=True)] = GT_CONTOUR
            dtype = _defect_type(result, i, path)
            title = f"{kind} #{rank}: {dtype}/{path.name}, score {float(result.scores[i]):.4g}"
            out.append((title, to_png_bytes(rgb)))
    return out


def write_html_report(result: Any, out_path: str | os.PathLike, *,
                      overlays: Sequence[tuple[str, bytes]] = (),
                      title: str = "npad-edge evaluation report",
                      notes: Sequence[str] = ()) -> Path:
    """Write ONE self-contained HTML file for an ``EvalResult``; returns its path.

    Args:
        result: an ``npad_edge.evaluation.EvalResult`` (``metrics``, ``paths``, ``labels``,
            ``scores``, ``defect_types``, ``roc``, ``pro_curve``, ``timings``).
        overlays: ``(title, PNG bytes)`` pairs shown in the worst-images section, e.g. from
            :func:`collect_overlays`.
        notes: extra paragraphs shown under the title (e.g. "defects are synthetic").
    """
    m = dict(result.metrics or {})
    labels = np.asarray(result.labels).astype(bool)
    scores = np.asarray(result.scores, dtype=np.float64)
    thr = _num(m.get("threshold"))
    f1_thr = _num(m.get("f1_threshold"))

    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>written {_e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}"
             f" &middot; {len(scores)} test images ({int((~labels).sum())} good, {int(labels.sum())} defective)</p>"]
    parts += [f"<p class='note'>{_e(n)}</p>" for n in notes]

    parts.append("<h2 id='metrics'>Metrics</h2>")
    parts.append(_metric_table(m, getattr(result, "timings", None) or {}))
    parts.append(_defect_table(result, labels, scores, thr))

    parts.append("<h2 id='curves'>Curves</h2><div class='charts'>")
    roc = getattr(result, "roc", None)
    if roc is not None:
        fpr, tpr = (np.asarray(a, dtype=np.float64) for a in roc)
        auc = m.get("image_auroc")
        parts.append(_figure(_line_chart([("ROC", fpr, tpr, BAD_COLOR)], xlim=(0, 1), ylim=(0, 1),
                                         xlabel="false positive rate", ylabel="true positive rate",
                                         diagonal=True),
                             "Image-level ROC" + (f" (AUROC {100 * auc:.1f} %)" if auc is not None else "")))
    pro = getattr(result, "pro_curve", None)
    if pro is not None:
        fpr, per = (np.asarray(a, dtype=np.float64) for a in pro)
        keep = fpr <= 0.3 + 1e-12
        v = m.get("pro")
        parts.append(_figure(_line_chart([("PRO", fpr[keep], per[keep], GOOD_COLOR)], xlim=(0, 0.3), ylim=(0, 1),
                                         xlabel="pixel false positive rate", ylabel="per-region overlap"),
                             "PRO curve to 0.3 FPR" + (f" (AU-PRO {100 * v:.1f} %)" if v is not None else "")))
    else:
        parts.append("<p class='muted'>No PRO curve: the test set has no ground-truth masks.</p>")
    parts.append(_figure(_histogram(scores[~labels], scores[labels], thr, f1_thr),
                         "Image scores: good vs defective"))
    parts.append("</div>")

    parts.append("<h2 id='worst'>Worst-ranked images</h2>")
    parts.append("<p class='muted'>Highest-scoring good images (false-alarm candidates) and lowest-scoring "
                 "defective images (miss candidates). Heat-map colours use one fixed range for all images, "
                 "derived from the model threshold (0.5&times; to 2&times;); cyan outline: predicted defect "
                 "mask; green outline: ground truth.</p>")
    if overlays:
        parts.append("<div class='grid'>")
        for cap, png in overlays:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            parts.append(f"<figure class='ov'><img src='{uri}' alt='{_e(cap)}'><figcaption>{_e(cap)}</figcaption></figure>")
        parts.append("</div>")
    else:
        parts.append(_worst_table(result, labels, scores))

    doc = _PAGE.format(title=_e(title), css=_CSS, body="\n".join(parts))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------- tables


def _metric_table(m: dict[str, Any], timings: dict[str, Any]) -> str:
    pct = [("image_auroc", "Image AUROC"), ("pixel_auroc", "Pixel AUROC"), ("pro", "AU-PRO (0.3 FPR)"),
           ("f1", "Image F1 (at the F1-optimal threshold)")]
    rows = [(label, "&ndash;" if m.get(k) is None else f"{100 * float(m[k]):.1f} %") for k, label in pct]
    ci = m.get("image_auroc_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and m.get("image_auroc") is not None:
        rows[0] = (rows[0][0], rows[0][1] + f" (95 % CI {100 * float(ci[0]):.1f}&ndash;{100 * float(ci[1]):.1f} %, DeLong)")
    res = m.get("eval_resolution")
    if isinstance(res, (list, tuple)):
        res = " x ".join(str(v) for v in res)
    rows += [("Model threshold", _fmt(m.get("threshold"))), ("F1-optimal threshold", _fmt(m.get("f1_threshold"))),
             ("Test images", _fmt(m.get("n_images"))), ("Pixel-metric resolution", _e(res) if res else "&ndash;")]
    if m.get("eval_size_rule"):
        rows.append(("Pixel-metric resolution rule", _e(m["eval_size_rule"])))
    mis = m.get("model_input_size")
    if isinstance(mis, (list, tuple)) and mis:
        rule = m.get("aspect_rule")
        rows.append(("Model input (H x W)", _e(" x ".join(str(v) for v in mis)
                                              + (f", other aspect ratios: {rule}" if rule else ""))))
    shown = {k for k, _ in pct} | {"image_auroc_ci95", "threshold", "f1_threshold", "n_images", "eval_resolution", "eval_size_rule",
                                   "model_input_size", "aspect_rule"}
    for k, v in m.items():
        if k not in shown and isinstance(v, (int, float, str)) and not isinstance(v, bool):
            rows.append((_e(k.replace("_", " ")), _e(_fmt(v))))
    for k, v in (timings or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n":
            rows.append((_e(f"time per image: {k.replace('_ms', '').replace('_', ' ')} (ms)"), _e(_fmt(v))))
    body = "".join(f"<tr><th>{a}</th><td>{b}</td></tr>" for a, b in rows)
    return f"<table class='metrics'>{body}</table>"


def _defect_table(result: Any, labels: np.ndarray, scores: np.ndarray, thr: float | None) -> str:
    types = getattr(result, "defect_types", None)
    if types is None or len(types) != len(scores):
        return ""
    types = np.asarray([str(t) for t in types])
    head = ("<tr><th>defect type</th><th>images</th><th>median score</th>"
            "<th>flagged anomalous (score &ge; model threshold)</th></tr>")
    rows = []
    for t in sorted(set(types.tolist()), key=lambda s: (s != "good", s)):
        sel = types == t
        s = scores[sel]
        flagged = "&ndash;" if thr is None else f"{int((s >= thr).sum())} / {len(s)}"
        rows.append(f"<tr><td>{_e(t)}</td><td>{len(s)}</td><td>{_fmt(float(np.median(s)))}</td><td>{flagged}</td></tr>")
    return f"<table class='types'>{head}{''.join(rows)}</table>"


def _worst_table(result: Any, labels: np.ndarray, scores: np.ndarray, k: int = 5) -> str:
    good, bad = worst_indices(labels, scores, k)
    rows = "".join(f"<tr><td>{kind}</td><td>{_e(str(result.paths[i]))}</td><td>{_fmt(float(scores[i]))}</td></tr>"
                   for kind, idx in (("good, high score", good), ("defective, low score", bad)) for i in idx)
    return f"<table class='types'><tr><th>kind</th><th>image</th><th>score</th></tr>{rows}</table>"


# --------------------------------------------------------------------------- SVG charts

_W, _H = 360, 290
_ML, _MR, _MT, _MB = 58, 16, 14, 48


def _line_chart(series: Sequence[tuple[str, np.ndarray, np.ndarray, str]], *, xlim: tuple[float, float],
                ylim: tuple[float, float], xlabel: str, ylabel: str, diagonal: bool = False) -> str:
    sx, sy = _scales(xlim, ylim)
    g = [_axes(xlim, ylim, xlabel, ylabel, sx, sy)]
    if diagonal:
        g.append(f"<line x1='{sx(xlim[0]):.1f}' y1='{sy(ylim[0]):.1f}' x2='{sx(xlim[1]):.1f}' y2='{sy(ylim[1]):.1f}' "
                 "stroke='#bbb' stroke-dasharray='4 4'/>")
    for _, xs, ys, color in series:
        xs, ys = _decimate(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), 600)
        if len(xs) == 0:
            continue
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        g.append(f"<polyline fill='none' stroke='{color}' stroke-width='2.2' points='{pts}'/>")
    return _svg("".join(g))


def _histogram(good: np.ndarray, bad: np.ndarray, thr: float | None, f1_thr: float | None, bins: int = 30) -> str:
    allv = np.concatenate([good, bad]) if len(good) + len(bad) else np.zeros(1)
    lo, hi = float(np.min(allv)), float(np.max(allv))
    for v in (thr, f1_thr):
        if v is not None and math.isfinite(v):
            lo, hi = min(lo, v), max(hi, v)
    if hi <= lo:
        hi = lo + 1.0
    pad = 0.03 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    cg = np.histogram(good, edges)[0]
    cb = np.histogram(bad, edges)[0]
    ymax = max(1, int(max(cg.max(initial=0), cb.max(initial=0))))
    ylim = (0.0, float(_nice_ceil(ymax)))
    mt = _MT + 34  # room for the legend above the plot, where it cannot hide bars
    sx, sy = _scales((lo, hi), ylim, mt)
    g = [_axes((lo, hi), ylim, "image score", "images", sx, sy, int_y=True, mt=mt)]
    for counts, color in ((cg, GOOD_COLOR), (cb, BAD_COLOR)):
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                g.append(f"<rect x='{sx(a):.1f}' y='{sy(c):.1f}' width='{max(sx(b) - sx(a) - 1, 1):.1f}' "
                         f"height='{sy(0) - sy(c):.1f}' fill='{color}' fill-opacity='0.55' stroke='{color}'/>")
    legend = [[("good", GOOD_COLOR, ""), ("defective", BAD_COLOR, "")], []]
    for v, color, name, dash in ((thr, THR_COLOR, "model threshold", ""), (f1_thr, F1_COLOR, "F1-optimal", "5 4")):
        if v is not None and math.isfinite(v):
            g.append(f"<line x1='{sx(v):.1f}' y1='{sy(ylim[1]):.1f}' x2='{sx(v):.1f}' y2='{sy(0):.1f}' "
                     f"stroke='{color}' stroke-width='2' stroke-dasharray='{dash}'/>")
            legend[1].append((f"{name} {v:.4g}", color, dash or "line"))
    for row, items in enumerate(legend):
        x, y = _ML, 14 + 16 * row
        for name, color, kind in items:
            if not kind:
                g.append(f"<rect x='{x}' y='{y - 9}' width='12' height='10' fill='{color}' fill-opacity='0.55' "
                         f"stroke='{color}'/>")
            else:
                g.append(f"<line x1='{x}' y1='{y - 4}' x2='{x + 14}' y2='{y - 4}' stroke='{color}' stroke-width='2' "
                         f"stroke-dasharray='{'' if kind == 'line' else kind}'/>")
            g.append(f"<text x='{x + 18}' y='{y}' class='lg'>{_e(name)}</text>")
            x += 28 + 6.5 * len(name)
    return _svg("".join(g))


def _scales(xlim: tuple[float, float], ylim: tuple[float, float], mt: int = _MT) -> tuple[Callable, Callable]:
    x0, x1 = xlim
    y0, y1 = ylim
    pw, ph = _W - _ML - _MR, _H - mt - _MB
    return (lambda x: _ML + (x - x0) / (x1 - x0) * pw), (lambda y: mt + ph - (y - y0) / (y1 - y0) * ph)


def _axes(xlim, ylim, xlabel, ylabel, sx, sy, int_y: bool = False, mt: int = _MT) -> str:
    g = [f"<rect x='{_ML}' y='{mt}' width='{_W - _ML - _MR}' height='{_H - mt - _MB}' fill='#fff' stroke='#999'/>"]
    for x in _ticks(*xlim):
        g.append(f"<line x1='{sx(x):.1f}' y1='{mt}' x2='{sx(x):.1f}' y2='{_H - _MB}' stroke='#eee'/>")
        g.append(f"<text x='{sx(x):.1f}' y='{_H - _MB + 15}' text-anchor='middle' class='tk'>{_tick_label(x)}</text>")
    for y in _ticks(*ylim, integer=int_y):
        g.append(f"<line x1='{_ML}' y1='{sy(y):.1f}' x2='{_W - _MR}' y2='{sy(y):.1f}' stroke='#eee'/>")
        g.append(f"<text x='{_ML - 6}' y='{sy(y) + 4:.1f}' text-anchor='end' class='tk'>{_tick_label(y)}</text>")
    g.append(f"<text x='{_ML + (_W - _ML - _MR) / 2:.1f}' y='{_H - 10}' text-anchor='middle' class='ax'>{_e(xlabel)}</text>")
    g.append(f"<text transform='translate(14 {mt + (_H - mt - _MB) / 2:.1f}) rotate(-90)' text-anchor='middle' "
             f"class='ax'>{_e(ylabel)}</text>")
    return "".join(g)


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * span:
        out.append(round(v, 10))
        v += step
    return out


def _nice_ceil(v: float) -> float:
    t = _ticks(0, v * 1.08, 5, integer=True)
    step = t[1] - t[0] if len(t) > 1 else 1
    return math.ceil(v * 1.08 / step) * step


def _tick_label(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def _decimate(xs: np.ndarray, ys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(xs) <= n:
        return xs, ys
    keep = np.unique(np.linspace(0, len(xs) - 1, n).round().astype(int))
    return xs[keep], ys[keep]


def _svg(inner: str) -> str:
    # No xmlns attribute: inline SVG in HTML does not need it, and the report holds no URLs.
    return (f"<svg viewBox='0 0 {_W} {_H}' width='{_W}' height='{_H}' role='img' "
            f"font-family='system-ui, sans-serif'>{inner}</svg>")


def _figure(svg: str, caption: str) -> str:
    return f"<figure class='chart'>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


# --------------------------------------------------------------------------- helpers


def _ground_truth(path: Path, hw: tuple[int, int]) -> np.ndarray | None:
    """The MVTec ground-truth mask of ``<root>/test/<type>/<name>``, if it exists."""
    try:
        dtype_dir, test_dir = path.parent, path.parent.parent
        if test_dir.name != "test":
            return None
        gt = test_dir.parent / "ground_truth" / dtype_dir.name / f"{path.stem}_mask.png"
        if not gt.is_file():
            return None
        from PIL import Image

        with Image.open(gt) as im:
            m = np.asarray(im.convert("L").resize((hw[1], hw[0]), Image.NEAREST)) > 127
        return m
    except OSError:
        return None


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape == tuple(hw):
        return m
    from PIL import Image

    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.NEAREST)) > 127


def _thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale so that the longest side is ``size`` px (up or down): every overlay in the page
    then has the same contour width and small images are not blurred by the browser."""
    h, w = rgb.shape[:2]
    if max(h, w) == size:
        return rgb
    from PIL import Image

    s = size / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS))


def _defect_type(result: Any, i: int, path: Path) -> str:
    types = getattr(result, "defect_types", None)
    if types is not None and i < len(types):
        return str(types[i])
    return path.parent.name


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1120px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta,.muted{color:#666}.note{background:#fff6d6;border-left:4px solid #e0b000;padding:8px 12px}
table{border-collapse:collapse;margin:10px 0 14px}th,td{padding:4px 12px;border-bottom:1px solid #eee;text-align:left}
table.metrics th{font-weight:600;color:#444}table.metrics td{text-align:right;font-variant-numeric:tabular-nums}
table.types td:nth-child(n+2){text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0}figure.chart figcaption{text-align:center;color:#444;margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px}
figure.ov img{width:100%;height:auto;border:1px solid #ccc;border-radius:3px}
figure.ov figcaption{font-size:.85em;color:#444;margin-top:3px;overflow-wrap:anywhere}
svg .tk{font-size:11px;fill:#555}svg .ax{font-size:12px;fill:#333}svg .lg{font-size:11px;fill:#333}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{css}</style></head>
<body>
{body}
</body></html>
"""
