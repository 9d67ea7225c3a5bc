"""Safe reading of .npy files: the header is parsed and checked against the file size before
any array memory is allocated, so a header claiming a huge shape is an error, not a crash."""

from __future__ import annotations

import ast
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Tuple, Union

import numpy as np

from ..errors import ModelFormatError

_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 4096  # np.save writes ~128 bytes for the dtypes we allow


@dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype
    shape: Tuple[int, ...]
    offset: int  # byte offset of the data
    nbytes: int  # bytes of data the header implies


def read_npy_header(fp: BinaryIO, file_size: int, where: str) -> NpyHeader:
    """Parse the header of an open .npy file (positioned at 0) and check it against the size.

    Refuses Fortran order, object/structured dtypes and any header whose shape does not match
    exactly the bytes that follow it. Raises ModelFormatError naming ``where``.
    """

    def bad(why: str) -> ModelFormatError:
        return ModelFormatError(f"{where}: not a valid .npy array file ({why})")

    head = fp.read(10)
    if len(head) < 10 or head[:6] != _MAGIC:
        raise bad("no .npy magic string")
    major, minor = head[6], head[7]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        prefix = 10
    elif major in (2, 3):
        rest = fp.read(2)
        if len(rest) < 2:
            raise bad("truncated header")
        (hlen,) = struct.unpack("<I", head[8:10] + rest)
        prefix = 12
    else:
        raise bad(f"unknown .npy version {major}.{minor}")
    if hlen > _MAX_HEADER:
        raise bad(f"header of {hlen} bytes is larger than {_MAX_HEADER}")
    raw = fp.read(hlen)
    if len(raw) != hlen:
        raise bad("truncated header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise bad("unreadable header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise bad("header must hold exactly 'descr', 'fortran_order' and 'shape'")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str):
        raise bad("structured dtypes are refused")
    try:
        dtype = np.dtype(descr)
    except Exception:  # numpy raises several types on a garbage dtype string
        raise bad(f"unknown dtype {descr[:40]!r}") from None
    if dtype.hasobject or dtype.kind not in "biufcSU":
        raise bad(f"dtype {dtype} is refused (no object or structured arrays)")
    if fortran is not False:
        raise bad("Fortran-ordered arrays are refused; arrays are stored C-contiguous")
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise bad(f"bad shape {str(shape)[:60]}")
    count = 1
    for s in shape:
        count *= s  # Python int: no overflow
    nbytes = count * dtype.itemsize
    offset = prefix + hlen
    if file_size - offset != nbytes:
        raise bad(f"header shape {shape} {dtype.str} needs {nbytes} data bytes, the file holds {file_size - offset}")
    return NpyHeader(dtype=dtype, shape=tuple(shape), offset=offset, nbytes=nbytes)


def _check_expected(h: NpyHeader, where: str, expect_dtype: str, expect_shape: Tuple[int, ...]) -> None:
    if h.dtype.str != expect_dtype or h.shape != tuple(expect_shape):
        raise ModelFormatError(
            f"{where}: array file holds {h.dtype.str} {list(h.shape)}, the manifest says "
            f"{expect_dtype} {list(expect_shape)} (swapped or replaced file?)")


def read_npy(path: Union[Path, BinaryIO], where: str, *, expect_dtype: str, expect_shape: Tuple[int, ...],
             mmap: bool = False) -> np.ndarray:
    """Read a .npy file (a path, or a file opened ``"rb"`` and positioned at 0) after checking
    its header against the expected dtype and shape.

    Returns a C-contiguous array (read-only ``np.memmap`` of that same open file when ``mmap``
    and non-empty).
    """
    if not isinstance(path, (str, os.PathLike)):
        return _read_npy_open(path, where, expect_dtype, expect_shape, mmap)
    with open(path, "rb") as fp:
        return _read_npy_open(fp, where, expect_dtype, expect_shape, mmap)


def _read_npy_open(fp: BinaryIO, where: str, expect_dtype: str, expect_shape: Tuple[int, ...],
                   mmap: bool) -> np.ndarray:
    size = os.fstat(fp.fileno()).st_size
    h = read_npy_header(fp, size, where)
    _check_expected(h, where, expect_dtype, expect_shape)
    if mmap and h.nbytes > 0 and h.shape:
        return np.memmap(fp, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape, order="C")
    count = h.nbytes // h.dtype.itemsize if h.dtype.itemsize else 0
    if h.nbytes == 0:
        return np.empty(h.shape, dtype=h.dtype)
    data = np.fromfile(fp, dtype=h.dtype, count=count)
    if data.size != count:
        raise ModelFormatError(f"{where}: truncated array data")
    return data.reshape(h.shape)


def npy_from_buffer(buf: bytearray, where: str, *, expect_dtype: str, expect_shape: Tuple[int, ...]) -> np.ndarray:
    """Parse the bytes of a whole .npy file (already read, e.g. to hash them) after the same
    header checks as :func:`read_npy`. Returns a C-contiguous array that views ``buf`` (no
    copy; writable when ``buf`` is a bytearray)."""
    h = read_npy_header(io.BytesIO(buf), len(buf), where)
    _check_expected(h, where, expect_dtype, expect_shape)
    if h.nbytes == 0:
        return np.empty(h.shape, dtype=h.dtype)
    count = h.nbytes // h.dtype.itemsize
    return np.frombuffer(buf, dtype=h.dtype, count=count, offset=h.offset).reshape(h.shape)
