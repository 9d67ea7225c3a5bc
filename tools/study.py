#!/usr/bin/env python
"""Lever study on cached features of every real category (bottle + magnetic_tile by default).

Features are extracted once per (category, backbone, input size, taps, aspect rule) and cached
under ``--cache`` (default /tmp/npad_study); every method configuration reuses them. The input
size follows the product's rule (``npad_edge.data.geometry``-style): short side ``--short``, long
side from the median aspect ratio of the category's training images, rounded to a multiple of
32. Metrics: image AUROC, pixel AUROC, AU-PRO (0.3) with maps and masks at the model input size
(masks resized with nearest neighbour; maps from ``postprocess.anomaly_maps`` as the runtime
makes them). Methods are fitted on all training images (no hold-out).

    python tools/study.py --short 256 --method patchcore --config 'coreset=0.1,coreset_max=16384'
    python tools/study.py --short 256 --taps stage2,stage3,stage5 --method npad --config ''

Every row prints per category plus the mean over categories, image AUROC with its 95 % DeLong
interval; ``--json`` appends one line per (category, configuration), with the per-image scores,
so that ``tools/auroc_compare.py`` can test two rows against each other (DeLong, paired).
Nothing here is tuned on one category: rows are read on the mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_CACHE = Path(os.environ.get("NPAD_STUDY_CACHE", "/tmp/npad_study"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate_npad import parse_config  # noqa: E402


def categories(root: Path = SHARED) -> list[Path]:
    """Every MVTec-layout category under ``root`` (folders with train/good), sorted by name."""
    out = [p.parent.parent for p in root.glob("**/train/good")]
    return sorted(out, key=lambda p: p.name)


def default_backbone() -> str:
    """The product's default backbone (rows before stop 26 were EfficientNet-Lite0: pass it)."""
    from npad_edge.pipeline import DEFAULT_BACKBONE
    return DEFAULT_BACKBONE


def derive_size(train_paths, short: int, multiple: int = 32, orient: str = "keep") -> tuple[int, int]:
    from PIL import Image
    ar = []
    for p in train_paths:
        with Image.open(p) as im:
            w, h = im.size
        ar.append(h / w)
    a = float(np.median(ar))
    if orient == "auto":   # canonical orientation: the long-side ratio, the majority's orientation
        r = float(np.median([max(v, 1 / v) for v in ar]))
        portrait = sum(v > 1 for v in ar) >= sum(v < 1 for v in ar)
        a = r if portrait else 1 / r
    if a >= 1:
        return (max(multiple, int(round(short * a / multiple)) * multiple), short)
    return (short, max(multiple, int(round(short / a / multiple)) * multiple))


def turn(shape, hw) -> bool:
    """orient=auto: an image is turned a quarter when its orientation disagrees with the model's."""
    h, w = shape[:2]
    return h != w and hw[0] != hw[1] and ((h > w) != (hw[0] > hw[1]))


def load_cached(cat: Path, backbone: str, short: int, taps, cache: Path, size=None, feature_dim=None,
                rule: str = "resize", orient: str = "keep", exposure: str = "gain", resize: str = "aa"):
    """(train (N,D,h,w) f32, test (M,D,h,w) f32, masks (M,H,W) bool, labels (M,), (H, W), extract s/img)."""
    from npad_edge.data import load_dataset, load_test_masks, read_image
    from npad_edge.postprocess import resize_mask

    ds = load_dataset(cat)
    hw = tuple(size) if size else derive_size(ds.train, short, orient=orient)
    tag = (f"{backbone}_{hw[0]}x{hw[1]}" + (("_" + "-".join(taps)) if taps else "") + (f"_d{feature_dim}" if feature_dim else "")
           + ("" if rule == "resize" else f"_{rule}") + ("" if orient == "keep" else f"_o{orient}") + ("" if exposure == "off" else f"_x{exposure}")
           + ("" if resize == "aa" else f"_r{resize}"))
    d = cache / cat.name / tag
    if not (d / "test.npy").exists():
        d.mkdir(parents=True, exist_ok=True)
        import torch
        torch.set_num_threads(2)
        from npad_edge.pipeline import TorchBackend, extract_features
        read = None
        if rule != "resize":
            from npad_edge.data.geometry import letterbox
            fill = rule.split("-")[1]
            read = lambda p: letterbox(read_image(p), hw, fill=fill)[0]  # noqa: E731
        if resize == "pil":   # issue 10 (c): PIL's BILINEAR (triangle, antialiased) on the host, uint8 out
            from PIL import Image
            base_r = read or read_image
            read = lambda p: np.ascontiguousarray(np.asarray(  # noqa: E731
                Image.fromarray(base_r(p)).resize((hw[1], hw[0]), Image.BILINEAR)))
        if resize == "aa-u8":   # control for "pil": torch's antialiased resize on the host, rounded to uint8
            import torch
            import torch.nn.functional as F
            base_r = read or read_image

            def read(p, base_r=base_r):
                x = torch.from_numpy(base_r(p)).permute(2, 0, 1)[None].float()
                y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
                return np.ascontiguousarray(y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
        if resize == "core":   # issue 10: the C++ core's antialiased resize on the host, float32 out
            from npad_edge.data.geometry import core_resize
            base_r = read or read_image
            read = lambda p, base_r=base_r: core_resize(base_r(p), hw)  # noqa: E731
        expo = None
        if exposure != "off":   # "gain": the training median, as fit_model; a number: that target
            from npad_edge.pipeline import exposure_target
            t = exposure_target(ds.train, read=read) if exposure == "gain" else float(exposure)
            expo = {"mode": "gain", "target": t}
        be = TorchBackend.create(backbone, image_size=hw, taps=taps, feature_dim=feature_dim, exposure=expo,
                                 resize_on="core" if resize == "core" else "graph")
        if resize == "bilinear":   # issue 10 (a): the in-graph resize without antialias
            from npad_edge.backbones import FeatureExtractor
            be = TorchBackend(FeatureExtractor(be.extractor.backbone, image_size=hw, feature_dim=feature_dim,
                                               antialias=False, exposure=expo), threads=None)
        if orient == "auto":
            base = read or read_image
            read = lambda p: (lambda im: np.ascontiguousarray(np.rot90(im)) if turn(im.shape, hw) else im)(base(p))  # noqa: E731
        t0 = time.perf_counter()
        tr = extract_features(be, ds.train, 8, progress=True, read=read)
        t_train = (time.perf_counter() - t0) / len(ds.train)
        te = extract_features(be, [s.path for s in ds.test], 8, progress=True, read=read)
        masks = np.stack([resize_mask((np.rot90(m) if orient == "auto" and turn(m.shape, hw) else m).astype(bool), hw)
                          for m in load_test_masks(ds)])
        np.save(d / "train.npy", tr)
        np.save(d / "test.npy", te)
        np.save(d / "masks.npy", masks)
        np.save(d / "labels.npy", ds.labels)
        (d / "meta.json").write_text(json.dumps({"config": be.config(), "extract_s_per_img": t_train}))
    meta = json.loads((d / "meta.json").read_text())
    return (np.load(d / "train.npy", mmap_mode="r"), np.load(d / "test.npy"), np.load(d / "masks.npy"),
            np.load(d / "labels.npy"), hw, meta["extract_s_per_img"])


_OWN: dict = {}


def own_masks(cat: Path):
    from npad_edge.data import load_dataset, load_test_masks
    if cat not in _OWN:
        _OWN[cat] = load_test_masks(load_dataset(cat))
    return _OWN[cat]


def maps_at_own_size(patch, hw, masks_own, rule: str, sigma: float, orient: str = "keep"):
    from npad_edge.postprocess import anomaly_maps
    out = []
    for p, m in zip(patch, masks_own):
        if orient == "auto" and turn(m.shape, hw):
            mt = np.rot90(m)
            out.append(np.ascontiguousarray(np.rot90(maps_at_own_size(p[None], hw, [mt], rule, sigma)[0], -1)))
        elif rule == "resize":
            out.append(anomaly_maps(p[None], hw, m.shape, sigma=sigma)[0])
        else:
            from npad_edge.data.geometry import letterbox_box
            place = letterbox_box(m.shape, hw)
            out.append(place.crop(anomaly_maps(p[None], hw, place.padded_hw, sigma=sigma)[0]))
    return out


def run_config(method: str, settings: dict, train, test, masks, labels, hw, seed: int = 0, sigma: float = 4.0,
               own=None, rule: str = "resize", orient: str = "keep") -> dict:
    from npad_edge import metrics
    from npad_edge.methods import get_method
    from npad_edge.postprocess import anomaly_maps

    m = get_method(method, **settings)
    tracemalloc.start()
    t0 = time.perf_counter()
    m.fit(np.ascontiguousarray(train), seed=seed)
    fit_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    patches, images = [], []
    for s in range(0, test.shape[0], 16):
        p, i = m.score(np.ascontiguousarray(test[s:s + 16]))
        patches.append(p)
        images.append(i)
    score_ms = (time.perf_counter() - t0) * 1000 / test.shape[0]
    patch, image = np.concatenate(patches), np.concatenate(images)
    if own is not None:
        pm = metrics.pixel_metrics(own, maps_at_own_size(patch, hw, own, rule, sigma, orient))
    else:
        maps = anomaly_maps(patch, hw, hw, sigma=sigma)
        pm = metrics.pixel_metrics(list(masks), list(maps))
    bank = getattr(m, "bank", None)
    if bank is None and m.settings.get("gaussian") is not None:
        # N-pad: the reading it used ("auto" resolves at fit time) in the bank column
        bank = m.settings["gaussian"]
    ci = metrics.image_auroc_ci(labels, image)
    return {"method": method, "settings": settings, "image_auroc": ci["auroc"],
            "image_auroc_ci95": [ci["lo"], ci["hi"]], "image_scores": [float(v) for v in image],
            "labels": [int(v) for v in labels],
            "pixel_auroc": pm["pixel_auroc"], "pro": pm["pro"], "fit_s": fit_s, "score_ms": score_ms,
            "fit_peak_mb": peak / 2**20, "state_mb": m.state_nbytes() / 2**20,
            "bank": bank if isinstance(bank, str) or bank is None else int(bank.shape[0])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", default=None, help="category roots (default: all in ../shared/data)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--backbone", default=None, help="default: the product's (npad_edge.pipeline.DEFAULT_BACKBONE)")
    ap.add_argument("--short", type=int, default=256, help="short side of the derived input size")
    ap.add_argument("--size", default=None, help="explicit HxW for every category (overrides --short)")
    ap.add_argument("--taps", default=None)
    ap.add_argument("--feature-dim", type=int, default=None)
    ap.add_argument("--method", default="npad")
    ap.add_argument("--config", action="append", default=[], help="settings k=v,k=v (repeatable)")
    ap.add_argument("--sigma", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--rule", default="resize", help="resize | letterbox-mean | letterbox-edge (npad_edge.data.geometry)")
    ap.add_argument("--orient", default="keep", help="keep | auto: turn images a quarter to the model's orientation")
    ap.add_argument("--exposure", default="gain", help="gain (default: to the training images' median mean intensity) | off | a fixed target, e.g. 114.5")
    ap.add_argument("--resize", default="aa", choices=("aa", "bilinear", "pil", "aa-u8", "core"),
                    help="input resize: aa (in-graph antialiased bilinear, the product) | bilinear (no antialias) | "
                         "pil (PIL BILINEAR on the host, uint8, then the graph at identity) | aa-u8 (torch's antialiased "
                         "resize on the host rounded to uint8: the rounding alone); issue 10")
    ap.add_argument("--eval", default="model", help="model: maps/masks at the model input size; own: at each image's size")
    args = ap.parse_args(argv)
    args.backbone = args.backbone or default_backbone()
    os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "weights" / "torch_hub"))
    from threadpoolctl import threadpool_limits
    taps = args.taps.split(",") if args.taps else None
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    cats = args.data or categories()
    configs = args.config or [""]
    with threadpool_limits(2):
        for c in configs:
            rows = []
            for cat in cats:
                train, test, masks, labels, hw, ex = load_cached(cat, args.backbone, args.short, taps, args.cache, size,
                                                                 args.feature_dim, args.rule, args.orient,
                                                                 args.exposure, args.resize)
                own = own_masks(cat) if args.eval == "own" else None
                r = run_config(args.method, parse_config(c), train, test, masks, labels, hw, args.seed, args.sigma,
                               own, args.rule, args.orient)
                r.update(category=cat.name, hw=list(hw), backbone=args.backbone, taps=taps, short=args.short,
                         extract_ms=1000 * ex, D=int(train.shape[1]), config=c, label=args.label, sigma=args.sigma,
                         rule=args.rule, eval=args.eval, orient=args.orient, exposure=args.exposure,
                         resize=args.resize)
                rows.append(r)
                print(f"| {args.label} {args.method} {c or 'defaults'} | {cat.name} {hw[0]}x{hw[1]} | "
                      f"{100 * r['image_auroc']:.2f} ({100 * r['image_auroc_ci95'][0]:.1f}-{100 * r['image_auroc_ci95'][1]:.1f}) | "
                      f"{100 * r['pixel_auroc']:.2f} | {100 * r['pro']:.2f} | "
                      f"fit {r['fit_s']:.1f} s | {r['score_ms']:.1f} ms | bank {r['bank']} |", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
            mean = {k: float(np.mean([r[k] for r in rows])) for k in ("image_auroc", "pixel_auroc", "pro")}
            print(f"| {args.label} {args.method} {c or 'defaults'} | MEAN | {100 * mean['image_auroc']:.2f} | "
                  f"{100 * mean['pixel_auroc']:.2f} | {100 * mean['pro']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
