"""Score a list of image files with a loaded Detector and write the results (library logic of
``npad-edge predict`` and the demo): overlays, ``scores.csv``, ``scores.json``."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ._progress import progress_iter
from .errors import DataError

__all__ = ["IMAGE_SUFFIXES", "list_images", "predict_images", "write_scores"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: columns of ``scores.csv`` (and keys of each row of ``scores.json``'s ``images``)
SCORE_COLUMNS = ["path", "score", "is_anomalous", "threshold", "ms", "overlay", "error"]


def list_images(path: Path) -> list[Path]:
    """An image file, or every image under a folder (recursive, sorted, hidden parts skipped).

    Raises DataError when ``path`` does not exist or holds no image."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"images not found: {path} (pass an image file or a folder of images)")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {path}")
    return files


def predict_images(det: Any, files: Sequence[Path], root: Path, out: Path, *, overlays: bool = True,
                   skip_bad: bool = False, progress: bool = True,
                   meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Score ``files`` with a loaded Detector; write ``out/overlays/<path relative to root>.png``,
    ``out/scores.csv`` and ``out/scores.json``. Returns one row dict per image (keys
    ``SCORE_COLUMNS``; ``ms`` is the wall time of the Detector call, decode excluded).

    Overlay colours use one fixed range from the model threshold for every image
    (:func:`npad_edge.viz.map_range`), so overlays of different images can be compared.
    With ``skip_bad`` an unreadable image gets a row with ``error`` set instead of raising.
    """
    import numpy as np

    from .data import read_image
    from .errors import ImageDecodeError
    from .viz import map_range, overlay, resize_map, to_png_bytes

    threshold = float(det.threshold)
    vmin, vmax = map_range(threshold)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for path in progress_iter(files, total=len(files), desc="predict", enabled=progress):
        row: dict[str, Any] = {"path": str(path), "score": None, "is_anomalous": None, "threshold": threshold,
                               "ms": None, "overlay": None, "error": None}
        rows.append(row)
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            if not skip_bad:
                raise
            row["error"] = " ".join(str(exc).split()) or type(exc).__name__
            continue
        t0 = time.perf_counter()
        pred = det(image)
        row.update(score=float(pred.score), is_anomalous=bool(pred.is_anomalous),
                   ms=round(1000.0 * (time.perf_counter() - t0), 3))
        if overlays:
            amap = resize_map(pred.anomaly_map, image.shape[:2])
            mask = pred.mask if np.shape(pred.mask) == image.shape[:2] else amap >= threshold
            verdict = "ANOMALOUS" if pred.is_anomalous else "good"
            png = to_png_bytes(overlay(image, amap, mask, vmin=vmin, vmax=vmax,
                                       caption=f"{pred.score:.3g} / thr {threshold:.3g}  {verdict}"))
            try:
                rel = path.relative_to(root)
            except ValueError:
                rel = Path(path.name)
            target = (out / "overlays" / rel).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
            row["overlay"] = str(target)
    write_scores(out, rows, meta={**(meta or {}), "threshold": threshold, "colour_range": [vmin, vmax]})
    return rows


def write_scores(out: Path, rows: list[dict[str, Any]], *, meta: dict[str, Any]) -> None:
    """Write ``out/scores.csv`` (``SCORE_COLUMNS``) and ``out/scores.json`` (``meta`` plus
    ``images``: the rows), each atomically (temporary file, then rename)."""
    tmp = out / "scores.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=SCORE_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in SCORE_COLUMNS})
    os.replace(tmp, out / "scores.csv")
    tmp = out / "scores.json.tmp"
    tmp.write_text(json.dumps({**meta, "images": rows}, indent=2), encoding="utf-8")
    os.replace(tmp, out / "scores.json")
