"""PatchCore with the compact search (settings ``search_compute`` / ``search_rerank``):
validation, scores equal to the float32 search where the re-rank candidates hold the true
nearest, a bound where they do not, the saved setting, and old models loading as float32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from npad_edge import search
from npad_edge.artifact import load_model, write_model
from npad_edge.errors import InvalidInputError
from npad_edge.methods import PatchCore, get_method, method_class

MODELS = Path(__file__).parent / "data" / "models"
COMPACT = ("int8", "bfloat16")


def _feats(n, d=48, h=8, w=8, rank=12, seed=0):
    """PatchCore-like features: a non-negative rank-``rank`` part plus noise, (n, d, h, w) float32."""
    rng = np.random.default_rng(seed)
    basis = np.abs(np.random.default_rng(99).standard_normal((rank, d)))
    coef = np.abs(rng.standard_normal((n * h * w, rank)))
    x = coef @ basis + 0.1 * rng.standard_normal((n * h * w, d))
    return np.ascontiguousarray(x.reshape(n, h, w, d).transpose(0, 3, 1, 2), dtype=np.float32)


@pytest.fixture(scope="module")
def data():
    return _feats(16, seed=0), _feats(4, seed=1)


def _fit(train, **settings):
    return get_method("patchcore", coreset=0.25, **settings).fit(train, seed=0)


def test_settings_validate():
    s = get_method("patchcore").settings
    assert (s["search_compute"], s["search_rerank"]) == ("auto", search.DEFAULT_RERANK)
    assert get_method("patchcore", search_compute="int8", search_rerank=4).settings["search_rerank"] == 4
    with pytest.raises(InvalidInputError, match="search_compute"):
        get_method("patchcore", search_compute="int4")
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(InvalidInputError, match="search_rerank"):
            get_method("patchcore", search_compute="int8", search_rerank=bad)
    with pytest.raises(InvalidInputError, match="index='flat'"):
        get_method("patchcore", search_compute="int8", index="hnsw")
    get_method("patchcore", search_compute="float32", index="hnsw")  # the exact scan is fine
    get_method("patchcore", index="hnsw")                            # "auto" is float32 there


@pytest.mark.parametrize("isa", search.available_isas()[:-1])   # scalar: minutes of int8 oracle
def test_auto_is_int8_where_the_kernel_set_has_it(data, isa):
    train, _ = data
    try:
        search.set_isa(isa)
        m = _fit(train)
        want = "int8" if isa in ("avx512_vnni", "avx512_bf16") else "float32"
        assert ("int8" in search.native_computes()) == (want == "int8")
        assert m.search_arithmetic == m._index.compute == want
        assert _fit(train, index="hnsw").search_arithmetic == "float32"
    finally:
        search.set_isa(None)


@pytest.mark.parametrize("compute", COMPACT)
@pytest.mark.parametrize("extra", [{}, {"bank_dtype": "float16"}, {"image_score": "reweighted"}])
def test_compact_scores_equal_float32(data, compute, extra):
    train, test = data
    ref = _fit(train, **extra)
    m = PatchCore.from_state(dict(ref.settings, search_compute=compute), ref.state_arrays())
    assert m._index.compute == compute and m._index.rerank == search.DEFAULT_RERANK
    # the premise: every query's float32 nearest is among the compact pass's k' candidates
    q = np.ascontiguousarray(test.transpose(0, 2, 3, 1).reshape(-1, test.shape[1]))
    nn = ref._index.search(q, 1)[1][:, 0]
    cand = search.FlatIndex(ref.bank, compute=compute, rerank=0).search(q, search.DEFAULT_RERANK)[1]
    assert (cand == nn[:, None]).any(axis=1).all()
    p0, i0 = ref.score(test)
    p1, i1 = m.score(test)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(i1, i0)
    if extra.get("image_score") == "reweighted":
        assert m._exact is not m._index and m._exact.compute == "float32"


@pytest.mark.parametrize("compute", COMPACT)
def test_too_few_candidates_never_score_below_float32(data, compute):
    # With k' = 1 some queries miss their true nearest: the re-ranked distance is then the exact
    # float32 distance to another bank vector, so never below the float32 score.
    train, test = data
    ref = _fit(train)
    m = PatchCore.from_state(dict(ref.settings, search_compute=compute, search_rerank=1), ref.state_arrays())
    p0, i0 = ref.score(test)
    p1, i1 = m.score(test)
    assert (p1 >= p0).all() and (i1 >= i0).all()
    assert (p1 > p0).any()   # the data does make k' = 1 miss (4-6 of 256 patches)


def test_setting_survives_save_and_load(data, tmp_path):
    train, test = data
    m = _fit(train, search_compute="int8", search_rerank=16)
    manifest = {
        "kind": "fitted",
        "backbone": {"name": "efficientnet_lite0", "taps": ["stage3"]},
        "preprocess": {"image_size": [64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "method": {"name": m.name, "settings": m.settings},
        "threshold": {"value": 1.0, "method": "quantile", "n_images": 4, "quantile": 1.0},
    }
    lm = load_model(write_model(tmp_path / "m", manifest, m.state_arrays()))
    assert lm.manifest.method.settings["search_compute"] == "int8"
    m2 = method_class("patchcore").from_state(lm.manifest.method.settings, lm.arrays)
    assert (m2._index.compute, m2._index.rerank) == ("int8", 16)
    for a, b in zip(m.score(test), m2.score(test)):
        np.testing.assert_array_equal(a, b)


def test_model_without_the_setting_loads_as_float32(data, tmp_path):
    # A model saved before search_compute existed was scored in float32, whatever the default
    # of new fits is. The frozen v1 model is one; its Detector searches in float32 (its stored
    # outputs are checked by tests/test_artifact.py).
    from npad_edge import Detector

    train, _ = data
    ref = _fit(train)
    old = {k: v for k, v in ref.settings.items() if k not in ("search_compute", "search_rerank")}
    assert PatchCore.from_state(old, ref.state_arrays()).search_arithmetic == "float32"

    tiny = MODELS / "v1_exported_tiny"
    assert "search_compute" not in json.loads((tiny / "manifest.json").read_text())["method"]["settings"]
    det = Detector.load(tiny, "CPU", threads=1)
    assert det.method.settings["search_compute"] == "float32"
    assert det.method._index.compute == "float32"


def test_detector_uses_the_compact_setting_and_its_threads(tmp_path):
    from npad_edge import Detector

    expected = np.load(MODELS / "v1_exported_tiny_expected.npz", allow_pickle=False)
    model = Path(shutil.copytree(MODELS / "v1_exported_tiny", tmp_path / "m"))
    raw = json.loads((model / "manifest.json").read_text())   # manifest.json itself is not hashed
    raw["method"]["settings"].update(search_compute="int8", search_rerank=8, image_score="reweighted")
    (model / "manifest.json").write_text(json.dumps(raw))
    ref_raw = dict(raw, method={"name": "patchcore", "settings": dict(raw["method"]["settings"], search_compute="float32")})
    ref_model = Path(shutil.copytree(MODELS / "v1_exported_tiny", tmp_path / "ref"))
    (ref_model / "manifest.json").write_text(json.dumps(ref_raw))
    det = Detector.load(model, "CPU", threads=1)
    ref = Detector.load(ref_model, "CPU", threads=1)
    assert det.method._index.compute == "int8"
    assert det.method._index._threads == 1 and det.method._exact._threads == 1
    p, r = det(expected["image"]), ref(expected["image"])
    assert p.score == r.score
    np.testing.assert_array_equal(p.anomaly_map, r.anomaly_map)
