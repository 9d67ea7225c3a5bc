"""npad_edge.artifact: the saved model directory (write, read, verify, refuse tampering)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from npad_edge.artifact import (
    FORMAT,
    FORMAT_VERSION,
    Backbone,
    Manifest,
    Method,
    ModelExistsError,
    Preprocess,
    Threshold,
    describe,
    load_model,
    read_manifest,
    sha256_file,
    write_model,
)
from npad_edge.artifact import manifest as manifest_mod
from npad_edge.artifact import store
from npad_edge.errors import InvalidInputError, ModelFormatError, ModelVersionError

MODELS = Path(__file__).parent / "data" / "models"


def _manifest(**over) -> dict:
    m = {
        "kind": "fitted",
        "backbone": {"name": "resnet18", "taps": ["layer2", "layer3"]},
        "preprocess": {"image_size": [64, 48], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "method": {"name": "patchcore", "settings": {"k": 1}},
        "threshold": {"value": 1.25, "method": "quantile", "n_images": 10, "quantile": 0.99},
    }
    m.update(over)
    return m


def _arrays() -> dict:
    rng = np.random.default_rng(0)
    return {
        "memory_bank": rng.standard_normal((20, 6)).astype(np.float32),
        "mean": rng.standard_normal(6),  # float64
        "index": np.arange(5, dtype=np.int64),
    }


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path / "model", _manifest(), _arrays(), {"notes/readme.txt": b"hello"})


def _raw(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _put_raw(root: Path, data) -> None:
    text = data if isinstance(data, (str, bytes)) else json.dumps(data)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(root / "manifest.json", mode) as f:
        f.write(text)


def _rehash(root: Path, rel: str) -> None:
    """Make the manifest agree with the (modified) bytes of ``rel`` so deeper checks are reached."""
    d = _raw(root)
    d["files"][rel] = {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
    _put_raw(root, d)


def _siblings(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir())


# --------------------------------------------------------------------------- round trip


def test_round_trip(model):
    lm = load_model(model)
    for name, a in _arrays().items():
        np.testing.assert_array_equal(lm.arrays[name], a)
        assert lm.arrays[name].dtype == a.dtype
        assert lm.arrays[name].flags.c_contiguous
    m = lm.manifest
    assert (m.format, m.format_version, m.kind, m.precision) == (FORMAT, FORMAT_VERSION, "fitted", "fp32")
    assert m.backbone.name == "resnet18" and m.backbone.taps == ["layer2", "layer3"]
    assert m.preprocess.image_size == [64, 48] and m.preprocess.resize == "bilinear"
    assert m.threshold.value == 1.25 and m.threshold.quantile == 0.99
    assert m.versions["numpy"] == np.__version__ and "npad_edge" in m.versions
    assert m.arrays["memory_bank"].shape == [20, 6] and m.arrays["memory_bank"].dtype == "<f4"
    assert set(m.files) == {"arrays/memory_bank.npy", "arrays/mean.npy", "arrays/index.npy", "notes/readme.txt"}
    assert lm.file_path("notes/readme.txt").read_bytes() == b"hello"
    with pytest.raises(ModelFormatError, match="no file 'backbone.xml'"):
        lm.file_path("backbone.xml")
    assert read_manifest(model) == m
    assert Manifest.from_json(m.to_json()) == m


def test_typed_manifest_and_exported_files(tmp_path):
    xml = tmp_path / "src.xml"
    xml.write_text("<net/>")
    m = Manifest(
        kind="exported",
        backbone=Backbone(name="efficientnet_lite0", taps=["b3", "b5"], config={"feature_dim": 128}),
        preprocess=Preprocess(image_size=[256, 256], mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        method=Method(name="npad", settings={"sigma": 1.0}),
        threshold=Threshold(value=np.float32(3.5)),
        precision="int8",
        calibration={"n_images": 50, "preset": "performance"},
        versions={"openvino": "2024.4", "search_isa": "avx2"},
        extra={"line": "B7"},
    )
    root = write_model(tmp_path / "exp", m, {"bank": np.ones((3, 2), np.float32)},
                       {"backbone.xml": xml, "backbone.bin": b"\x00" * 100})
    lm = load_model(root)
    assert lm.manifest.kind == "exported" and lm.manifest.precision == "int8"
    assert lm.file_path("backbone.xml").read_text() == "<net/>"
    assert lm.manifest.files["backbone.bin"].bytes == 100
    assert lm.manifest.versions["openvino"] == "2024.4" and lm.manifest.versions["numpy"] == np.__version__
    assert lm.manifest.threshold.value == 3.5
    # An exported model without its IR is refused when written.
    with pytest.raises(ModelFormatError, match="backbone.xml"):
        write_model(tmp_path / "exp2", m, {"bank": np.ones(2)})


def test_fortran_and_non_contiguous_arrays_are_stored_c_contiguous(tmp_path):
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    b = np.arange(20, dtype=np.int32)[::3]
    lm = load_model(write_model(tmp_path / "m", _manifest(), {"a": a, "b": b}))
    np.testing.assert_array_equal(lm.arrays["a"], a)
    np.testing.assert_array_equal(lm.arrays["b"], b)
    assert lm.arrays["a"].flags.c_contiguous


def test_mmap_and_empty_arrays(tmp_path):
    arrays = {"bank": np.arange(10, dtype=np.float32), "empty": np.zeros((0, 4), np.float32),
              "scalar": np.array(3.0)}
    lm = load_model(write_model(tmp_path / "m", _manifest(), arrays), mmap=True)
    assert isinstance(lm.arrays["bank"], np.memmap) and not lm.arrays["bank"].flags.writeable
    for k, v in arrays.items():
        np.testing.assert_array_equal(lm.arrays[k], v)
        assert lm.arrays[k].shape == v.shape


def test_model_directory_is_readable_by_others(tmp_path):
    root = write_model(tmp_path / "m", _manifest(), _arrays())
    old = os.umask(0o022)
    os.umask(old)
    if old & 0o005 == 0 and sys.platform != "win32":
        assert root.stat().st_mode & 0o005 == 0o005  # not mkdtemp's 0700


def test_describe(model):
    text = describe(model)
    assert "resnet18" in text and "patchcore" in text and "memory_bank" in text
    assert "64x48" in text and "1.25" in text and f"v{FORMAT_VERSION}" in text


def test_read_manifest_does_not_read_arrays(model):
    for p in (model / "arrays").iterdir():
        p.unlink()
    assert read_manifest(model).arrays["memory_bank"].shape == [20, 6]
    with pytest.raises(ModelFormatError, match="missing"):
        load_model(model)


# --------------------------------------------------------------------------- frozen examples

FROZEN = {
    "v1_minimal": {
        "memory_bank": np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 16,
        "coreset_indices": np.arange(0, 64, 4, dtype=np.int64),
    },
    "v2_minimal": {
        "memory_bank": np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 16,
        "coreset_indices": np.arange(0, 64, 4, dtype=np.int64),
    },
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_frozen_examples_keep_loading(name):
    lm = load_model(MODELS / name)
    assert lm.manifest.format_version == FORMAT_VERSION  # migrated if older
    assert set(lm.arrays) == set(FROZEN[name])
    for k, v in FROZEN[name].items():
        np.testing.assert_array_equal(lm.arrays[k], v)
        assert lm.arrays[k].dtype == v.dtype
    assert describe(MODELS / name)


def test_frozen_v1_is_version_1_and_untouched():
    # Frozen: never regenerate. A changed hash means someone rewrote the example.
    assert _raw(MODELS / "v1_minimal")["format_version"] == 1
    assert sha256_file(MODELS / "v1_minimal" / "manifest.json") == "34b8a9e6ddf0fbf1f5f09f18b9f4d0eb04cca9663151d6daa257eea339375e37"


def test_frozen_v2_is_version_2_and_untouched():
    assert _raw(MODELS / "v2_minimal")["format_version"] == 2
    assert sha256_file(MODELS / "v2_minimal" / "manifest.json") == "652af470f81462a1e3325b461bc338708c5cb695f30c1fdb37e24f5f80999626"
    m = read_manifest(MODELS / "v2_minimal")
    assert m.preprocess.exposure == {"mode": "gain", "target": 107.75, "min_gain": 0.25, "max_gain": 4.0}
    assert m.backbone.config["exposure"] == m.preprocess.exposure


def test_v1_models_migrate_to_no_exposure_gain():
    # Version 2 added preprocess.exposure; a version 1 model applied no gain and still does.
    assert "exposure" not in _raw(MODELS / "v1_minimal")["preprocess"]
    m = read_manifest(MODELS / "v1_minimal")
    assert m.format_version == FORMAT_VERSION >= 2
    assert m.preprocess.exposure is None


def test_exposure_must_match_the_backbone_config(tmp_path):
    d = _raw(MODELS / "v2_minimal")
    d["preprocess"]["exposure"] = None            # the IR/config would still apply the gain
    with pytest.raises(ModelFormatError, match="exposure"):
        Manifest.from_dict(d)


def test_migration_registry_upgrades_older_versions(monkeypatch, tmp_path):
    # Pretend this npad_edge reads one version more, where extra.note was renamed extra.comment.
    newest = FORMAT_VERSION
    monkeypatch.setattr(manifest_mod, "FORMAT_VERSION", newest + 1)

    def step(d):
        d["extra"] = {"comment": d["extra"].pop("note")}
        return d

    monkeypatch.setitem(manifest_mod._MIGRATIONS, newest, step)
    for name in ("v1_minimal", f"v{newest}_minimal"):   # the whole chain, and the last step alone
        lm = load_model(MODELS / name)
        assert lm.manifest.format_version == newest + 1
        assert "comment" in lm.manifest.extra
    monkeypatch.delitem(manifest_mod._MIGRATIONS, newest)
    with pytest.raises(ModelVersionError, match="no migration"):
        read_manifest(MODELS / "v1_minimal")


# --------------------------------------------------------------------------- atomic writes


def test_existing_dest_refused_without_overwrite(model):
    before = (model / "manifest.json").read_bytes()
    with pytest.raises(ModelExistsError, match="overwrite") as ei:
        write_model(model, _manifest(), {"x": np.zeros(1)})
    assert isinstance(ei.value, FileExistsError) and isinstance(ei.value, ModelFormatError)
    assert (model / "manifest.json").read_bytes() == before
    assert _siblings(model.parent) == ["model"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_overwrite_replaces(model, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    write_model(model, _manifest(threshold={"value": 9.0}), {"x": np.ones(3)}, overwrite=True)
    lm = load_model(model)
    assert set(lm.arrays) == {"x"} and lm.manifest.threshold.value == 9.0
    assert not (model / "arrays" / "memory_bank.npy").exists()
    assert _siblings(model.parent) == ["model"]


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ModelExistsError, match="not an npad_edge model"):
        write_model(d, _manifest(), {"x": np.zeros(1)}, overwrite=True)
    assert (d / "keep.jpg").exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ModelExistsError):
        write_model(f, _manifest(), {"x": np.zeros(1)}, overwrite=True)


def _fail_on_second_file(monkeypatch, exc):
    real = store._file_entry
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) == 2:
            raise exc
        return real(path)

    monkeypatch.setattr(store, "_file_entry", flaky)


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_failure_midway_leaves_nothing(tmp_path, monkeypatch, exc):
    _fail_on_second_file(monkeypatch, exc)
    with pytest.raises(type(exc)):
        write_model(tmp_path / "model", _manifest(), _arrays())
    assert _siblings(tmp_path) == []


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_failure_midway_keeps_old_model(model, monkeypatch, exc):
    before = {p.name: p.read_bytes() for p in (model / "arrays").iterdir()}
    _fail_on_second_file(monkeypatch, exc)
    with pytest.raises(type(exc)):
        write_model(model, _manifest(), {"a": np.zeros(2), "b": np.ones(2)}, overwrite=True)
    assert _siblings(model.parent) == ["model"]
    assert {p.name: p.read_bytes() for p in (model / "arrays").iterdir()} == before
    load_model(model)


@pytest.mark.parametrize("exc", [OSError("EIO"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_interrupt_between_renames_restores_old_model(model, monkeypatch, exc):
    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    real = store._rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old moved aside, new about to move in
            raise exc
        real(src, dst)

    monkeypatch.setattr(store, "_rename", rename)
    with pytest.raises(type(exc)):
        write_model(model, _manifest(), {"x": np.zeros(2)}, overwrite=True)
    assert _siblings(model.parent) == ["model"]
    assert set(load_model(model).arrays) == set(_arrays())


def test_manifest_written_last(tmp_path, monkeypatch):
    order = []
    real_entry = store._file_entry
    monkeypatch.setattr(store, "_file_entry", lambda p: (order.append(p.name), real_entry(p))[1])
    real_install = store._install

    def install(tmp, dest, overwrite):
        order.append("manifest" if (tmp / "manifest.json").exists() else "NO MANIFEST")
        real_install(tmp, dest, overwrite)

    monkeypatch.setattr(store, "_install", install)
    write_model(tmp_path / "m", _manifest(), {"a": np.zeros(1)}, {"x.bin": b"1"})
    assert order == ["a.npy", "x.bin", "manifest"]


# --------------------------------------------------------------------------- bad inputs to write


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"bank": np.array([object()], dtype=object)}, "object"),
        ({"../bank": np.zeros(1)}, "identifier"),
        ({"con": np.zeros(1)}, "identifier"),
        ({"bank": [1, 2]}, "ndarray"),
        ({"Bank": np.zeros(1), "bank": np.zeros(1)}, "case"),
        ({"s": np.zeros(2, dtype=[("a", "f4")])}, "structured"),
    ],
)
def test_write_refuses_bad_arrays(tmp_path, arrays, match):
    with pytest.raises(InvalidInputError, match=match):
        write_model(tmp_path / "m", _manifest(), arrays)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("rel", ["../x", "/etc/x", "a/../../x", "arrays/x.npy", "manifest.json", "a\\b", "C:x", ""])
def test_write_refuses_bad_file_paths(tmp_path, rel):
    with pytest.raises(InvalidInputError):
        write_model(tmp_path / "m", _manifest(), {}, {rel: b"x"})
    assert _siblings(tmp_path) == []


def test_write_refuses_bad_manifest(tmp_path):
    with pytest.raises(ModelFormatError, match="threshold.value"):
        write_model(tmp_path / "m", _manifest(threshold={"value": "high"}), {})
    with pytest.raises(ModelFormatError, match="unknown key"):
        write_model(tmp_path / "m", _manifest(colour="red"), {})
    with pytest.raises(ModelFormatError, match="backbone"):
        write_model(tmp_path / "m", {k: v for k, v in _manifest().items() if k != "backbone"}, {})
    with pytest.raises(ModelFormatError, match="finite"):
        write_model(tmp_path / "m", _manifest(threshold={"value": float("nan")}), {})
    assert _siblings(tmp_path) == []


# --------------------------------------------------------------------------- not a model


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nope")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="is a file"):
        read_manifest(f)
    with pytest.raises(ModelFormatError, match=r"is not an npad_edge model directory \(no manifest.json\)"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- tampered files


def test_missing_file(model):
    (model / "arrays" / "mean.npy").unlink()
    with pytest.raises(ModelFormatError, match="arrays/mean.npy.*missing"):
        load_model(model)


def test_truncated_file(model):
    p = model / "arrays" / "memory_bank.npy"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(ModelFormatError, match="arrays/memory_bank.npy.*bytes"):
        load_model(model)
    with pytest.raises(ModelFormatError, match="memory_bank"):
        load_model(model, verify=False)  # sizes are checked even without hashing


def test_hash_mismatch(model):
    p = model / "notes" / "readme.txt"
    p.write_bytes(b"jello")
    with pytest.raises(ModelFormatError, match="notes/readme.txt.*sha256"):
        load_model(model)
    load_model(model, verify=False)


def test_swapped_array_files(tmp_path):
    arrays = {"a": np.zeros(8, np.float32), "b": np.ones(8, np.float32)}  # same size
    root = write_model(tmp_path / "m", _manifest(), arrays)
    pa, pb = root / "arrays" / "a.npy", root / "arrays" / "b.npy"
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    with pytest.raises(ModelFormatError, match="arrays/a.npy.*sha256"):
        load_model(root)


def test_swapped_files_with_rehashed_manifest(model):
    # Someone swapped two arrays and "fixed" the hashes: the header check catches the mismatch.
    pa, pb = model / "arrays" / "memory_bank.npy", model / "arrays" / "mean.npy"
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    _rehash(model, "arrays/memory_bank.npy")
    _rehash(model, "arrays/mean.npy")
    with pytest.raises(ModelFormatError, match="manifest says"):
        load_model(model)


def test_array_not_hashed(model):
    d = _raw(model)
    del d["files"]["arrays/mean.npy"]
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="not listed in 'files'"):
        load_model(model)


def _npy_with_header(header: str, data: bytes = b"") -> bytes:
    h = header.encode("latin1")
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def test_huge_shape_header_is_refused_without_allocation(model):
    rel = "arrays/memory_bank.npy"
    (model / rel).write_bytes(_npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000), }", b"\x00" * 64))
    _rehash(model, rel)
    d = _raw(model)
    d["arrays"]["memory_bank"]["shape"] = [1000000000000, 1000000]
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="needs .* data bytes"):
        load_model(model)
    with pytest.raises(ModelFormatError, match="needs .* data bytes"):
        load_model(model, mmap=True)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not an npy file at all", "magic"),
        (_npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\x00" * 16), "object"),
        (_npy_with_header("{'descr': '<f8', 'fortran_order': True, 'shape': (3,), }", b"\x00" * 24), "Fortran"),
        (_npy_with_header("__import__('os').system('true')"), "unreadable"),
        (_npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }"), "shape"),
    ],
)
def test_bad_npy_files(model, content, match):
    rel = "arrays/mean.npy"
    (model / rel).write_bytes(content)
    _rehash(model, rel)
    with pytest.raises(ModelFormatError, match=match):
        load_model(model)


def test_pickled_npy_refused(model):
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (model / "arrays" / "mean.npy").write_bytes(buf.getvalue())
    _rehash(model, "arrays/mean.npy")
    with pytest.raises(ModelFormatError, match="object"):
        load_model(model)


# --------------------------------------------------------------------------- bad manifests


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("format_version",), "1", "'format_version' must be an integer, found string"),
        (("format_version",), True, "'format_version' must be an integer, found bool"),
        (("created",), "yesterday", "'created' must be an ISO 8601"),
        (("created",), "2024-05-01T12:00:00+02:00", "UTC"),
        (("kind",), "trained", "'kind' must be one of"),
        (("precision",), 16, "'precision' must be a string"),
        (("versions",), {"numpy": 2}, "'versions.numpy' must be a string"),
        (("backbone", "taps"), "layer2", "'backbone.taps' must be a list"),
        (("preprocess", "image_size"), [256], r"'preprocess.image_size' must be \[height, width\]"),
        (("preprocess", "image_size"), [256, 0], "must be an integer >= 1"),
        (("preprocess", "std"), [0.2, 0.0, 0.2], "> 0"),
        (("threshold", "value"), "0.5", "'threshold.value' must be a number, found string"),
        (("threshold", "value"), None, "'threshold.value' must be a number, found null"),
        (("threshold", "quantile"), 1.5, r"in \[0.0, 1.0\]"),
        (("method",), [], "'method' must be an object, found list"),
        (("calibration",), 3, "'calibration' must be an object"),
        (("extra",), None, "'extra' must be an object"),
        (("files", "arrays/mean.npy", "bytes"), -1, ">= 0"),
        (("files", "arrays/mean.npy", "sha256"), "abc", "sha256"),
        (("arrays", "mean", "dtype"), "|O", "object"),
        (("arrays", "mean", "dtype"), "float64", "dtype string"),
        (("arrays", "mean", "shape"), [3.0], "must be an integer"),
    ],
)
def test_manifest_wrong_types(model, path, value, match):
    d = _raw(model)
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match=match):
        read_manifest(model)


@pytest.mark.parametrize("where", [(), ("backbone",), ("threshold",), ("files", "arrays/mean.npy")])
def test_manifest_unknown_keys(model, where):
    d = _raw(model)
    node = d
    for k in where:
        node = node[k]
    node["surprise"] = 1
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="unknown key.*'surprise'.*extra"):
        read_manifest(model)


@pytest.mark.parametrize("key", ["created", "threshold", "files", "extra", "calibration"])
def test_manifest_missing_keys(model, key):
    d = _raw(model)
    del d[key]
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match=key):
        read_manifest(model)


def test_newer_format_version(model):
    d = _raw(model)
    d["format_version"] = FORMAT_VERSION + 1
    d["something_new"] = {"x": 1}  # a newer version may have keys we do not know
    _put_raw(model, d)
    with pytest.raises(ModelVersionError, match=rf"format_version {FORMAT_VERSION + 1}.*<= {FORMAT_VERSION}.*upgrade"):
        load_model(model)


def test_unknown_old_format_version(model):
    d = _raw(model)
    d["format_version"] = 0
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="format_version"):
        read_manifest(model)


@pytest.mark.parametrize("fmt", ["onnx", None, 1])
def test_wrong_format_string(model, fmt):
    d = _raw(model)
    d["format"] = fmt
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="not an npad_edge model") as ei:
        read_manifest(model)
    assert not isinstance(ei.value, ModelVersionError)


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"format": NaN}', "NaN"),
        (b"\xff\xfe{}", "UTF-8"),
        ('{"format": "a", "format": "b"}', "duplicate"),
        pytest.param("[" * 100000 + "]" * 100000, "JSON|nested", id="deep-nesting"),
    ],
)
def test_invalid_json(model, text, match):
    _put_raw(model, text)
    with pytest.raises(ModelFormatError, match=match):
        read_manifest(model)


@pytest.mark.parametrize("bad", ["../outside.npy", "/etc/passwd", "arrays/../../outside.npy", "C:/x.npy"])
def test_paths_outside_refused(model, bad):
    (model.parent / "outside.npy").write_bytes((model / "arrays" / "mean.npy").read_bytes())
    d = _raw(model)
    d["files"][bad] = d["files"].pop("arrays/mean.npy")
    d["arrays"]["mean"]["file"] = bad
    _put_raw(model, d)
    with pytest.raises(ModelFormatError, match="inside the model directory|drive"):
        load_model(model)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_outside_refused(model):
    outside = model.parent / "outside.npy"
    (model / "arrays" / "mean.npy").rename(outside)
    (model / "arrays" / "mean.npy").symlink_to(outside)
    with pytest.raises(ModelFormatError, match="resolves outside"):
        load_model(model)
    # A symlinked directory leading out is refused the same way.
    (model / "arrays" / "mean.npy").unlink()
    os.rename(model / "arrays", model.parent / "arrays_out")
    (model.parent / "arrays_out" / "mean.npy").write_bytes(outside.read_bytes())
    (model / "arrays").symlink_to(model.parent / "arrays_out")
    with pytest.raises(ModelFormatError, match="resolves outside"):
        load_model(model)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_loop_and_symlinked_model_dir(model, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(model)  # camera software often points at the live model through a link
    assert set(load_model(link).arrays) == set(_arrays())
    p = model / "notes" / "readme.txt"
    p.unlink()
    p.symlink_to(p)
    with pytest.raises(ModelFormatError, match="readme.txt"):
        load_model(model)


@pytest.mark.skipif(sys.platform == "win32", reason="no fifos on Windows")
def test_non_regular_file_refused(model):
    p = model / "notes" / "readme.txt"
    p.unlink()
    os.mkfifo(p)  # opening it would block forever
    assert stat.S_ISFIFO(os.stat(p).st_mode)
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_model(model)


def test_dest_appearing_while_writing_is_not_replaced(tmp_path, monkeypatch):
    dest = tmp_path / "model"
    real = store._install

    def racing_install(tmp, d, overwrite):
        d.mkdir()  # another writer (or a person) created it meanwhile
        (d / "theirs.txt").write_text("keep")
        real(tmp, d, overwrite)

    monkeypatch.setattr(store, "_install", racing_install)
    with pytest.raises(ModelExistsError, match="overwrite"):
        write_model(dest, _manifest(), {"x": np.zeros(1)})
    assert _siblings(tmp_path) == ["model"] and _siblings(dest) == ["theirs.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs renameat2(RENAME_NOREPLACE)")
def test_empty_dest_appearing_while_writing_is_not_replaced(tmp_path, monkeypatch):
    dest = tmp_path / "model"
    monkeypatch.setattr(store.os.path, "lexists", lambda p: False)  # defeat the early checks
    dest.mkdir()
    with pytest.raises(ModelExistsError):
        write_model(dest, _manifest(), {"x": np.zeros(1)})
    assert _siblings(tmp_path) == ["model"] and _siblings(dest) == []


# --------------------------------------------------------------------------- verify what is loaded


class _SwapAfterHash:
    """Stands in for ``hashlib`` in ``store``: once a digest of ``rel``'s content is taken,
    the file on disk is replaced (same size, other bytes), as by someone racing the loader."""

    def __init__(self, root: Path, rel: str):
        self.path, self.original = root / rel, (root / rel).read_bytes()
        self.swapped = False

    def sha256(self, data=b""):
        import hashlib

        outer, h = self, hashlib.sha256(data)

        class _H:
            def update(self, b):
                h.update(b)

            def hexdigest(self):
                digest = h.hexdigest()
                if digest == hashlib.sha256(outer.original).hexdigest() and not outer.swapped:
                    outer.swapped = True
                    other = outer.path.with_name(outer.path.name + ".new")
                    raw = outer.original
                    # .npy: keep the header, change the data; other files: every byte.
                    keep = len(raw) - 8 if outer.path.suffix == ".npy" else 0
                    other.write_bytes(raw[:keep] + bytes(x ^ 0x5A for x in raw[keep:]))
                    os.replace(other, outer.path)
                return digest

        return _H()


@pytest.mark.parametrize("mmap", [False, True])
def test_loaded_arrays_are_the_hashed_bytes(model, monkeypatch, mmap):
    rel = "arrays/memory_bank.npy"
    swap = _SwapAfterHash(model, rel)
    monkeypatch.setattr(store, "hashlib", swap)
    lm = load_model(model, mmap=mmap)
    assert swap.swapped  # the file did change on disk after its digest was taken
    np.testing.assert_array_equal(lm.arrays["memory_bank"], _arrays()["memory_bank"])


def test_loaded_files_are_the_hashed_bytes(model, monkeypatch):
    swap = _SwapAfterHash(model, "notes/readme.txt")
    monkeypatch.setattr(store, "hashlib", swap)
    lm = load_model(model)
    assert swap.swapped and (model / "notes" / "readme.txt").read_bytes() != b"hello"
    assert lm.file_bytes("notes/readme.txt") == b"hello"
    with pytest.raises(ModelFormatError, match="array file"):
        lm.file_bytes("arrays/mean.npy")
    with pytest.raises(ModelFormatError, match="no file 'backbone.xml'"):
        lm.file_bytes("backbone.xml")


# --------------------------------------------------------------------------- frozen exported model

TINY = MODELS / "v1_exported_tiny"


def test_frozen_exported_v1_is_untouched():
    # Frozen: never regenerate (tests/tiny_models.py --frozen wrote it once). The manifest
    # hashes every other file, and load_model checks them.
    d = _raw(TINY)
    assert (d["format_version"], d["kind"], d["precision"]) == (1, "exported", "fp32")
    assert sha256_file(TINY / "manifest.json") == "3553c89868bb6f28431cecf816c9a5b5da6d3fcc3c376f7781da536457fbcabc"
    lm = load_model(TINY)
    assert set(lm.manifest.files) >= {"backbone.xml", "backbone.bin", "arrays/bank.npy"}
    assert sum(f.bytes for f in lm.manifest.files.values()) < 400_000  # stays a small fixture


def test_frozen_exported_v1_gives_its_stored_outputs():
    from npad_edge import Detector

    expected = np.load(MODELS / "v1_exported_tiny_expected.npz", allow_pickle=False)
    det = Detector.load(TINY, "CPU", threads=1)
    p = det(expected["image"])
    assert det.threshold == pytest.approx(float(expected["threshold"]))
    # OpenVINO f32 on another ISA or version rounds differently: close, not bit-equal.
    assert p.score == pytest.approx(float(expected["score"]), rel=1e-4)
    ref = expected["anomaly_map"]
    assert p.anomaly_map.shape == ref.shape == expected["image"].shape[:2]
    np.testing.assert_allclose(p.anomaly_map, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert p.is_anomalous == bool(p.score >= det.threshold)


def test_detector_runs_the_ir_bytes_it_verified(tmp_path, monkeypatch):
    # backbone.bin replaced (same size, other weights) right after it was hashed: the
    # Detector must compile the verified weights, not re-read the file.
    import shutil

    from npad_edge import Detector

    model = Path(shutil.copytree(TINY, tmp_path / "m"))
    expected = np.load(MODELS / "v1_exported_tiny_expected.npz", allow_pickle=False)
    swap = _SwapAfterHash(model, "backbone.bin")
    monkeypatch.setattr(store, "hashlib", swap)
    det = Detector.load(model, "CPU", threads=1)
    assert swap.swapped
    assert det(expected["image"]).score == pytest.approx(float(expected["score"]), rel=1e-4)
