"""Compact search (bfloat16 / int8 first pass) against the float32 search on real PatchCore
features: how often the top-1 differs for each re-rank depth k', and the effect of the pure
compact mode on the image AUROC of the test images used.

    python tools/compact_rerank.py --data ../shared/data/mvtec_ad/bottle \
        --data ../shared/data/magnetic_tile --train 40 --test-per-class 12

For each category: fits the default PatchCore (``npad_edge.fit_model``) on the first --train
good images, extracts the features of --test-per-class images of each test class (the same
backend the runtime uses), and searches the model's bank with FlatIndex(compute=...).
Prints one markdown table. Real images only; nothing here is tuned on the result.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from npad_edge.metrics import image_auroc

    return 100.0 * float(image_auroc(labels, scores))


def run_category(data: str, n_train: int, per_class: int, threads: int) -> list[dict]:
    from npad_edge import search
    from npad_edge.data import load_dataset
    from npad_edge.evaluation import FittedScorer
    from npad_edge.pipeline import extract_features, fit_model

    ds = load_dataset(data)
    train = [str(p) for p in ds.train[:n_train]]
    test, labels = [], []
    by_class: dict = {}
    for s in ds.test:
        by_class.setdefault(s.defect_type, []).append((str(s.path), s.label))
    for cls in sorted(by_class):
        for p, lab in by_class[cls][:per_class]:
            test.append(p)
            labels.append(int(lab))
    labels = np.asarray(labels)
    with tempfile.TemporaryDirectory() as tmp:
        out = fit_model(data, Path(tmp) / "m", train_paths=train, progress=False, threads=threads)
        sc = FittedScorer(out, threads=threads)
        feats = extract_features(sc.backend, test)
        bank = np.ascontiguousarray(sc.method.bank, dtype=np.float32)
    b, d, h, w = feats.shape
    q = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, d))
    ref = search.FlatIndex(bank, threads=threads)
    t0 = time.perf_counter()
    d_ref, i_ref = ref.search(q, 1)
    t_ref = time.perf_counter() - t0
    img_ref = np.sqrt(d_ref[:, 0]).reshape(b, -1).max(1)
    rows = []
    name = Path(data).name
    for compute in ("bfloat16", "int8"):
        for kp in (0, 1, 2, 4, 8, 16, 32):
            ix = search.FlatIndex(bank, compute=compute, rerank=kp, threads=threads)
            ix.search(q[:256], 1)
            t0 = time.perf_counter()
            dd, ii = ix.search(q, 1)
            t = time.perf_counter() - t0
            img = np.sqrt(dd[:, 0]).reshape(b, -1).max(1)
            rows.append(dict(category=name, bank=bank.shape[0], queries=q.shape[0], compute=compute, rerank=kp,
                             top1_differs=int((ii[:, 0] != i_ref[:, 0]).sum()),
                             dist_differs=int((dd[:, 0] != d_ref[:, 0]).sum()),
                             max_rel_dist_err=float(np.max(np.abs(dd[:, 0] - d_ref[:, 0]) / np.maximum(d_ref[:, 0], 1e-12))),
                             auroc=_auroc(img, labels), auroc_ref=_auroc(img_ref, labels),
                             speedup=t_ref / t))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--test-per-class", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from npad_edge import search

    with threadpool_limits(a.threads):
        rows = [r for d in a.data for r in run_category(d, a.train, a.test_per_class, a.threads)]
    print(f"isa={search.isa()} threads={a.threads}")
    print("| category | bank | queries | compute | k' | top-1 differs | distance differs | max rel. dist. error "
          "| image AUROC (subset) | fp32 AUROC (subset) | speed vs fp32 |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['category']} | {r['bank']} | {r['queries']} | {r['compute']} | {r['rerank']} | {r['top1_differs']} "
              f"| {r['dist_differs']} | {r['max_rel_dist_err']:.2e} | {r['auroc']:.2f} | {r['auroc_ref']:.2f} "
              f"| {r['speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
