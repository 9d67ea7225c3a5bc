#!/usr/bin/env python
"""N-pad ablation on cached features of a real MVTec AD category (default: bottle).

Features are extracted once per backbone/input size/taps and cached as .npy (``--cache``,
default /tmp/npad_cache/<tag>/{train,test}.npy); every configuration below reuses them.
Metrics: image AUROC, pixel AUROC, AU-PRO (0.3), with anomaly maps and masks at the model input
size (masks resized with nearest neighbour), the maps made by ``postprocess.anomaly_maps``
(bilinear upsample + sigma-4 blur) exactly as the runtime does.

    python tools/ablate_npad.py --backbone efficientnet_lite0 --image-size 256 \
        --study all --out docs/ablation_bottle.md

``--study`` picks the table(s): window, centroids, dim, combine, precision, taps, all; or
``--config 'radius=1,n_centroids=1024'`` for single runs (``--method patchcore`` too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle"
DEFAULT_CACHE = Path(os.environ.get("NPAD_CACHE", "/tmp/npad_cache"))


# ----------------------------------------------------------------------------- data + cache
def _list_split(root: Path):
    """(train paths, test paths, test mask paths or None) in MVTec layout, sorted."""
    train = sorted((root / "train" / "good").glob("*.png"))
    test, masks = [], []
    for d in sorted((root / "test").iterdir()):
        for p in sorted(d.glob("*.png")):
            test.append(p)
            m = root / "ground_truth" / d.name / (p.stem + "_mask.png")
            masks.append(m if d.name != "good" else None)
    return train, test, masks


def _tag(backbone: str, size: int, taps: list[str] | None) -> str:
    return f"{backbone}_{size}" + (("_" + "-".join(taps)) if taps else "")


def load_cached(data: Path, backbone: str, size: int, taps: list[str] | None, cache: Path):
    """Cached (train (N,D,h,w), test (M,D,h,w), masks (M,size,size) bool, test paths, extract s)."""
    from PIL import Image

    d = cache / data.name / _tag(backbone, size, taps)
    train_p, test_p, mask_p = _list_split(data)
    if not (d / "test.npy").exists():
        d.mkdir(parents=True, exist_ok=True)
        import torch
        torch.set_num_threads(2)
        from npad_edge.pipeline import TorchBackend, extract_features
        be = TorchBackend.create(backbone, image_size=size, taps=taps)
        t0 = time.perf_counter()
        tr = extract_features(be, train_p, 8, progress=True)
        t_train = time.perf_counter() - t0
        te = extract_features(be, test_p, 8, progress=True)
        np.save(d / "train.npy", tr)
        np.save(d / "test.npy", te)
        (d / "meta.json").write_text(json.dumps({"config": be.config(), "train_extract_s": t_train,
                                                 "train": [str(p) for p in train_p],
                                                 "test": [str(p) for p in test_p]}))
    if not (d / f"masks_{size}.npy").exists():
        ms = []
        for p in mask_p:
            if p is None:
                ms.append(np.zeros((size, size), bool))
            else:
                im = Image.open(p).convert("L").resize((size, size), Image.NEAREST)
                ms.append(np.asarray(im) > 127)
        np.save(d / f"masks_{size}.npy", np.stack(ms))
    meta = json.loads((d / "meta.json").read_text())
    return (np.load(d / "train.npy"), np.load(d / "test.npy"), np.load(d / f"masks_{size}.npy"),
            test_p, meta.get("train_extract_s", meta.get("train_s")))


# ----------------------------------------------------------------------------- one run
def run_config(method: str, settings: dict, train: np.ndarray, test: np.ndarray, masks: np.ndarray,
               size: int, seed: int = 0) -> dict:
    """Fit on train features, score test features; metrics + fit time, peak traced memory, bytes."""
    from npad_edge import metrics
    from npad_edge.methods import get_method
    from npad_edge.postprocess import anomaly_maps

    m = get_method(method, **settings)
    tracemalloc.start()
    t0 = time.perf_counter()
    m.fit(train, seed=seed)
    fit_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    patch, image = m.score(test)
    score_ms = (time.perf_counter() - t0) * 1000 / test.shape[0]
    maps = anomaly_maps(patch, (size, size), (size, size), sigma=4.0)
    labels = masks.reshape(masks.shape[0], -1).any(axis=1)
    pm = metrics.pixel_metrics(masks, maps)
    return {"method": method, "settings": settings, "image_auroc": metrics.image_auroc(labels, image),
            "pixel_auroc": pm["pixel_auroc"], "pro": pm["pro"], "fit_s": fit_s, "score_ms": score_ms,
            "fit_peak_mb": peak / 2**20, "state_mb": m.state_nbytes() / 2**20}


def fmt_row(name: str, r: dict) -> str:
    return (f"| {name} | {100 * r['image_auroc']:.2f} | {100 * r['pixel_auroc']:.2f} | {100 * r['pro']:.2f} | "
            f"{r['fit_s']:.1f} | {r['score_ms']:.1f} | {r['fit_peak_mb']:.0f} | {r['state_mb']:.1f} |")


HEADER = ("| configuration | img AUROC | pix AUROC | PRO | fit s | score ms/img | fit peak MB | state MB |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


# ----------------------------------------------------------------------------- studies
def studies(base: dict) -> dict[str, list[tuple[str, str, dict]]]:
    """name -> [(row label, method, settings)], each a variation of ``base`` (the N-pad default)."""
    def v(**kw):
        s = dict(base)
        s.update(kw)
        return s
    return {
        "window": [(f"radius={r} ({2 * r + 1}x{2 * r + 1})", "npad", v(radius=r)) for r in (0, 1, 2, 3)],
        "centroids": [(f"n_centroids={k}", "npad", v(n_centroids=k)) for k in (64, 256, 1024, 4096)],
        "dim": [(f"feature_dim={d} {red}", "npad", v(feature_dim=d, reduction=red))
                for d, red in ((None, "pca"), (96, "pca"), (64, "pca"), (32, "pca"), (64, "random"))],
        "combine": [("mahalanobis only", "npad", v(combine="mahalanobis")),
                    ("euclidean only", "npad", v(combine="euclidean")),
                    ("max", "npad", v(combine="max"))]
                   + [(f"sum, weight={w}", "npad", v(combine="sum", weight=w)) for w in (0.25, 0.5, 0.75)]
                   + [("sum 0.5, per-position normalisation", "npad", v(normalize="position"))],
        "shrinkage": [(f"shrinkage={s}", "npad", v(shrinkage=s)) for s in (0.001, 0.01, 0.1, 0.3)],
        "precision": [(f"precision={p}", "npad", v(precision=p)) for p in ("float32", "float16")],
    }


def parse_config(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, _, val = part.partition("=")
        if val.strip() in ("None", "none"):
            out[k.strip()] = None
            continue
        try:
            out[k.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[k.strip()] = val.strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--taps", default=None, help="comma-separated tap names (default: the backbone's)")
    ap.add_argument("--study", default="all", help="comma-separated: " + ", ".join(studies({})) + ", all")
    ap.add_argument("--method", default="npad")
    ap.add_argument("--config", action="append", default=[], help="single settings, k=v,k=v (repeatable)")
    ap.add_argument("--base", default="", help="settings every study row starts from, k=v,k=v")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="append the markdown tables here")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per run here")
    args = ap.parse_args(argv)

    import torch  # noqa: F401  (only for feature extraction on a cache miss)
    torch.set_num_threads(2)
    taps = args.taps.split(",") if args.taps else None
    train, test, masks, _, _ = load_cached(args.data, args.backbone, args.image_size, taps, args.cache)
    head = f"{args.data.name}, {args.backbone}, {args.image_size}px, taps={taps or 'default'}, D={train.shape[1]}, grid {train.shape[2]}x{train.shape[3]}"
    from npad_edge.methods import get_method
    base = dict(get_method("npad").settings)
    base.update(parse_config(args.base))
    runs: list[tuple[str, list]] = []
    if args.config:
        runs.append(("single runs", [(c or "defaults", args.method, parse_config(c)) for c in args.config]))
    else:
        table = studies(base)
        names = list(table) if args.study == "all" else args.study.split(",")
        runs += [(n, table[n]) for n in names]
    lines = []
    for title, rows in runs:
        block = [f"\n#### {title} — {head}\n", HEADER]
        print("\n".join(block), flush=True)
        for label, method, settings in rows:
            r = run_config(method, settings, train, test, masks, args.image_size, args.seed)
            row = fmt_row(label, r)
            print(row, flush=True)
            block.append(row)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"study": title, "label": label, "head": head, **r}) + "\n")
        lines += block
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
