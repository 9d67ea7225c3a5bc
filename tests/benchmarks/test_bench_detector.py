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
  normalisation included; for a model with ``resize.on`` "host" the host resize is timed with
  it, while ``predict`` counts it in the ``preprocess`` stage).
- ``test_async_throughput[int8]``: 32 images through ``predict_async`` (latency hint, 4
  requests in flight: on 2 cores the throughput hint's extra streams only add contention);
  time per batch of 32.
- ``test_end_to_end_search[float32|int8|bfloat16]`` (PatchCore models only): ``predict`` of
  the INT8 export with the method's search in that arithmetic (``search_compute``, k' = 8;
  the float32 one is the model as saved), the same images and Detector otherwise.

NPAD_BENCH_PRECISIONS=int8 (comma-separated) builds and times only those exports (the
search comparison needs only int8; ``torch`` is the fitted model itself). NPAD_BENCH_DATA=DIR
takes the images (2 of the first defect class, 2 good) and the INT8 calibration from another
MVTec-layout category (e.g. ../shared/data/magnetic_tile, with NPAD_BENCH_FITTED a model of it).

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
DATA = os.environ.get("NPAD_BENCH_DATA")      # another category root instead of bottle
PRECISIONS = tuple(p for p in os.environ.get("NPAD_BENCH_PRECISIONS", "torch,fp32,fp16,int8").split(",") if p)
SEARCH_COMPUTES = ("float32", "int8", "bfloat16")


def _images(folder: Path) -> list:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))


@pytest.fixture(scope="session")
def limit_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    """NPAD_BENCH_DATA (an MVTec-layout category root) or the real bottle data."""
    return Path(DATA) if DATA else request.getfixturevalue("bottle_dir")


@pytest.fixture(scope="session")
def bench_models(data_dir, limit_blas):
    """{"torch": fitted model, "fp32"/"fp16"/"int8": exported models}, built once."""
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    root = Path(tempfile.mkdtemp(prefix="npad_bench_"))
    if FITTED:
        fitted = Path(FITTED)
    else:
        train = _images(data_dir / "train" / "good")
        paths = train[:N_TRAIN] if N_TRAIN else None
        fitted = fit_model(data_dir, root / "fitted", train_paths=paths, progress=False, threads=THREADS)
    out = {"torch": fitted}
    for p in (p for p in ("fp32", "fp16", "int8") if p in PRECISIONS):
        out[p] = export_model(fitted, root / p, precision=p, progress=False,
                              calib=data_dir / "train" / "good" if p == "int8" else None)
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def images(data_dir):
    from npad_edge.data import read_image

    defect = sorted(d for d in (data_dir / "test").iterdir() if d.is_dir() and d.name != "good")[0]
    paths = _images(defect)[:2] + _images(data_dir / "test" / "good")[:2]   # bottle: broken_large
    return [read_image(p) for p in paths]


_detectors: dict = {}


def detector(models, precision, tag=None, **kw):
    from npad_edge import Detector

    key = (precision, tag, tuple(sorted(kw.items())))
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
    if getattr(det, "resize_on", "graph") == "host":
        # a model that resizes on the host (issue 10): its graph has no resize, so the host
        # resize is timed with it, to stay comparable with the in-graph resize of other models
        from npad_edge.data.geometry import host_resize

        def extract(b):
            return det.backbone.extract(host_resize(b[0], det.input_size)[None])
    else:
        extract = det.backbone.extract
    for b in batches:
        extract(b)
    nxt = _cycle(batches)
    benchmark.group = "backbone only (900x900 uint8 -> features)"
    _info(benchmark, det, precision)
    benchmark.pedantic(lambda: extract(nxt()), rounds=30, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("precision", ["int8"])
def test_async_throughput(benchmark, bench_models, images, precision):
    if precision not in bench_models:
        pytest.skip(f"{precision} not built (NPAD_BENCH_PRECISIONS)")
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


@pytest.mark.parametrize("compute", SEARCH_COMPUTES)
def test_end_to_end_search(benchmark, bench_models, images, compute):
    from npad_edge import search
    from npad_edge.runtime.detector import _bind_search_threads

    if "int8" not in bench_models:
        pytest.skip("needs the int8 export (NPAD_BENCH_PRECISIONS)")
    det = detector(bench_models, "int8", tag=f"search {compute}")   # one Detector per search arithmetic
    if det.method.name != "patchcore":
        pytest.skip("search_compute is a PatchCore setting")
    if det.method.settings["search_compute"] != compute:
        det.method = type(det.method).from_state(dict(det.method.settings, search_compute=compute),
                                                 det.method.state_arrays())
        _bind_search_threads(det.method, THREADS)
    for im in images:
        det(im)
    nxt = _cycle(images)
    benchmark.group = "detector end to end, int8 export, search arithmetic"
    _info(benchmark, det, "int8")
    benchmark.extra_info.update(search_compute=compute, search_rerank=det.method.settings["search_rerank"],
                                isa=search.isa())
    benchmark.pedantic(lambda: det(nxt()), rounds=30, iterations=1, warmup_rounds=2)
    stages = {k: [] for k in ("backbone", "search", "total")}
    for _ in range(10):
        t = det(nxt()).timings
        for k in stages:
            stages[k].append(t[k])
    benchmark.extra_info["stage_median_ms"] = {k: round(float(np.median(v)), 2) for k, v in stages.items()}


def summarize(path: str) -> str:
    """Markdown table (median ms; speed-ups against torch / FP32) from the benchmark JSON."""
    import json
    import statistics

    benches = json.load(open(path))["benchmarks"]
    search_rows = [b for b in benches if b["name"].startswith("test_end_to_end_search")]
    benches = [b for b in benches if not b["name"].startswith("test_end_to_end_search")]
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
    if len(out) == 2:   # only the search comparison ran
        out = []
    for b in benches:
        if b["name"].startswith("test_async_throughput"):
            t = statistics.median(b["stats"]["data"])
            out.append(f"\nasync {b['extra_info']['precision']}: {b['extra_info']['images_per_round'] / t:.1f} images/s "
                       f"({b['extra_info']['images_per_round']} images, 4 in flight)")
    if search_rows:
        f32 = next((1e3 * statistics.median(b["stats"]["data"]) for b in search_rows
                    if b["extra_info"]["search_compute"] == "float32"), None)
        out += ["" if out else None, "| int8 export, search_compute | end to end ms | vs float32 search | stages: backbone / search ms "
                "| total (same calls) |", "|---|---|---|---|---|"]
        for b in search_rows:
            e, ms = b["extra_info"], 1e3 * statistics.median(b["stats"]["data"])
            st = e.get("stage_median_ms", {})
            rr = "" if e["search_compute"] == "float32" else f", k'={e['search_rerank']}"
            out.append(f"| {e['search_compute']}{rr} | {ms:.1f} | {f32 / ms if f32 else float('nan'):.2f}x | "
                       f"{st.get('backbone', float('nan')):.1f} / {st.get('search', float('nan')):.1f} | "
                       f"{st.get('total', float('nan')):.1f} |")
    return "\n".join(line for line in out if line is not None)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1]))
