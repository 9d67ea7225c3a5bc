"""Input geometry: the model input size from the training images, the mixed-aspect rule
(resize or letterbox), and tiling of very large frames. numpy only (runtime-safe).

**Input size** (:func:`derive_input_size`): with a short side ``S``, the model input keeps
the median aspect ratio ``a = median(H_i / W_i)`` of the training images: the short side is
``S`` and the long side is ``S`` plus the extra length ``S * (r - 1)``, ``r = max(a, 1 / a)``,
rounded to a multiple of ``multiple`` (the backbone's largest tap stride, so that when ``S``
is a multiple of it every tap's grid covers the input exactly and the coarser taps upsample
onto the finest one without a fractional-cell shift). Square training images give ``(S, S)``,
exactly the old square default.

**Aspect rule** (the manifest's ``preprocess.aspect_rule``), for an image whose aspect ratio
differs from the model input's:

- ``"resize"``: squash it to the model input (what every model before this rule did);
- ``"letterbox"``: pad it, centred, to the model's aspect ratio, then resize. The fill
  (``preprocess.letterbox_fill``) is ``"mean"`` by default: the backbone's normalisation
  mean (ImageNet's for the pretrained backbones), i.e. 0 after normalisation, which is what
  the CNN's own zero padding shows beyond every frame edge. A real image edge next to the pad
  then looks like the frame edge the memory bank already knows from every training image.
  ``"edge"`` (replicate the border pixels) is offered too; it avoids the step at the
  boundary but paints streaks that occur nowhere else and smears a defect on the border into
  the pad. The padded area never counts: the anomaly map is computed at the padded size and
  cropped back to the image (:class:`Placement`).

**Tiling** (:func:`tile_grid`, :func:`merge_tiles`): a frame much larger than the model input
is cut into overlapping tiles of a fixed size in source pixels; each tile is scored at the
model input resolution and the maps are merged (maximum in overlaps by default, so a defect
seen by any tile counts, consistent with the image score being the maximum over tiles).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "DEFAULT_SHORT_SIDE",
    "ASPECT_RULES",
    "LETTERBOX_FILLS",
    "TILE_MERGES",
    "Placement",
    "host_resize",
    "DEFAULT_RESIZE_ON",
    "core_resize",
    "resize_for",
    "Tiling",
    "derive_input_size",
    "image_sizes",
    "parse_image_size",
    "letterbox",
    "letterbox_box",
    "tile_grid",
    "merge_tiles",
]

#: default short side of the model input (fit, fit-many): 320, chosen on bottle + magnetic_tile
#: with the exposure gain (docs/accuracy.md, section 0): PRO +1.3 (N-pad) / +1.6 (PatchCore) on
#: the mean of both categories against 256, for 1.5x the backbone time.
DEFAULT_SHORT_SIDE = 320

#: where new fits resize to the model input (fit, fit-many): "core", the C++ core's antialiased
#: resize with a float32 hand-over (``core_resize``): the in-graph filter's values within 1e-4 of
#: 255, so the same metrics, at a fraction of the in-IR resize's cost (docs/runtime.md, "The
#: resize (issue 10)"). "graph" and "host" stay selectable; saved models keep their own.
DEFAULT_RESIZE_ON = "core"

ASPECT_RULES = ("resize", "letterbox")
LETTERBOX_FILLS = ("mean", "edge")
TILE_MERGES = ("max", "mean")


# ----------------------------------------------------------------------------- input size
def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def derive_input_size(sizes: Iterable[Sequence[int]], short_side: int, multiple: int = 16) -> tuple[int, int]:
    """``(H, W)`` model input from the training images' ``(h, w)`` sizes (module docstring).

    Args:
        sizes: ``(h, w)`` of each training image (at least one).
        short_side: ``S``, the short side of the model input.
        multiple: the long side minus ``S`` is a multiple of this (the backbone stride).

    The median is over ``h / w`` of all images (ties between portrait and landscape images
    go to the median's side). Raises InvalidInputError on bad arguments.
    """
    s = _positive_int(short_side, "short_side")
    m = _positive_int(multiple, "multiple")
    ratios = []
    for i, hw in enumerate(sizes):
        try:
            h, w = (int(v) for v in hw)
        except (TypeError, ValueError):
            raise InvalidInputError(f"sizes[{i}] must be (h, w), got {hw!r}") from None
        if h < 1 or w < 1:
            raise InvalidInputError(f"sizes[{i}] must be positive, got {hw!r}")
        ratios.append(h / w)
    if not ratios:
        raise InvalidInputError("derive_input_size: no image sizes given")
    a = float(np.median(ratios))
    r = max(a, 1.0 / a)
    long_side = s + m * int(round(s * (r - 1.0) / m))
    return (long_side, s) if a > 1.0 else (s, long_side)


def median_aspect(sizes: Iterable[Sequence[int]]) -> float:
    """``median(h / w)`` of ``(h, w)`` sizes."""
    return float(np.median([int(h) / int(w) for h, w in sizes]))


def image_sizes(paths: Iterable[str | os.PathLike]) -> list[tuple[int, int]]:
    """``(h, w)`` of each image file from its header only (no pixel decode)."""
    from .image import image_size

    return [image_size(p) for p in paths]


def parse_image_size(text: str | int | Sequence[int]) -> int | tuple[int, int]:
    """``"256"`` -> ``256`` (a short side), ``"640x256"`` -> ``(640, 256)`` (H x W).

    Accepts ints and (H, W) pairs unchanged after checks; every side must be >= 32.
    Raises InvalidInputError with what was expected.
    """
    def bad() -> InvalidInputError:
        return InvalidInputError(f"image size must be N (the short side, e.g. 256) or HxW (e.g. 640x256), "
                                 f"each at least 32, got {text!r}")

    if isinstance(text, str):
        parts = text.strip().lower().replace("*", "x").split("x")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise bad()
        vals = [int(p) for p in parts]
    elif isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        vals = [int(text)]
    elif isinstance(text, (tuple, list)) and len(text) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in text):
        vals = [int(v) for v in text]
    else:
        raise bad()
    if min(vals) < 32:
        raise bad()
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


# ----------------------------------------------------------------------------- letterbox
@dataclass(frozen=True)
class Placement:
    """Where an image sits inside what the backbone sees.

    ``image_hw``: the image's own (h, w). ``padded_hw``: the (h, w) of the padded image (equal
    to ``image_hw`` without padding). ``top``, ``left``: the image's offset in it.
    """

    image_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    top: int = 0
    left: int = 0

    @property
    def padded(self) -> bool:
        return self.padded_hw != self.image_hw

    def crop(self, amap: np.ndarray) -> np.ndarray:
        """``(padded_h, padded_w)`` map -> ``(h, w)`` map of the image (a copy when cropped)."""
        if not self.padded:
            return amap
        h, w = self.image_hw
        return np.ascontiguousarray(amap[self.top:self.top + h, self.left:self.left + w])


def host_resize(image: np.ndarray, target_hw: Sequence[int]) -> np.ndarray:
    """``image`` (H, W, C) uint8 resized to ``target_hw`` on the host for a model that resizes on
    the host (``resize_on="host"``, issue 10): PIL ``BILINEAR``, i.e. the triangle filter widened
    to the footprint when shrinking (antialiased, the filter of the in-graph resize), uint8
    out. Returned as is (no copy) when it already has ``target_hw``."""
    from PIL import Image

    h, w = int(target_hw[0]), int(target_hw[1])
    if image.ndim != 3 or image.dtype != np.uint8:
        raise InvalidInputError(f"host_resize: expected (H, W, C) uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] == (h, w):
        return image
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))   # writable, C order


def core_resize(image: np.ndarray, target_hw: Sequence[int], threads: int = 1) -> np.ndarray:
    """``image`` (H, W, C) uint8 resized to ``target_hw`` by the C++ core for a model that
    resizes there (``resize_on="core"``, issue 10): the filter of the in-graph resize (aten's
    antialiased bilinear: triangle taps widened to the footprint when shrinking), computed in
    float32 and handed over as float32 on the 0..255 scale, never rounded to uint8 (the rounding
    is what moved the metrics of ``"host"``). Within 1e-4 (of 255) of torch's
    ``interpolate(..., antialias=True)``; the same bits on every instruction set and thread
    count (``csrc/image/resize.h``). At ``target_hw`` it is an exact conversion to float32."""
    from .. import _core

    h, w = int(target_hw[0]), int(target_hw[1])
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
        raise InvalidInputError(f"core_resize: expected (H, W, C) uint8, got "
                                f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
    if h < 1 or w < 1:
        raise InvalidInputError(f"core_resize: target size must be >= 1 x 1, got {h}x{w}")
    return _core.resize_aa(np.ascontiguousarray(image), h, w, int(threads))


def resize_for(resize_on: str, image: np.ndarray, target_hw: Sequence[int], threads: int = 1) -> np.ndarray:
    """What a backbone whose config says ``resize.on = resize_on`` takes for ``image`` (H, W, 3)
    uint8: the image itself ("graph": the graph resizes), :func:`host_resize` ("host", uint8)
    or :func:`core_resize` ("core", float32)."""
    if resize_on == "graph":
        return image
    if resize_on == "host":
        return host_resize(image, target_hw)
    if resize_on == "core":
        return core_resize(image, target_hw, threads)
    raise InvalidInputError(f"resize.on must be 'graph', 'host' or 'core', got {resize_on!r}")


def letterbox_box(image_hw: Sequence[int], target_hw: Sequence[int]) -> Placement:
    """The centred padding that gives ``image_hw`` the aspect ratio of ``target_hw``.

    Only one axis is padded; no padding when the padded length would differ by under a pixel.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    th, tw = int(target_hw[0]), int(target_hw[1])
    ph, pw = h, w
    if h * tw < w * th:       # too wide for the target: pad the height
        ph = max(h, int(round(w * th / tw)))
    elif h * tw > w * th:     # too tall: pad the width
        pw = max(w, int(round(h * tw / th)))
    return Placement((h, w), (ph, pw), (ph - h) // 2, (pw - w) // 2)


def letterbox(image: np.ndarray, target_hw: Sequence[int], *, fill: str = "mean",
              mean: Sequence[float] = (0.485, 0.456, 0.406)) -> tuple[np.ndarray, Placement]:
    """Pad ``image`` ``(h, w, 3) uint8`` to the aspect ratio of ``target_hw``.

    ``fill``: ``"mean"`` (the constant ``round(255 * mean)`` per channel; ``mean`` on the 0..1
    scale, as in the manifest) or ``"edge"`` (replicate the border). Returns the padded
    ``(ph, pw, 3) uint8`` C-contiguous image (the input itself when no padding is needed) and
    its :class:`Placement`.
    """
    if fill not in LETTERBOX_FILLS:
        raise InvalidInputError(f"letterbox fill must be one of {LETTERBOX_FILLS}, got {fill!r}")
    place = letterbox_box(image.shape[:2], target_hw)
    if not place.padded:
        return image, place
    h, w = place.image_hw
    ph, pw = place.padded_hw
    if fill == "edge":
        pads = ((place.top, ph - h - place.top), (place.left, pw - w - place.left), (0, 0))
        return np.ascontiguousarray(np.pad(image, pads, mode="edge")), place
    c = image.shape[2]
    vals = [float(v) for v in mean]
    vals = (vals * c)[:c] if len(vals) == 1 else vals
    if len(vals) != c:
        raise InvalidInputError(f"letterbox mean has {len(vals)} values for {c} channels")
    out = np.empty((ph, pw, c), dtype=np.uint8)
    out[...] = np.clip(np.round(np.asarray(vals) * 255.0), 0, 255).astype(np.uint8)
    out[place.top:place.top + h, place.left:place.left + w] = image
    return out, place


# ----------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class Tiling:
    """How a frame larger than one tile is cut (``Detector.load(..., tiling=Tiling(...))``).

    Args:
        size: tile ``(h, w)`` in source pixels; or None to use ``scale`` x the model input.
        scale: tile size as a multiple of the model input size (used when ``size`` is None);
            e.g. 4.0 with a 256 x 256 model: 1024 x 1024 source pixels per tile, each scored at
            256 x 256 (a quarter of the source resolution instead of 1/12 for a 3000-pixel
            frame resized whole).
        overlap: fraction of a tile shared with its neighbour, in [0, 0.9]: the tile step is
            ``(1 - overlap) * tile`` (or less, so that the tiles end at the frame's edge).
        merge: ``"max"`` (default; a defect seen by any covering tile counts, like the image
            score, the maximum over tiles) or ``"mean"`` (average of the covering tiles).

    A frame no larger than one tile on both axes is one tile: the frame itself, which is
    exactly the untiled path.
    """

    size: tuple[int, int] | None = None
    scale: float | None = 4.0
    overlap: float = 0.25
    merge: str = "max"

    def __post_init__(self) -> None:
        if self.size is not None:
            try:
                th, tw = (int(v) for v in self.size)
            except (TypeError, ValueError):
                raise InvalidInputError(f"tiling size must be (h, w), got {self.size!r}") from None
            if th < 32 or tw < 32:
                raise InvalidInputError(f"tiling size must be at least 32 x 32, got {self.size!r}")
            object.__setattr__(self, "size", (th, tw))
        elif self.scale is None or isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not 0.5 <= float(self.scale) <= 64:
            raise InvalidInputError(f"tiling scale must be a number in [0.5, 64] (or give size), got {self.scale!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) or \
                not 0.0 <= float(self.overlap) <= 0.9:
            raise InvalidInputError(f"tiling overlap must be in [0, 0.9], got {self.overlap!r}")
        if self.merge not in TILE_MERGES:
            raise InvalidInputError(f"tiling merge must be one of {TILE_MERGES}, got {self.merge!r}")

    def tile_hw(self, model_hw: Sequence[int]) -> tuple[int, int]:
        """The tile size in source pixels for a model of input ``model_hw``."""
        if self.size is not None:
            return self.size
        return (max(1, int(round(float(self.scale) * int(model_hw[0])))),
                max(1, int(round(float(self.scale) * int(model_hw[1])))))

    def to_dict(self) -> dict:
        return {"size": list(self.size) if self.size else None, "scale": self.scale,
                "overlap": self.overlap, "merge": self.merge}


def _axis_starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    n = int(math.ceil((length - tile) / step)) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def tile_grid(frame_hw: Sequence[int], tile_hw: Sequence[int], overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles ``(top, left, h, w)`` covering a frame, row-major. Each tile is ``tile_hw``
    (clipped to the frame where the frame is smaller); tiles are evenly spaced so the first
    starts at 0 and the last ends at the frame's edge, neighbours sharing at least
    ``overlap`` of a tile."""
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    th, tw = min(int(tile_hw[0]), fh), min(int(tile_hw[1]), fw)
    return [(y, x, th, tw) for y in _axis_starts(fh, th, overlap) for x in _axis_starts(fw, tw, overlap)]


def merge_tiles(frame_hw: Sequence[int], tiles: Sequence[tuple[int, int, int, int]],
                maps: Sequence[np.ndarray], merge: str = "max") -> np.ndarray:
    """Tile maps ``(h, w) float32`` placed at ``tiles`` -> one ``(H, W) float32`` frame map:
    the maximum (``"max"``) or the average (``"mean"``) of the tiles covering each pixel."""
    if merge not in TILE_MERGES:
        raise InvalidInputError(f"merge must be one of {TILE_MERGES}, got {merge!r}")
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    if len(tiles) == 1 and tuple(tiles[0]) == (0, 0, fh, fw):
        return np.ascontiguousarray(maps[0], dtype=np.float32)
    if merge == "max":
        out = np.full((fh, fw), -np.inf, dtype=np.float32)
        for (y, x, h, w), m in zip(tiles, maps):
            np.maximum(out[y:y + h, x:x + w], m, out=out[y:y + h, x:x + w])
        return out
    acc = np.zeros((fh, fw), dtype=np.float32)
    cnt = np.zeros((fh, fw), dtype=np.float32)
    for (y, x, h, w), m in zip(tiles, maps):
        acc[y:y + h, x:x + w] += m
        cnt[y:y + h, x:x + w] += 1.0
    return acc / cnt
