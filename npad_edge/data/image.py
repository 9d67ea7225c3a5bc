"""Decoding and validating images and ground-truth masks (numpy + pillow only).

Decisions:

- Formats: PNG, JPEG (incl. MPO, opened by the JPEG plugin) and BMP only; the decoders of every other format Pillow knows
  are never tried, which keeps the attack surface of untrusted files small.
- Pixel modes: 8-bit grayscale, bilevel, palette, RGB, RGBA, LA/PA, CMYK and YCbCr become RGB
  (``PIL.Image.convert("RGB")``; alpha is dropped, colours are kept as stored, no compositing).
  16-bit and 32-bit integer or float images are refused: converting them silently would clip
  or rescale the data. EXIF orientation is *not* applied: pixels are returned as stored, the
  same for training and inference.
- Size: the pixel count from the header is checked against ``max_pixels`` (default
  :data:`DEFAULT_MAX_PIXELS`, 64 Mpx) *before* any pixel is decoded; Pillow's own
  ``Image.MAX_IMAGE_PIXELS`` guard also applies. 0-size images are refused.
- Every failure is an :class:`~npad_edge.errors.ImageDecodeError` naming the file; decoder
  exceptions of any type are converted at this boundary (fuzz-tested).
- In-memory arrays (:func:`as_image_array`) must already be ``(H, W, 3) uint8`` C-contiguous
  RGB with ``H, W >= 1`` (a 1 x 1 image is allowed: the model resizes anyway). Nothing is cast
  or copied; every other input is refused with the conversion to do.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from ..errors import DataError, ImageDecodeError, InvalidInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "read_image",
    "decode_image",
    "image_size",
    "as_image_array",
    "read_mask",
]

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")  # JPEG includes multi-picture (MPO) files

# Modes that hold 8 bits per channel (or fewer) and convert to RGB without loss of meaning.
_RGB_CONVERTIBLE = {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr"}
# Masks only need "nonzero"; 16/32-bit integer masks are fine for that.
_MASK_MODES = {"1", "L", "P", "LA", "La", "PA", "RGB", "RGBA", "RGBX", "I", "I;16", "I;16B", "I;16L", "I;16N"}


def _name(source) -> str:
    return str(source)


def _check_max_pixels(max_pixels) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise InvalidInputError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return int(max_pixels)


def _open_checked(fp, name: str, max_pixels: int, *, modes: set[str], what: str) -> Image.Image:
    """Open lazily (header only) and run every check that needs no pixel data."""
    try:
        im = Image.open(fp, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{name}: image too large to decode ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageDecodeError(
            f"{name}: not a readable {what} (supported: PNG, JPEG, BMP), or the header is corrupt"
        ) from e
    except Exception as e:  # the decoders raise many kinds; all mean "bad file" here
        raise ImageDecodeError(f"{name}: cannot read {what} header: {type(e).__name__}: {e}") from e
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageDecodeError(f"{name}: {what} has zero size ({w} x {h})")
        if w * h > max_pixels:
            raise ImageDecodeError(
                f"{name}: {what} is {w} x {h} = {w * h} pixels, above the limit of {max_pixels} "
                "(raise max_pixels to accept it)"
            )
        if im.mode not in modes:
            raise ImageDecodeError(
                f"{name}: unsupported pixel mode {im.mode!r} for a {what}; "
                "expected 8-bit grayscale, palette or RGB(A)"
            )
        if im.format == "PNG" and what == "image":
            # Pillow reads 16-bit RGB(A)/LA PNGs as 8-bit modes; refuse rather than truncate.
            for tile in im.tile:
                args = tile[3] if len(tile) > 3 else None
                rawmode = args if isinstance(args, str) else (args[0] if args else "")
                if isinstance(rawmode, str) and ";16" in rawmode:
                    raise ImageDecodeError(f"{name}: 16-bit PNG images are not supported; save as 8-bit")
    except BaseException:
        im.close()
        raise
    return im


def _with_file(source, fn):
    if not isinstance(source, (str, os.PathLike)):
        # os.stat(3) would stat file descriptor 3: refuse anything that is not a path.
        raise InvalidInputError(f"path must be a str or os.PathLike, got {type(source).__name__}")
    name = _name(source)
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: file not found") from None
    except (OSError, ValueError) as e:  # ValueError: embedded NUL byte and the like
        raise ImageDecodeError(f"{name}: cannot access file: {e}") from e
    if not os.path.isfile(source):
        raise ImageDecodeError(f"{name}: not a regular file")
    if st.st_size == 0:
        raise ImageDecodeError(f"{name}: file is empty (0 bytes)")
    try:
        with open(source, "rb") as fp:
            return fn(fp, name)
    except OSError as e:
        raise ImageDecodeError(f"{name}: cannot read file: {e}") from e


def _decode_rgb(fp, name: str, max_pixels: int) -> np.ndarray:
    im = _open_checked(fp, name, max_pixels, modes=_RGB_CONVERTIBLE, what="image")
    try:
        with im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            arr = np.array(rgb, dtype=np.uint8)  # owned, writable, C-contiguous
    except ImageDecodeError:
        raise
    except Exception as e:  # truncated / corrupt data: OSError, SyntaxError, ValueError, ...
        raise ImageDecodeError(f"{name}: corrupt or truncated image data: {type(e).__name__}: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != im.size[1] or arr.shape[1] != im.size[0]:
        raise ImageDecodeError(f"{name}: decoder returned an unexpected array of shape {arr.shape}")
    return arr


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an 8-bit PNG / JPEG / BMP file as ``(H, W, 3) uint8`` RGB, C-contiguous and writable.

    Raises:
        ImageDecodeError: naming the file, if it is missing, empty, truncated, corrupt, of an
            unsupported format or pixel mode, of zero size, or larger than ``max_pixels``
            (checked from the header, before decoding).
    """
    max_pixels = _check_max_pixels(max_pixels)
    return _with_file(path, lambda fp, name: _decode_rgb(fp, name, max_pixels))


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an encoded PNG / JPEG / BMP held in memory; same rules as :func:`read_image`."""
    max_pixels = _check_max_pixels(max_pixels)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError(f"{name}: empty data (0 bytes)")
    return _decode_rgb(io.BytesIO(bytes(data)), name, max_pixels)


def image_size(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header only, with all header checks of :func:`read_image`."""
    max_pixels = _check_max_pixels(max_pixels)

    def probe(fp, name):
        with _open_checked(fp, name, max_pixels, modes=_RGB_CONVERTIBLE, what="image") as im:
            return im.size[1], im.size[0]

    return _with_file(path, probe)


def _mask_size(path, max_pixels: int) -> tuple[int, int]:
    def probe(fp, name):
        with _open_checked(fp, name, max_pixels, modes=_MASK_MODES, what="mask") as im:
            return im.size[1], im.size[0]

    return _with_file(path, probe)


def read_mask(
    path: str | os.PathLike,
    expected_hw: tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a ground-truth mask as ``(H, W) bool``: any nonzero value is a defect.

    Grayscale, bilevel, palette (the palette index counts, not its colour) and 16/32-bit integer
    masks are read as stored; for RGB(A) masks a pixel is a defect if any colour channel is
    nonzero (alpha ignored).

    Raises:
        ImageDecodeError: the file cannot be read (as for :func:`read_image`).
        DataError: ``expected_hw`` is given and the mask has another size; the message names
            the file and both sizes.
    """
    max_pixels = _check_max_pixels(max_pixels)

    def decode(fp, name):
        im = _open_checked(fp, name, max_pixels, modes=_MASK_MODES, what="mask")
        try:
            with im:
                im.load()
                arr = np.asarray(im)
        except Exception as e:
            raise ImageDecodeError(f"{name}: corrupt or truncated mask data: {type(e).__name__}: {e}") from e
        if arr.ndim == 3:
            colour = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]  # LA/PA: L or P only
            return np.any(colour != 0, axis=2)
        return arr != 0

    mask = _with_file(path, decode)
    if expected_hw is not None and tuple(mask.shape) != tuple(expected_hw):
        raise DataError(
            f"{_name(path)}: mask is {mask.shape[0]} x {mask.shape[1]} (H x W) but its image is "
            f"{expected_hw[0]} x {expected_hw[1]}; masks must have the image's size"
        )
    return mask


def as_image_array(obj, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate an in-memory image and return it unchanged (no cast, no copy).

    Accepts only a numpy ``(H, W, 3) uint8`` C-contiguous array, RGB channel order, with
    ``H, W >= 1`` (1 x 1 is allowed) and ``H * W <= max_pixels``.

    Raises:
        InvalidInputError: saying what was expected, what came and how to convert.
    """
    max_pixels = _check_max_pixels(max_pixels)
    if isinstance(obj, Image.Image):
        raise InvalidInputError(
            "got a PIL image; pass np.asarray(img.convert('RGB')) or use read_image(path)"
        )
    if not isinstance(obj, np.ndarray):
        raise InvalidInputError(f"image must be a numpy array (H, W, 3) uint8, got {type(obj).__name__}")
    if obj.dtype != np.uint8:
        hint = ""
        if obj.dtype.kind == "f":
            if np.isnan(obj).any():
                hint = " (it also contains NaN)"
            hint += "; for values in [0, 1] convert with (x * 255).round().clip(0, 255).astype(np.uint8)"
        elif obj.dtype.kind in "iu":
            hint = "; if the values are 0..255 use x.astype(np.uint8), 16-bit data needs rescaling first"
        raise InvalidInputError(f"image must be uint8, got {obj.dtype}{hint}")
    if obj.ndim == 2:
        raise InvalidInputError(
            f"image must be (H, W, 3) RGB, got a 2-D (grayscale) array {obj.shape}; "
            "use np.repeat(x[..., None], 3, axis=2)"
        )
    if obj.ndim != 3:
        raise InvalidInputError(f"image must be (H, W, 3), got {obj.ndim}-D shape {obj.shape}")
    if obj.shape[2] != 3:
        extra = "; drop alpha with x[..., :3]" if obj.shape[2] == 4 else ""
        raise InvalidInputError(f"image must have 3 channels (H, W, 3), got shape {obj.shape}{extra}")
    h, w = obj.shape[:2]
    if h < 1 or w < 1:
        raise InvalidInputError(f"image has zero size: {obj.shape}")
    if h * w > max_pixels:
        raise InvalidInputError(f"image is {w} x {h} = {h * w} pixels, above the limit of {max_pixels}")
    if not obj.flags.c_contiguous:
        raise InvalidInputError(
            "image must be C-contiguous (e.g. not a crop view or a channel flip); "
            "pass np.ascontiguousarray(x)"
        )
    return obj
