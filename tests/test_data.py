"""npad_edge.data: decoding, validation and dataset discovery (real bottle data + broken layouts)."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npad_edge.data import (
    as_image_array,
    decode_image,
    image_size,
    load_dataset,
    load_test_masks,
    read_image,
    read_mask,
)
from npad_edge.errors import DataError, ImageDecodeError, InvalidInputError


# ----------------------------------------------------------------------------- helpers


def png_bytes(width: int, height: int, *, bit_depth=8, color_type=2, data: bytes | None = None) -> bytes:
    """A hand-made PNG (valid CRCs) whose header may declare any size; IDAT may be tiny."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if data is None:
        data = b"\x00" * 16
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def rgb(h=8, w=10, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def mask_img(h=8, w=10) -> Image.Image:
    m = np.zeros((h, w), np.uint8)
    m[2:4, 3:6] = 255
    return Image.fromarray(m)


# ----------------------------------------------------------------------------- read_image


def test_read_image_rgb_png_jpeg_bmp(tmp_path):
    arr = np.asarray(rgb())
    for ext in ("png", "bmp"):
        got = read_image(save(Image.fromarray(arr), tmp_path / f"a.{ext}"))
        np.testing.assert_array_equal(got, arr)
        assert got.dtype == np.uint8 and got.flags.c_contiguous and got.flags.writeable
    got = read_image(save(Image.fromarray(arr), tmp_path / "a.jpg", quality=95))
    assert got.shape == (8, 10, 3) and got.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "CMYK"])
def test_read_image_modes_become_rgb(tmp_path, mode):
    base = rgb()
    img = base.convert(mode)
    ext = "jpg" if mode == "CMYK" else "png"
    got = read_image(save(img, tmp_path / f"x.{ext}"))
    assert got.shape == (8, 10, 3) and got.dtype == np.uint8
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"))
        np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, axis=2))
    if mode == "RGBA":  # alpha dropped, colours kept as stored
        np.testing.assert_array_equal(got, np.asarray(base))


def test_read_image_palette_with_transparency(tmp_path):
    img = rgb().convert("P")
    img.info["transparency"] = 0
    got = read_image(save(img, tmp_path / "p.png", transparency=0))
    assert got.shape == (8, 10, 3)


def expect_decode_error(path, *fragments, **kw):
    with pytest.raises(ImageDecodeError) as ei:
        read_image(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_read_image_errors(tmp_path):
    expect_decode_error(tmp_path / "missing.png", "not found")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_decode_error(tmp_path / "empty.png", "empty")
    expect_decode_error(tmp_path, "not a regular file")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all" * 10)
    expect_decode_error(tmp_path / "junk.png")
    full = (save(rgb(64, 64), tmp_path / "ok.png")).read_bytes()
    (tmp_path / "trunc.png").write_bytes(full[: len(full) // 2])
    expect_decode_error(tmp_path / "trunc.png")
    jpg = save(rgb(64, 64), tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    expect_decode_error(tmp_path / "trunc.jpg")
    corrupt = bytearray(full)
    corrupt[60:80] = b"\xff" * 20  # inside IDAT: CRC / zlib failure
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    expect_decode_error(tmp_path / "corrupt.png")
    save(rgb(), tmp_path / "x.gif")
    expect_decode_error(tmp_path / "x.gif")  # GIF decoder is never tried
    with pytest.raises(ImageDecodeError):
        read_image(str(tmp_path / "nul\x00.png"))
    with pytest.raises(InvalidInputError):
        read_image(3)  # not a file descriptor


def test_read_image_unsupported_bit_depths(tmp_path):
    save(Image.fromarray(np.full((4, 4), 40000, np.uint16)), tmp_path / "g16.png")
    expect_decode_error(tmp_path / "g16.png", "mode")
    raw = b"".join(b"\x00" + b"\x12\x34" * 3 * 4 for _ in range(4))  # 4 x 4 RGB, 16 bit
    (tmp_path / "rgb16.png").write_bytes(png_bytes(4, 4, bit_depth=16, color_type=2, data=raw))
    expect_decode_error(tmp_path / "rgb16.png", "16-bit")


def test_read_image_huge_refused_from_header(tmp_path):
    # 20000 x 20000 declared, a few bytes of pixel data: must be refused before decoding.
    (tmp_path / "huge.png").write_bytes(png_bytes(20000, 20000))
    expect_decode_error(tmp_path / "huge.png", "too large")
    # Below Pillow's own bomb guard but above ours: our limit, from the header alone (a decode
    # would report truncation instead).
    (tmp_path / "big.png").write_bytes(png_bytes(9000, 9000))
    expect_decode_error(tmp_path / "big.png", "above the limit", "max_pixels")
    expect_decode_error(save(rgb(), tmp_path / "small.png"), "above the limit", max_pixels=79)
    assert read_image(tmp_path / "small.png", max_pixels=80).shape == (8, 10, 3)
    with pytest.raises(InvalidInputError):
        read_image(tmp_path / "small.png", max_pixels=0)


def test_read_image_zero_size(tmp_path):
    (tmp_path / "zero.png").write_bytes(png_bytes(0, 5))
    expect_decode_error(tmp_path / "zero.png")


def test_decode_image_and_image_size(tmp_path):
    p = save(rgb(5, 7), tmp_path / "a.png")
    np.testing.assert_array_equal(decode_image(p.read_bytes()), read_image(p))
    assert image_size(p) == (5, 7)
    with pytest.raises(ImageDecodeError, match="frame-1"):
        decode_image(b"garbage", name="frame-1")
    with pytest.raises(ImageDecodeError):
        decode_image(b"")


# ----------------------------------------------------------------------------- as_image_array


def test_as_image_array_accepts_valid_without_copy():
    a = np.zeros((4, 5, 3), np.uint8)
    assert as_image_array(a) is a
    one = np.zeros((1, 1, 3), np.uint8)  # decided: 1 x 1 is allowed
    assert as_image_array(one) is one


@pytest.mark.parametrize(
    "obj, fragment",
    [
        (np.zeros((4, 5, 3), np.float32), "float32"),
        (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 5, 3), np.int16), "int16"),
        (np.zeros((4, 5), np.uint8), "grayscale"),
        (np.zeros((4, 5, 4), np.uint8), "alpha"),
        (np.zeros((2, 4, 5, 3), np.uint8), "4-D"),
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((4, 10, 3), np.uint8)[:, ::2], "C-contiguous"),
        (np.zeros((4, 5, 3), np.uint8)[..., ::-1], "C-contiguous"),
        ([[[0, 0, 0]]], "numpy array"),
        (Image.new("RGB", (2, 2)), "PIL"),
    ],
)
def test_as_image_array_refuses(obj, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        as_image_array(obj)


def test_as_image_array_size_limit():
    with pytest.raises(InvalidInputError, match="limit"):
        as_image_array(np.zeros((10, 10, 3), np.uint8), max_pixels=99)


# ----------------------------------------------------------------------------- read_mask


def test_read_mask(tmp_path):
    p = save(mask_img(), tmp_path / "m.png")
    m = read_mask(p, (8, 10))
    assert m.dtype == np.bool_ and m.shape == (8, 10) and m.sum() == 6
    with pytest.raises(DataError) as ei:
        read_mask(p, (9, 10))
    assert str(p) in str(ei.value) and "8 x 10" in str(ei.value) and "9 x 10" in str(ei.value)
    low = np.zeros((3, 3), np.uint8)
    low[1, 1] = 1  # any nonzero value is a defect
    assert read_mask(save(Image.fromarray(low), tmp_path / "low.png")).sum() == 1
    col = np.zeros((3, 3, 3), np.uint8)
    col[0, 0, 2] = 7
    assert read_mask(save(Image.fromarray(col), tmp_path / "col.png")).tolist()[0][0] is True
    with pytest.raises(ImageDecodeError):
        read_mask(tmp_path / "nope.png")


# ----------------------------------------------------------------------------- real bottle data


def test_load_dataset_bottle(bottle_dir):
    ds = load_dataset(bottle_dir)
    assert ds.name == "bottle" and ds.layout == "mvtec" and ds.has_masks
    assert len(ds.train) == 209
    counts = Counter(s.defect_type for s in ds.test)
    assert counts == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert [s.defect_type for s in ds.test[:20]] == ["good"] * 20  # good first
    assert ds.train == sorted(ds.train)
    for s in ds.test:
        assert s.label == (s.defect_type != "good")
        if s.label:
            assert s.mask_path == bottle_dir / "ground_truth" / s.defect_type / f"{s.path.stem}_mask.png"
        else:
            assert s.mask_path is None
    assert ds.labels.sum() == 63 and ds.defect_types == ["broken_large", "broken_small", "contamination"]
    assert ds.skipped == []
    assert load_dataset(bottle_dir) == ds  # deterministic


def test_bottle_images_and_masks(bottle_dir):
    ds = load_dataset(bottle_dir, verify="none")
    img = read_image(ds.train[0])
    assert img.shape == (900, 900, 3) and img.dtype == np.uint8
    sample = next(s for s in ds.test if s.label == 1)
    m = read_mask(sample.mask_path, img.shape[:2])
    assert m.shape == (900, 900) and m.any()


# ----------------------------------------------------------------------------- layouts


def make_mvtec(root: Path, *, masks=True, types=("crack",), n=2) -> Path:
    for i in range(3):
        save(rgb(seed=i), root / "train" / "good" / f"{i:03d}.png")
    for i in range(n):
        save(rgb(seed=10 + i), root / "test" / "good" / f"{i:03d}.png")
    for t in types:
        for i in range(n):
            save(rgb(seed=20 + i), root / "test" / t / f"{i:03d}.png")
            if masks:
                save(mask_img(), root / "ground_truth" / t / f"{i:03d}_mask.png")
    return root


def test_tiny_mvtec_layout(tmp_path):
    ds = load_dataset(make_mvtec(tmp_path / "cat", types=("crack", "bent")))
    assert ds.name == "cat" and ds.layout == "mvtec" and ds.has_masks
    assert [(s.defect_type, s.path.name, s.label) for s in ds.test] == [
        ("good", "000.png", 0), ("good", "001.png", 0),
        ("bent", "000.png", 1), ("bent", "001.png", 1),
        ("crack", "000.png", 1), ("crack", "001.png", 1),
    ]
    masks = load_test_masks(ds)
    assert [m.sum() for m in masks] == [0, 0, 6, 6, 6, 6] and masks[0].shape == (8, 10)


def test_no_masks_is_normal(tmp_path):
    ds = load_dataset(make_mvtec(tmp_path / "c", masks=False))
    assert not ds.has_masks and all(s.mask_path is None for s in ds.test)
    assert load_test_masks(ds) is None


def test_plain_folder_layouts(tmp_path):
    for i in range(3):
        save(rgb(seed=i), tmp_path / "only" / f"img{i}.PNG")  # upper-case extension
    (tmp_path / "only" / ".DS_Store").write_bytes(b"\x00junk")
    (tmp_path / "only" / "._img0.PNG").write_bytes(b"\x00junk")  # macOS resource fork: ignored
    (tmp_path / "only" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "only")
    assert ds.layout == "folder" and [p.name for p in ds.train] == ["img0.PNG", "img1.PNG", "img2.PNG"]
    assert ds.test == [] and not ds.has_masks

    root = tmp_path / "goodroot"
    for i in range(2):
        save(rgb(seed=i), root / "good" / f"{i}.jpg")
        save(rgb(seed=i), root / "test" / "good" / f"{i}.jpg")
        save(rgb(seed=i), root / "test" / "scratch" / f"{i}.bmp")
    ds = load_dataset(root)
    assert ds.layout == "folder" and len(ds.train) == 2
    assert [s.label for s in ds.test] == [0, 0, 1, 1] and not ds.has_masks

    root = tmp_path / "trainroot"
    for i in range(2):
        save(rgb(seed=i), root / "train" / f"{i}.png")
    save(rgb(), root / "test" / "good" / "a.png")
    save(rgb(), root / "test" / "dent" / "a.png")
    save(mask_img(), root / "ground_truth" / "dent" / "a.png")  # <stem>.png also accepted
    ds = load_dataset(root)
    assert ds.layout == "folder" and ds.has_masks and ds.test[1].mask_path.name == "a.png"


def test_extensions_configurable(tmp_path):
    save(rgb(), tmp_path / "r" / "a.png")
    save(rgb(), tmp_path / "r" / "b.jpg")
    assert [p.name for p in load_dataset(tmp_path / "r", extensions=(".jpg",)).train] == ["b.jpg"]
    with pytest.raises(InvalidInputError):
        load_dataset(tmp_path / "r", extensions=("png",))


def test_structural_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no training images"):
        load_dataset(tmp_path / "empty")
    root = tmp_path / "nogood"
    (root / "train" / "defects").mkdir(parents=True)
    with pytest.raises(DataError, match="'good'") as ei:
        load_dataset(root)
    assert str(root / "train") in str(ei.value)
    root = make_mvtec(tmp_path / "emptytype")
    (root / "test" / "hole").mkdir()
    with pytest.raises(DataError, match="empty") as ei:
        load_dataset(root)
    assert "hole" in str(ei.value)
    root = tmp_path / "emptytrain"
    (root / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        load_dataset(root)
    root = make_mvtec(tmp_path / "loose")
    save(rgb(), root / "test" / "x.png")
    with pytest.raises(DataError, match="test/good"):
        load_dataset(root)
    with pytest.raises(InvalidInputError):
        load_dataset(root, on_error="ignore")


def test_missing_mask(tmp_path, caplog):
    root = make_mvtec(tmp_path / "c")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DataError, match="no mask") as ei:
        load_dataset(root)
    assert str(root / "test" / "crack" / "001.png") in str(ei.value)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, on_error="skip")
    assert [s.path.name for s in ds.test if s.label] == ["000.png"]
    assert ds.skipped[0][0] == root / "test" / "crack" / "001.png"
    assert "001.png" in caplog.text


def test_missing_mask_folder(tmp_path):
    root = make_mvtec(tmp_path / "c", types=("crack", "bent"))
    for p in (root / "ground_truth" / "bent").iterdir():
        p.unlink()
    (root / "ground_truth" / "bent").rmdir()
    with pytest.raises(DataError, match="bent"):
        load_dataset(root)
    ds = load_dataset(root, on_error="skip")
    assert {s.defect_type for s in ds.test} == {"good", "crack"} and len(ds.skipped) == 2


def test_mask_wrong_size(tmp_path):
    root = make_mvtec(tmp_path / "c")
    bad = save(mask_img(8, 12), root / "ground_truth" / "crack" / "000_mask.png")
    with pytest.raises(DataError) as ei:
        load_dataset(root)
    msg = str(ei.value)
    assert str(bad) in msg and "8 x 12" in msg and "8 x 10" in msg
    with pytest.raises(DataError, match="8 x 12"):
        load_dataset(root, verify="full")
    ds = load_dataset(root, on_error="skip")
    assert [s.path.name for s in ds.test if s.label] == ["001.png"] and ds.skipped[0][0] == bad


def test_corrupt_image(tmp_path):
    root = make_mvtec(tmp_path / "c")
    bad = root / "train" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError) as ei:
        load_dataset(root)
    assert str(bad) in str(ei.value)
    ds = load_dataset(root, on_error="skip")
    assert [p.name for p in ds.train] == ["000.png", "002.png"] and ds.skipped[0][0] == bad


def test_verify_full_catches_truncation(tmp_path):
    root = make_mvtec(tmp_path / "c")
    p = save(rgb(64, 64), root / "train" / "good" / "big.png")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 200])  # header intact, pixel data cut
    assert len(load_dataset(root).train) == 4  # the header check cannot see it
    with pytest.raises(ImageDecodeError, match="big.png"):
        load_dataset(root, verify="full")


# ----------------------------------------------------------------------------- runtime imports


def test_runtime_modules_import_no_heavy_deps():
    code = (
        "import sys, npad_edge.data, npad_edge.metrics, npad_edge.postprocess\n"
        "bad = [m for m in ('torch', 'scipy', 'sklearn', 'cv2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
