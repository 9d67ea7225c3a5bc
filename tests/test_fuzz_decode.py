"""Bounded fuzz of read_image: any bytes give a valid RGB array or ImageDecodeError, nothing else."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npad_edge.data import decode_image, read_image
from npad_edge.errors import ImageDecodeError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_PIXELS = 1_000_000  # mutated headers may declare big sizes; keep each example cheap


def _seed(fmt: str, mode: str = "RGB", **kw) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


SEEDS = [_seed("PNG"), _seed("PNG", "P"), _seed("PNG", "LA"), _seed("JPEG", quality=90), _seed("BMP")]
_TMP = Path(tempfile.mkdtemp(prefix="npad_fuzz_"))


@pytest.fixture(scope="module", autouse=True)
def _cleanup_tmp():
    yield
    shutil.rmtree(_TMP, ignore_errors=True)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif kind == "cut":
            data = data[:pos]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


def _check(fn):
    try:
        arr = fn()
    except ImageDecodeError:
        return
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] >= 1 and arr.shape[1] >= 1
    assert arr.flags.c_contiguous


@settings(max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated(), st.binary(max_size=256)))
def test_read_image_fuzz(data):
    path = _TMP / "fuzz.img"
    path.write_bytes(data)
    _check(lambda: read_image(path, max_pixels=MAX_PIXELS))


@settings(max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_decode_image_fuzz(data):
    _check(lambda: decode_image(data, max_pixels=MAX_PIXELS))


def test_seeds_decode():
    for s in SEEDS:
        assert decode_image(s).shape == (12, 16, 3)
