"""Fuzz read_manifest / load_model: whatever is on disk, only ModelFormatError comes out, and
every mutation of hashed bytes that the manifest does not vouch for is rejected.

Bounded for the default suite (derandomized, ~200 examples per test, a few seconds). Set
NPAD_FUZZ=1 for random seeds and 10x the examples.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npad_edge.artifact import load_model, read_manifest, sha256_file, write_model
from npad_edge.errors import ModelFormatError

_DEEP = os.environ.get("NPAD_FUZZ") == "1"
FUZZ = settings(
    max_examples=2000 if _DEEP else 200,
    deadline=None,
    derandomize=not _DEEP,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["npad-edge-model", "fitted", "exported", "fp32", "<f4", "|O", "arrays/a.npy",
                     "../x", "/etc/passwd", "2024-01-01T00:00:00Z", "0" * 64]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    # Thousands of small file writes: on a RAM file system where there is one (10-100x faster).
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="npad-fuzz-", dir="/dev/shm"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def base_model(fuzz_dir) -> Path:
    root = fuzz_dir / "base"
    return write_model(
        root,
        {
            "kind": "fitted",
            "backbone": {"name": "resnet18", "taps": ["layer2"]},
            "preprocess": {"image_size": [8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
            "method": {"name": "patchcore", "settings": {"k": 1}},
            "threshold": {"value": 1.0},
        },
        {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(5, dtype=np.int64)},
        {"notes.txt": b"x"},
    )


def _check(root: Path):
    """Both entry points either succeed or raise ModelFormatError; anything else fails the test.
    Returns the LoadedModel when load_model accepted the directory, else None. Whatever it
    accepts must vouch for what is on disk: every listed file has the listed size and hash."""
    try:
        read_manifest(root)
    except ModelFormatError:
        pass
    try:
        lm = load_model(root)
    except ModelFormatError:
        return None
    for rel, entry in lm.manifest.files.items():
        assert (root / rel).stat().st_size == entry.bytes, rel
        assert sha256_file(root / rel) == entry.sha256, rel
    return lm


def _rejected(root: Path, **kw) -> bool:
    try:
        load_model(root, **kw)
    except ModelFormatError:
        return True
    return False


@pytest.fixture(scope="module")
def scratch(base_model, fuzz_dir):
    """A copy of the base model that each example resets (cheaper than a copy per example)."""
    root = fuzz_dir / "scratch"
    shutil.copytree(base_model, root)
    originals = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def reset(*rels: str) -> Path:
        # Examples overwrite manifest.json themselves; only other touched files need restoring
        # (file writes dominate the run time).
        for rel in rels:
            (root / rel).write_bytes(originals[rel])
        return root

    return reset


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(value=json_values)
def test_random_manifest_json(scratch, value):
    root = scratch()
    (root / "manifest.json").write_text(json.dumps(value))
    _check(root)


@FUZZ
@given(data=st.data())
def test_mutated_manifest(base_model, scratch, data):
    root = scratch()
    d = json.loads((base_model / "manifest.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        paths = list(_paths(d))
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["replace", "delete", "add"]), label="op")
        if not path:
            if op == "add":
                d[data.draw(st.text(max_size=8))] = data.draw(json_values)
            continue
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "replace":
            parent[key] = data.draw(json_values, label="value")
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict) or isinstance(parent[key], dict):
            target = parent[key] if isinstance(parent[key], dict) else parent
            target[data.draw(st.text(max_size=8), label="new key")] = data.draw(json_values)
    (root / "manifest.json").write_text(json.dumps(d))
    _check(root)


@FUZZ
@given(data=st.data())
def test_mutated_manifest_bytes(base_model, scratch, data):
    root = scratch()
    raw = bytearray((base_model / "manifest.json").read_bytes())
    if data.draw(st.booleans(), label="random bytes"):
        raw = bytearray(data.draw(st.binary(max_size=200)))
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            if not raw:
                break
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        raw = raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    (root / "manifest.json").write_bytes(bytes(raw))
    _check(root)


@FUZZ
@given(data=st.data())
def test_mutated_npy(base_model, scratch, data):
    root = scratch("manifest.json", "arrays/a.npy", "arrays/b.npy")
    rel = data.draw(st.sampled_from(["arrays/a.npy", "arrays/b.npy"]), label="file")
    raw = bytearray((root / rel).read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "header", "random"]), label="mutation")
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(raw) - 1))  # header or data
            raw[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "header":
        header = data.draw(st.sampled_from([
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (10**12, 10**9), }",
            "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': 1, 'shape': (3, 4), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, True), }",
            "{'descr': 'garbage', 'fortran_order': False, 'shape': (), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [3, 4], }",
            "{'descr': '<f4', 'fortran_order': False}",
            "(" * 500 + ")" * 500,
            "{1: 2}",
        ]) | st.text(max_size=80), label="header")
        h = header.encode("utf-8")[:60000]
        version = data.draw(st.sampled_from([1, 2, 3, 7]))
        size = len(h).to_bytes(2 if version == 1 else 4, "little")
        raw = bytearray(b"\x93NUMPY" + bytes([version, 0]) + size + h + data.draw(st.binary(max_size=64)))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    (root / rel).write_bytes(bytes(raw))
    changed = bytes(raw) != (base_model / rel).read_bytes()
    rehash = data.draw(st.booleans(), label="rehash")
    if rehash:
        # Make the manifest agree so the .npy parser itself is what gets fuzzed.
        d = json.loads((root / "manifest.json").read_text())
        d["files"][rel] = {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        if data.draw(st.booleans(), label="edit entry"):
            name = rel.split("/")[1][:-4]
            d["arrays"][name]["shape"] = data.draw(st.lists(st.integers(0, 2**40), max_size=3))
            d["arrays"][name]["dtype"] = data.draw(st.sampled_from(["<f4", "<i8", "<f8", "|u1", "<U3"]))
        (root / "manifest.json").write_text(json.dumps(d))
    for mmap in (False, True):
        if changed and not rehash:
            # Hashed bytes changed, manifest not updated: always refused, whatever the change.
            assert _rejected(root, mmap=mmap), (kind, mmap)
            continue
        try:
            lm = load_model(root, mmap=mmap)
        except ModelFormatError:
            continue
        # Accepted: the array is exactly what the (vouched-for) file holds.
        name = rel.split("/")[1][:-4]
        want = np.load(root / rel, allow_pickle=False)
        np.testing.assert_array_equal(np.asarray(lm.arrays[name]), want)
        assert lm.arrays[name].dtype == want.dtype


@FUZZ
@given(data=st.data())
def test_mutated_hashed_file(base_model, scratch, data):
    # A hashed non-array file (an IR in an exported model): any change is refused.
    rel = "notes.txt"
    root = scratch("manifest.json", rel, "arrays/a.npy", "arrays/b.npy")  # earlier tests leave them mutated
    raw = bytearray((root / rel).read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "random"]), label="mutation")
    if kind == "flip":
        raw[0] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[0]))
    elif kind == "truncate":
        raw = raw[:0]
    elif kind == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw = bytearray(data.draw(st.binary(max_size=64)))
    (root / rel).write_bytes(bytes(raw))
    changed = bytes(raw) != (base_model / rel).read_bytes()
    assert _rejected(root) == changed
    if changed:
        # Without hashing only the size is checked: a same-size change gets through, which is
        # exactly what verify=False means.
        assert _rejected(root, verify=False) == (len(raw) != 1)
