"""Detector latency per precision next to the torch eager path, in the same run (reports only).

Run (about 10 minutes on 2 cores, most of it the fit and the INT8 calibration):
    python -m pytest tests/benchmarks/test_bench_detector.py -m benchmark --benchmark-json=det.json
    python tests/benchmarks/test_bench_detector.py det.json     # markdown summary

What is timed (decoded real bottle test images, 900x900 RGB uint8, median over rounds):
- ``test_end_to_end[torch|fp32|fp16|int8]``: ``Detector.predict`` on a decoded image: resize,
  normalise, backbone, memory-bank search, anomaly map at full 900x900 size and mask. ``torch``
  is the same model before export (``kind="fitted"``: the FeatureExtractor in torch eager mode,
  the same search and post-processing).
- ``test_backbone[...]``: the backbone call alone (uint8 image in, feature map out, resize and
  normalisation included).
- ``test_async_throughput[int8]``: 32 images through ``predict_async`` (latency hint, 4
  requests in flight: on 2 cores the throughput hint's extra streams only add contention);
  time per batch of 32.

Everything runs at NPAD_BENCH_THREADS threads (default 2): OpenVINO INFERENCE_NUM_THREADS,
torch.set_num_threads, and the search (``Detector(threads=...)`` sets the thread count of
the method's search index; before that fix the index used every CPU of the affinity mask);
numpy's BLAS at 1 thread (threadpoolctl).

The summary's columns: ``end to end`` is the pedantic median of ``Detector.predict``; the
stage columns are medians of ``Prediction.timings`` over 10 further calls of the same
Detector in the same test. A synchronous ``predict`` runs its stages one after the other
(nothing overlaps), so the stage medians add up to about the ``total`` median (medians of
parts need not sum exactly to the median of the whole). ``backbone alone`` is a separate
benchmark (``test_backbone``, run after the end-to-end tests); on a busy machine it is not
comparable with the in-call ``backbone`` stage, so it is reported apart. The model is
fitted once per session with ``fit_model`` defaults on NPAD_BENCH_TRAIN bottle train images
(default: all 209; 10% coreset), so the search cost is the real one; NPAD_BENCH_FITTED=DIR
uses an already fitted model instead (e.g. the one tools/precision_table.py wrote).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark

# torch's OpenMP threads spin after each parallel region and take the cores from the search
# that follows in the torch path (2x slower here, more on a busy machine); passive waiting is
# fairer to the torch baseline. Only effective if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
N_TRAIN = int(os.environ.get("NPAD_BENCH_TRAIN", "0"))  # 0: all train images
FITTED = os.environ.get("NPAD_BENCH_FITTED")  # an already fitted bottle model: skips the fit
PRECISIONS = ("torch", "fp32", "fp16", "int8")


@pytest.fixture(scope="session")
def limit_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def bench_models(bottle_dir, limit_blas):
    """{"torch": fitted model, "fp32"/"fp16"/"int8": exported models}, built once."""
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    root = Path(tempfile.mkdtemp(prefix="npad_bench_"))
    if FITTED:
        fitted = Path(FITTED)
    else:
        train = sorted((bottle_dir / "train" / "good").glob("*.png"))
        paths = train[:N_TRAIN] if N_TRAIN else None
        fitted = fit_model(bottle_dir, root / "fitted", train_paths=paths, progress=False, threads=THREADS)
    out = {"torch": fitted}
    for p in ("fp32", "fp16", "int8"):
        out[p] = export_model(fitted, root / p, precision=p, progress=False,
                              calib=bottle_dir / "train" / "good" if p == "int8" else None)
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def images(bottle_dir):
    from npad_edge.data import read_image

    paths = sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[:2] + \
        sorted((bottle_dir / "test" / "good").glob("*.png"))[:2]
    return [read_image(p) for p in paths]


_detectors: dict = {}


def detector(models, precision, **kw):
    from npad_edge import Detector

    key = (precision, tuple(sorted(kw.items())))
    if key not in _detectors:
        _detectors[key] = Detector.load(models[precision], "CPU", threads=THREADS, **kw)
    return _detectors[key]


def _info(benchmark, det, precision):
    benchmark.extra_info.update(
        precision=precision, threads=THREADS, device="CPU", model_kind=det.kind, machine=platform.machine(),
        inference_precision=getattr(det.backbone, "inference_precision", "f32 (torch)"),
        input_size=list(det.input_size), bank=int(det.method.bank.shape[0]) if hasattr(det.method, "bank") else None,
    )


def _cycle(images):
    state = {"i": 0}

    def nxt():
        state["i"] += 1
        return images[state["i"] % len(images)]

    return nxt


@pytest.mark.parametrize("precision", PRECISIONS)
def test_end_to_end(benchmark, bench_models, images, precision):
    det = detector(bench_models, precision)
    for im in images:  # first call per input shape compiles kernels
        det(im)
    nxt = _cycle(images)
    benchmark.group = "detector end to end (900x900 decoded, map at full size)"
    _info(benchmark, det, precision)
    pred = benchmark.pedantic(lambda: det(nxt()), rounds=30, iterations=1, warmup_rounds=2)
    assert pred.anomaly_map.shape == images[0].shape[:2]
    stages = {k: [] for k in ("preprocess", "backbone", "search", "postprocess", "total")}
    for _ in range(10):
        t = det(nxt()).timings
        for k in stages:
            stages[k].append(t[k])
    benchmark.extra_info["stage_median_ms"] = {k: round(float(np.median(v)), 2) for k, v in stages.items()}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_backbone(benchmark, bench_models, images, precision):
    det = detector(bench_models, precision)
    batches = [im[None] for im in images]
    for b in batches:
        det.backbone.extract(b)
    nxt = _cycle(batches)
    benchmark.group = "backbone only (900x900 uint8 -> features)"
    _info(benchmark, det, precision)
    benchmark.pedantic(lambda: det.backbone.extract(nxt()), rounds=30, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("precision", ["int8"])
def test_async_throughput(benchmark, bench_models, images, precision):
    det = detector(bench_models, precision, num_requests=4)
    for im in images:
        det(im)
    batch = [images[i % len(images)] for i in range(32)]
    benchmark.group = "async throughput (32 images, 4 in flight)"
    _info(benchmark, det, precision)

    def run():
        return [f.result() for f in det.predict_async(batch)]

    preds = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert len(preds) == 32
    benchmark.extra_info["images_per_round"] = 32


def summarize(path: str) -> str:
    """Markdown table (median ms; speed-ups against torch / FP32) from the benchmark JSON."""
    import json
    import statistics

    benches = json.load(open(path))["benchmarks"]
    med = {(b["name"].split("[")[0], b["extra_info"]["precision"]): 1e3 * statistics.median(b["stats"]["data"])
           for b in benches}
    stages = {b["extra_info"]["precision"]: b["extra_info"].get("stage_median_ms", {}) for b in benches
              if b["name"].startswith("test_end_to_end")}
    parts = ("preprocess", "backbone", "search", "postprocess")
    out = ["| path | end to end ms | vs torch | stages: preprocess / backbone / search / postprocess ms "
           "| sum of stages | total (same calls) | backbone alone ms | backbone alone vs FP32 |",
           "|---|---|---|---|---|---|---|---|"]
    e2e_torch, bb_fp32 = med.get(("test_end_to_end", "torch")), med.get(("test_backbone", "fp32"))
    for p in PRECISIONS:
        e2e, bb = med.get(("test_end_to_end", p)), med.get(("test_backbone", p))
        if e2e is None and bb is None:
            continue
        st = stages.get(p, {})
        cells = [p, f"{e2e:.1f}" if e2e else "-", f"{e2e_torch / e2e:.2f}x" if e2e and e2e_torch else "-",
                 " / ".join(f"{st.get(k, float('nan')):.1f}" for k in parts),
                 f"{sum(st.get(k, float('nan')) for k in parts):.1f}", f"{st.get('total', float('nan')):.1f}",
                 f"{bb:.1f}" if bb else "-", f"{bb_fp32 / bb:.2f}x" if bb and bb_fp32 else "-"]
        out.append("| " + " | ".join(cells) + " |")
    for b in benches:
        if b["name"].startswith("test_async_throughput"):
            t = statistics.median(b["stats"]["data"])
            out.append(f"\nasync {b['extra_info']['precision']}: {b['extra_info']['images_per_round'] / t:.1f} images/s "
                       f"({b['extra_info']['images_per_round']} images, 4 in flight)")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1]))
