#!/usr/bin/env python
"""PatchCore with the compact search (``search_compute``) against the float32 search, on the
real categories at the current defaults: metrics, top-1 disagreement and scoring time.

    python tools/compact_patchcore.py --data ../shared/data/mvtec_ad/bottle \
        --data ../shared/data/magnetic_tile --config float32 --config int8:4 --config int8:8 \
        --config int8:16 --config bfloat16:8 --json /tmp/compact_patchcore.jsonl

Per category: features from tools/study.py's cache (EfficientNet-Lite0 taps stage2+3+5,
short side 320, exposure gain: the study's defaults, the same as
``python tools/study.py --short 320 --taps stage2,stage3,stage5 --eval own --method patchcore``),
the default PatchCore fitted once on all training images (seed 0), then per configuration the
same bank loaded with ``search_compute`` / ``search_rerank`` (``PatchCore.from_state``):

- image AUROC, pixel AUROC, PRO with maps at each image's own size (the study's ``--eval own``);
- over every test patch: how many top-1 bank indices and how many patch distances differ from
  the float32 search (the distances are bit-identical wherever the index agrees);
- scoring time per image: ``score`` on one image at a time (1 x D x h x w, what the Detector
  does per frame), ``--images`` test images, ``--rounds`` rounds in which every configuration
  runs once in turn (so load changes hit all of them alike); median ms per image and the ratio
  to float32 of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402


def parse(spec: str) -> tuple[str, int]:
    compute, _, rerank = spec.partition(":")
    return compute, int(rerank) if rerank else 8


def run_category(cat: Path, configs, args) -> list[dict]:
    from npad_edge import metrics
    from npad_edge.methods import PatchCore, get_method

    taps = args.taps.split(",")
    train, test, _, labels, hw, _ = study.load_cached(cat, "efficientnet_lite0", args.short, taps, args.cache,
                                                      exposure="gain")
    own = study.own_masks(cat)
    t0 = time.perf_counter()
    ref = get_method("patchcore").fit(np.ascontiguousarray(train), seed=0)
    fit_s = time.perf_counter() - t0
    del train
    d = test.shape[1]
    q = np.ascontiguousarray(test.transpose(0, 2, 3, 1).reshape(-1, d))
    methods = {}
    for compute, rerank in configs:
        methods[(compute, rerank)] = PatchCore.from_state(
            dict(ref.settings, search_compute=compute, search_rerank=rerank), ref.state_arrays())
    base = methods.get(("float32", 8)) or ref
    d0, i0 = base._index.search(q, 1)

    # timing: one image per call, every configuration in turn per round
    n_img = min(args.images, test.shape[0])
    times: dict = {key: [] for key in methods}
    for key, m in methods.items():   # warm-up
        m.score(np.ascontiguousarray(test[:1]))
    for _ in range(args.rounds):
        for key, m in methods.items():
            t = time.perf_counter()
            for i in range(n_img):
                m.score(np.ascontiguousarray(test[i:i + 1]))
            times[key].append((time.perf_counter() - t) * 1000 / n_img)

    rows = []
    f32_ms = float(np.median(times[("float32", 8)])) if ("float32", 8) in times else None
    for (compute, rerank), m in methods.items():
        dist, idx = m._index.search(q, 1)
        patches, images = [], []
        for s in range(0, test.shape[0], 16):
            p, im = m.score(np.ascontiguousarray(test[s:s + 16]))
            patches.append(p)
            images.append(im)
        patch, image = np.concatenate(patches), np.concatenate(images)
        pm = metrics.pixel_metrics(own, study.maps_at_own_size(patch, hw, own, "resize", 4.0))
        ms = float(np.median(times[(compute, rerank)]))
        r = {"category": cat.name, "hw": list(hw), "compute": compute, "rerank": rerank if compute != "float32" else 0,
             "image_auroc": 100 * metrics.image_auroc(labels, image), "pixel_auroc": 100 * pm["pixel_auroc"],
             "pro": 100 * pm["pro"], "queries": int(q.shape[0]), "bank": int(ref.bank.shape[0]),
             "top1_differ": int((idx[:, 0] != i0[:, 0]).sum()), "dist_differ": int((dist[:, 0] != d0[:, 0]).sum()),
             "score_ms": ms, "score_ms_rounds": times[(compute, rerank)],
             "vs_float32": (f32_ms / ms) if f32_ms else None, "fit_s": fit_s, "images_timed": n_img,
             "threads": m._index._threads}
        rows.append(r)
        print(f"| {cat.name} {hw[0]}x{hw[1]} | {compute} | {r['rerank']} | {r['image_auroc']:.2f} | "
              f"{r['pixel_auroc']:.2f} | {r['pro']:.2f} | {r['top1_differ']} / {r['queries']} | "
              f"{r['dist_differ']} | {ms:.1f} | {r['vs_float32'] or 0:.2f}x |", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", required=True, help="category roots")
    ap.add_argument("--config", action="append", default=[], help="compute[:rerank], e.g. float32, int8:8")
    ap.add_argument("--cache", type=Path, default=study.DEFAULT_CACHE)
    ap.add_argument("--short", type=int, default=320)
    ap.add_argument("--taps", default="stage2,stage3,stage5")
    ap.add_argument("--images", type=int, default=16, help="test images timed per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_HOME", str(study.REPO.parent / "shared" / "weights" / "torch_hub"))
    configs = [parse(c) for c in (args.config or ["float32", "int8:8"])]
    configs = [(c, 8 if c == "float32" else r) for c, r in configs]
    if ("float32", 8) not in configs:
        configs.insert(0, ("float32", 8))
    from threadpoolctl import threadpool_limits

    print("| category | compute | k' | img AUROC | pix AUROC | PRO | top-1 differ / patches | distances differ "
          "| score ms / image | vs float32 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with threadpool_limits(2):
        for cat in args.data:
            for r in run_category(cat, configs, args):
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
