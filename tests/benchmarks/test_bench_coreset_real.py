"""Greedy coreset on real backbone features against the numpy reference (reports only).

The isotropic benchmark in test_bench_search.py is the worst case for the coreset: there the
triangle-inequality bound never skips a distance. PatchCore runs the coreset on backbone
features, where it skips most of them. This module times PatchCore's whole default selection
on real features of both real categories (MVTec AD bottle, magnetic_tile):

* features: what ``fit_model`` feeds ``PatchCore.fit`` by default (EfficientNet-Lite0, taps
  stage2,stage3,stage5, short side 320 with the long side from the median aspect ratio of the
  category's training images, exposure gain to the median of the fit images, ``fit_model``'s
  default ``resize_on``), for the first
  ``NPAD_BENCH_CORESET_IMAGES`` (default 48) train/good images in sorted order, extracted
  once and cached under ``NPAD_BENCH_CORESET_CACHE`` (default /tmp/npad_bench_coreset_real);
* selection: ``PatchCore._fit``'s with the default settings (``PatchCore.bank_plan``: bank =
  min(round(0.1 N), 10 per grid cell) rows, pool 4x the bank; since N > the pool, first each
  image's own greedy k-centers with one thread, pooled, then the greedy on the pool with
  THREADS threads; projection to 128, 10 starts, seed 0). ``NPAD_BENCH_CORESET_SETTINGS``
  (e.g. ``coreset_max=10000,coreset_pool=40000``, the fixed plan of stops 17-24, under which
  the stop-24 figures of docs/search.md were measured) overrides settings;
* implementations, each timed over the whole selection (both stages, projection included):
  ``npad-f16`` (PatchCore's default ``coreset_storage="float16"``), ``npad`` (float32
  storage); ``numpy-gemv``: the documented algorithm in plain numpy with PatchCore's own
  distance formulation |a|^2 + |b|^2 - 2 a.b (one BLAS GEMV per step, float32), the baseline of
  test_bench_search.py; ``numpy-exact`` / ``numpy-exact-f16``: the same algorithm in plain
  numpy with every distance summed in the kernels' documented float32 order (so it has their
  bits), on the float32 / float16-rounded projected rows. Every numpy implementation gets its
  rows from ``_core.project`` with ``search.projection_matrix`` (inside the timed function,
  as npad projects inside its call), so the inputs are identical.

Indices: npad float32 must select exactly numpy-exact's rows, and npad float16 exactly
numpy-exact-f16's, index for index (asserted). numpy-gemv rounds differently (cancellation in
|a|^2 + |b|^2 - 2 a.b); its row records whether it matches npad and, if not, from which step
of the final stage (the greedy is a chain of argmaxes: one flipped near-tie changes the rest).
npad-f16 also checks that this replica of ``PatchCore._fit`` gives the bank
``PatchCore().fit`` stores.

Run (the first run extracts the features, about a minute per category):
    python -m pytest tests/benchmarks/test_bench_coreset_real.py -m benchmark --benchmark-json=coreset_real.json
    python tools/bench_table.py coreset_real.json

4-9 minutes on a 2-core VM, most of it the numpy rows (numpy-gemv 3 rounds, numpy-exact 1;
npad 3 after a warm-up). Never asserts a time. Everything at THREADS threads (numpy's BLAS via
threadpoolctl), as the other benchmarks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from npad_edge import _core, search

threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.benchmark

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NPAD_SHARED", REPO.parent / "shared")).resolve()
TORCH_HUB = SHARED / "weights" / "torch_hub"
CATEGORIES = {"bottle": SHARED / "data" / "mvtec_ad" / "bottle",
              "magnetic_tile": SHARED / "data" / "magnetic_tile"}
N_IMAGES = int(os.environ.get("NPAD_BENCH_CORESET_IMAGES", "48"))
PLAN_SETTINGS = {k: int(v) for k, v in (kv.split("=") for kv in
                                        os.environ.get("NPAD_BENCH_CORESET_SETTINGS", "").split(",") if kv)}
CACHE = Path(os.environ.get("NPAD_BENCH_CORESET_CACHE", "/tmp/npad_bench_coreset_real"))
# numpy-gemv is the baseline: 3 rounds, because on a shared VM its time moves by up to ~15x
# with the neighbours' cache traffic (its 20 MB matrix fits this L3 when they leave it alone);
# the numpy-exact rows are mainly the index check: 1 round.
GEMV_ROUNDS = int(os.environ.get("NPAD_BENCH_CORESET_GEMV_ROUNDS", "3"))
EXACT_ROUNDS = int(os.environ.get("NPAD_BENCH_CORESET_EXACT_ROUNDS", "1"))
NPAD_ROUNDS = int(os.environ.get("NPAD_BENCH_CORESET_NPAD_ROUNDS", "3"))

EXACT_CHUNK = 16_384   # rows per block of the exact numpy distances

IMPLS = ("npad-f16", "npad", "numpy-gemv", "numpy-exact", "numpy-exact-f16")
STORAGE = {"npad-f16": "float16", "npad": "float32", "numpy-gemv": "float32", "numpy-exact": "float32",
           "numpy-exact-f16": "float16"}
# The npad selection each numpy implementation is compared with (same rows).
NPAD_OF = {"numpy-gemv": "npad", "numpy-exact": "npad", "numpy-exact-f16": "npad-f16"}


from ._machine import machine_info  # noqa: E402  (re-exported for the other benchmark modules)


# ---- features --------------------------------------------------------------------------------

def real_features(category: str):
    """(features (n, D, h, w) float32, meta): PatchCore's default fit features of the first
    N_IMAGES train/good images of ``category``, cached."""
    root = CATEGORIES[category]
    if not (root / "train" / "good").is_dir():
        pytest.skip(f"real data not found at {root}")
    import inspect

    from npad_edge.pipeline import DEFAULT_BACKBONE, fit_model
    resize_on = inspect.signature(fit_model).parameters["resize_on"].default   # fit_model's default
    # the product's backbone; NPAD_BENCH_BACKBONE=efficientnet_lite0 gives the figures of stops 17-25
    backbone = os.environ.get("NPAD_BENCH_BACKBONE") or DEFAULT_BACKBONE
    d = CACHE / f"{category}_{N_IMAGES}img_{resize_on}_{backbone}"
    if not (d / "meta.json").exists():
        if not TORCH_HUB.is_dir():
            pytest.skip(f"shared torch hub cache not found at {TORCH_HUB}")
        os.environ.setdefault("TORCH_HOME", str(TORCH_HUB))
        pytest.importorskip("torch")
        import torch

        from npad_edge.backbones.features import check_exposure
        from npad_edge.data import geometry, load_dataset
        from npad_edge.pipeline import (DEFAULT_SHORT_SIDE, TorchBackend, _derive_input_geometry, _fit_reader,
                                        _split_holdout, exposure_target, extract_features)

        torch.set_num_threads(THREADS)
        paths = sorted(load_dataset(root).train)
        # Input size and exposure target as fit_model derives them for the whole category
        # (median aspect of every training image; exposure from its default fit images).
        size = geometry.parse_image_size(DEFAULT_SHORT_SIDE)
        be = TorchBackend.create(backbone, image_size=size, threads=THREADS, resize_on=resize_on)
        be, derivation = _derive_input_geometry(be, size, paths)
        read = _fit_reader(be, "resize", "mean")
        fit_idx, _ = _split_holdout(len(paths), 0.1, 0)
        target = exposure_target([paths[i] for i in fit_idx], seed=0, read=read)
        be.extractor.exposure = check_exposure({"mode": "gain", "target": target})
        subset = paths[:N_IMAGES]
        feats = extract_features(be, subset, 8, progress=False, read=read)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "features.npy", feats)
        meta = {"category": category, "images": [Path(p).name for p in subset], "input_size": list(be.input_size),
                "taps": list(be.extractor.backbone.taps), "backbone": backbone, "resize_on": resize_on,
                "exposure_target": float(target), "size_derivation": derivation,
                "shape": list(feats.shape)}
        (d / "meta.json").write_text(json.dumps(meta))
    meta = json.loads((d / "meta.json").read_text())
    return np.load(d / "features.npy"), meta


# ---- the selection, as PatchCore._fit makes it ------------------------------------------------

def patchcore_plan(feature_shape, **settings):
    """The default PatchCore's bank plan (``PatchCore.bank_plan``) for features (N, D, h, w);
    ``settings`` override the defaults (e.g. the fixed 10,000 / 40,000 of stops 17-24)."""
    from npad_edge.methods import get_method
    m = get_method("patchcore", **settings)
    n_select, pool = m.bank_plan(feature_shape[0], feature_shape[2:])
    s = m.settings
    return dict(n_select=n_select, pool=pool, proj_dim=s["coreset_proj_dim"], n_starts=s["coreset_starts"])


def two_stage(rows: np.ndarray, n_images: int, greedy, plan, seed: int = 0, image_workers: int = 1):
    """PatchCore._fit / _pool with ``greedy(rows, n_select, threads) -> indices``: returns
    (bank row indices into ``rows`` in selection order, per-stage seconds, per-stage info).
    ``image_workers`` > 1 runs the per-image first stage that many images at a time, one thread
    each, as PatchCore._pool does (npad); the numpy rows keep one image at a time with BLAS on
    THREADS threads."""
    times, infos = {}, {}
    ids = np.arange(rows.shape[0])
    t = time.perf_counter()
    if plan["pool"] is not None:
        per_image = rows.shape[0] // n_images
        take = min(per_image, -(-plan["pool"] // n_images))

        def own(i):
            part = rows[i * per_image:(i + 1) * per_image]
            if take >= per_image:
                return np.arange(per_image), 0
            idx, info = greedy(part, take, 1)
            return np.sort(np.asarray(idx)), int(np.sum(info.get("rows_computed", [0])))

        if image_workers > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(image_workers) as ex:
                parts = list(ex.map(own, range(n_images)))
        else:
            parts = [own(i) for i in range(n_images)]
        ids = np.concatenate([i * per_image + idx for i, (idx, _) in enumerate(parts)])
        computed = sum(c for _, c in parts)
        rows = np.ascontiguousarray(rows[ids])
        infos["pool"] = {"rows": int(rows.shape[0]), "take_per_image": int(take), "rows_computed": computed,
                         "ids": ids}
    times["pool"] = time.perf_counter() - t
    t = time.perf_counter()
    idx, info = greedy(rows, plan["n_select"], THREADS)
    times["final"] = time.perf_counter() - t
    infos["final"] = info
    return ids[np.asarray(idx)], times, infos


def npad_greedy(storage: str, plan, seed: int = 0):
    def run(rows, n, threads):
        idx, info = search.greedy_coreset(rows, n, proj_dim=plan["proj_dim"], n_starts=plan["n_starts"], seed=seed,
                                          threads=threads, storage=storage, return_info=True)
        if info.get("storage") != storage:
            raise AssertionError(f"ran with {info.get('storage')} storage, asked {storage}")
        return idx, info
    return run


def projected(rows: np.ndarray, storage: str, plan, threads: int, seed: int = 0) -> np.ndarray:
    """Y exactly as greedy_coreset holds it: the C++ projection (bit-identical on every ISA),
    rounded through float16 for float16 storage."""
    d = rows.shape[1]
    y = rows
    if plan["proj_dim"] is not None and plan["proj_dim"] < d:
        y = _core.project(rows, search.projection_matrix(d, plan["proj_dim"], seed), threads)
    if storage == "float16":
        y = y.astype(np.float16).astype(np.float32)
    return y


def numpy_select(y: np.ndarray, n_select: int, starts, exact: bool) -> list[int]:
    """The documented algorithm in plain numpy, float32, no pruning.

    exact=False: PatchCore's formulation ||a - b|| = sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0)), one
    BLAS GEMV per step (the fast numpy reference; it rounds differently from the kernels).
    exact=True: every squared distance summed in the documented order of l2sq_f32
    (csrc/kernels/kernels.h: t = a - b, lane j = sum of t_i * t_i over i = j mod 16 in
    increasing i, then lane j += lane j + h for h = 8, 4, 2, 1), so each distance has the
    kernels' float32 bits and the selection must be npad's, index for index."""
    n, pd = y.shape
    if exact:
        g = -(-pd // 16)
        yp = np.zeros((n, g * 16), np.float32)
        yp[:, :pd] = y
        yt = np.ascontiguousarray(yp.reshape(n, g, 16).transpose(1, 2, 0))   # (g, 16, n)
        buf = np.empty((16, min(n, EXACT_CHUNK)), np.float32)

        def dist(i):
            q = yt[:, :, i][:, :, None]
            out = np.empty(n, np.float32)
            for s in range(0, n, EXACT_CHUNK):
                e = min(n, s + EXACT_CHUNK)
                acc = yt[0, :, s:e] - q[0]
                acc *= acc
                t = buf[:, :e - s]
                for k in range(1, g):    # zero padding adds +0: the lanes past pd are unchanged
                    np.subtract(yt[k, :, s:e], q[k], out=t)
                    t *= t
                    acc += t
                a = acc[:8] + acc[8:]
                a = a[:4] + a[4:]
                a = a[:2] + a[2:]
                np.add(a[0], a[1], out=out[s:e])
            return np.sqrt(out, out=out)
    else:
        yn = np.einsum("ij,ij->i", y, y)

        def dist(i):
            g = y @ y[i]
            g *= -2
            g += yn
            g += yn[i]
            np.maximum(g, 0, out=g)
            return np.sqrt(g, out=g)

    score = np.zeros(n, np.float32)
    for s in starts:                      # summed in start order, then divided, in float32
        score += dist(int(s))
    score /= np.float32(len(starts))
    out = []
    for _ in range(n_select):
        sel = int(np.argmax(score))       # first maximum: ties to the lowest index
        out.append(sel)
        score[sel] = -np.inf
        np.minimum(score, dist(sel), out=score)
    return out


def numpy_greedy(storage: str, plan, exact: bool, seed: int = 0):
    def run(rows, n, threads):
        y = projected(rows, storage, plan, threads, seed)
        starts = search.coreset_start_indices(y.shape[0], plan["n_starts"], seed)
        return np.asarray(numpy_select(y, n, starts, exact), np.int64), {}
    return run


# ---- benchmark ---------------------------------------------------------------------------------

_cache: dict = {}


def setup(category: str):
    if _cache.get("key") != category:
        _cache.clear()
        feats, meta = real_features(category)
        from npad_edge.methods.base import to_rows
        rows = to_rows(feats)
        _cache.update(key=category, feats=feats, meta=meta, rows=rows, plan=patchcore_plan(feats.shape, **PLAN_SETTINGS),
                      results={})
    return _cache


def greedy_for(impl: str, plan):
    storage = STORAGE[impl]
    if impl.startswith("npad"):
        return npad_greedy(storage, plan)
    return numpy_greedy(storage, plan, exact=impl.startswith("numpy-exact"))


def image_workers(impl: str) -> int:
    """npad's first stage runs THREADS images at a time, as PatchCore._pool does."""
    return THREADS if impl.startswith("npad") else 1


def npad_result(c, impl: str):
    """npad's selection for ``impl`` from this run, or computed now (untimed) when the npad row
    was deselected."""
    if impl not in c["results"]:
        c["results"][impl] = two_stage(c["rows"], c["feats"].shape[0], greedy_for(impl, c["plan"]), c["plan"],
                                       image_workers=image_workers(impl))[0]
    return c["results"][impl]


def first_difference(a, b):
    """None if a == b, else the first selection step where they differ."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape == b.shape and np.array_equal(a, b):
        return None
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if diff.size else n


CASES = [(cat, impl) for cat in CATEGORIES for impl in IMPLS]


@pytest.mark.parametrize("category,impl", CASES, ids=[f"{c}-{i}" for c, i in CASES])
def test_coreset_real(benchmark, category, impl):
    """PatchCore's whole default coreset selection (both stages, projection included) on the
    real features of ``category``, one implementation per row."""
    c = setup(category)
    rows, plan, n_images = c["rows"], c["plan"], c["feats"].shape[0]
    storage = STORAGE[impl]
    greedy = greedy_for(impl, plan)
    benchmark.group = f"coreset real {category}"
    e = benchmark.extra_info
    e.update(machine_info(), kind="coreset_real", impl=impl, storage=storage, category=category,
             images=n_images, N=int(rows.shape[0]), D=int(rows.shape[1]), input_size=c["meta"]["input_size"],
             taps=c["meta"]["taps"], resize_on=c["meta"].get("resize_on"), n_select=plan["n_select"], pool=plan["pool"], proj_dim=plan["proj_dim"],
             loadavg_1min=os.getloadavg()[0])
    runs = []

    def run():
        with threadpoolctl.threadpool_limits(THREADS):
            out = two_stage(rows, n_images, greedy, plan, image_workers=image_workers(impl))
        runs.append(out)
        return out

    if impl.startswith("npad"):
        benchmark.pedantic(run, rounds=NPAD_ROUNDS, iterations=1, warmup_rounds=1)
        runs = runs[1:]     # the warm-up round is not in the statistics
    else:
        benchmark.pedantic(run, rounds=GEMV_ROUNDS if impl == "numpy-gemv" else EXACT_ROUNDS, iterations=1)
    idx, _, infos = runs[-1]
    assert all(np.array_equal(r[0], idx) for r in runs)
    e.update(pool_s=float(np.median([r[1]["pool"] for r in runs])),
             final_s=float(np.median([r[1]["final"] for r in runs])))
    if "pool" in infos:
        e.update(pool_rows=infos["pool"]["rows"], take_per_image=infos["pool"]["take_per_image"])
    c["results"][impl] = idx
    c.setdefault("pools", {})[impl] = infos.get("pool", {}).get("ids")

    if impl.startswith("npad"):
        # Share of the rows whose distance to the new point was computed (not skipped by the
        # triangle bound) per step, final stage: all steps, first and last eighth; pool stage.
        r = np.asarray(infos["final"]["rows_computed"][:-1], np.float64) / e.get("pool_rows", rows.shape[0])
        k = max(1, len(r) // 8)
        e.update(run_isa=infos["final"].get("isa"), bound_dims=infos["final"].get("bound_dims"),
                 rows_computed_all=float(r.mean()),
                 rows_computed_first8=float(r[:k].mean()), rows_computed_last8=float(r[-k:].mean()))
        if "pool" in infos:
            per_image = rows.shape[0] // n_images
            e["pool_rows_computed"] = (infos["pool"]["rows_computed"]
                                       / (n_images * per_image * (infos["pool"]["take_per_image"] - 1)))
        if impl == "npad-f16":
            # This replica of PatchCore._fit must store the bank PatchCore's own fit stores.
            from npad_edge.methods.patchcore import PatchCore
            m = PatchCore().fit(c["feats"], seed=0)
            assert np.array_equal(m.bank, rows[np.sort(idx)])
            e["equals_patchcore_fit_bank"] = True
        return

    diff = first_difference(npad_result(c, NPAD_OF[impl]), idx)
    e["same_indices_as_npad"] = diff is None
    e["first_difference_step"] = diff     # in the final stage's selection order
    pools = c.get("pools", {})
    if pools.get(impl) is not None and pools.get(NPAD_OF[impl]) is not None:
        e["same_pool_as_npad"] = bool(np.array_equal(pools[impl], pools[NPAD_OF[impl]]))
    if impl.startswith("numpy-exact"):
        # Same rows, same float32 distances bit for bit: npad must select exactly these.
        assert diff is None, f"{NPAD_OF[impl]} differs from {impl} from selection step {diff} on"
