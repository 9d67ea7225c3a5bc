"""Heat-map overlays with numpy + Pillow only (runtime-safe: no torch, no matplotlib).

Normalisation
-------------
An anomaly map is turned into colours with a **fixed** range ``[vmin, vmax]`` that comes from
the model (its threshold), never from the image itself. Per-image min-max scaling stretches the
largest value of *every* image to full red, so a perfectly good part looks as defective as a
broken one and two overlays can no longer be compared. :func:`map_range` gives the default
range: ``vmin = 0.5 * threshold`` and ``vmax = 2 * threshold``, so a pixel *at* the decision
threshold sits a third of the way up the colour map (purple-red in inferno), normal texture
stays dark and only scores of about twice the threshold saturate (pale yellow).

The heat map is blended with a per-pixel opacity ``alpha * clip(3 t, 0.2, 1)`` of the
normalised score ``t``: faint where nothing is wrong, so the part stays visible, and the full
``alpha`` from the threshold up. (Tried on MVTec bottle: a constant opacity greys every good
image; an opacity proportional to ``t`` hides defects scoring just above the threshold.)
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError

__all__ = ["COLORMAPS", "apply_colormap", "map_range", "mask_contour", "overlay", "resize_map", "to_png_bytes"]

# inferno (matplotlib / viridisLite), 11 evenly spaced stops; interpolated to 256 entries.
_INFERNO_STOPS = [
    "000004", "160B39", "420A68", "6A176E", "932667", "BC3754",
    "DD513A", "F37819", "FCA50A", "F6D746", "FCFFA4",
]


def _lut_from_stops(stops: list[str]) -> np.ndarray:
    rgb = np.array([[int(s[i : i + 2], 16) for i in (0, 2, 4)] for s in stops], dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, x, rgb[:, c]) for c in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def _turbo_lut() -> np.ndarray:
    # Google's polynomial fit of turbo (A. Mikhailov, 2019), max error < 1 %.
    x = np.linspace(0.0, 1.0, 256)
    r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))))
    g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))))
    b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))))
    return np.clip(np.rint(np.stack([r, g, b], axis=1) * 255.0), 0, 255).astype(np.uint8)


#: name -> ``(256, 3) uint8`` lookup table.
COLORMAPS: dict[str, np.ndarray] = {"inferno": _lut_from_stops(_INFERNO_STOPS), "turbo": _turbo_lut()}
# A contour colour that stands out against each map and against most parts.
_CONTOUR = {"inferno": (0, 255, 255), "turbo": (255, 255, 255)}


def map_range(threshold: float, *, low: float = 0.5, high: float = 2.0) -> tuple[float, float]:
    """The default fixed colour range ``(vmin, vmax)`` for a model with this image threshold."""
    thr = float(threshold)
    if not np.isfinite(thr) or thr <= 0:
        raise InvalidInputError(f"threshold must be a positive finite number, got {threshold!r}")
    return low * thr, high * thr


def apply_colormap(values: np.ndarray, *, vmin: float, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """``(H, W)`` float map -> ``(H, W, 3) uint8`` colours; values are clipped to ``[vmin, vmax]``."""
    lut = _lut(cmap)
    t = _normalise(values, vmin, vmax)
    return lut[np.rint(t * 255.0).astype(np.intp)]


def mask_contour(mask: np.ndarray, *, width: int = 2, outside: bool = False) -> np.ndarray:
    """``(H, W) bool`` -> ``(H, W) bool`` boundary pixels of the mask, ``width`` px wide.

    The ring lies inside the mask, or just outside it with ``outside=True`` (which keeps a thin
    region such as a scratch visible instead of painting over it).
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InvalidInputError(f"mask must be (H, W) bool, got shape {m.shape}")
    if outside:
        grown = m.copy()
        for _ in range(max(int(width), 1)):
            p = np.pad(grown, 1, constant_values=False)
            grown = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
        return grown & ~m
    inner = m.copy()
    for _ in range(max(int(width), 1)):
        # 4-neighbour erosion; the image border counts as outside so touching masks get an edge.
        p = np.pad(inner, 1, constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    cmap: str = "inferno",
    contour_width: int = 2,
    contour_color: tuple[int, int, int] | None = None,
    caption: str | None = None,
) -> np.ndarray:
    """Blend a colour-mapped anomaly map over an image and outline the predicted mask.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        anomaly_map: ``(H, W)`` float map at the image resolution.
        mask: ``(H, W) bool`` predicted defect mask, or None for no contour.
        vmin, vmax: fixed colour range shared by all images of a model (see the module doc and
            :func:`map_range`); values below ``vmin`` get the darkest colour at the lowest
            opacity, values above ``vmax`` the brightest at full ``alpha``.
        alpha: the opacity of the heat map where it saturates, in ``[0, 1]``.
        caption: optional one-line text drawn in the top-left corner (e.g. score and decision).

    Returns:
        ``(H, W, 3) uint8`` RGB.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInputError(f"image must be (H, W, 3) uint8, got shape {img.shape} dtype {img.dtype}")
    amap = np.asarray(anomaly_map)
    if amap.shape != img.shape[:2]:
        raise InvalidInputError(
            f"anomaly_map must be (H, W) = {img.shape[:2]} like the image, got shape {amap.shape}"
        )
    if not np.issubdtype(amap.dtype, np.floating):
        raise InvalidInputError(f"anomaly_map must be a float array, got dtype {amap.dtype}")
    if mask is not None and np.shape(mask) != img.shape[:2]:
        raise InvalidInputError(f"mask must be (H, W) = {img.shape[:2]} like the image, got {np.shape(mask)}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha!r}")
    lut = _lut(cmap)

    t = _normalise(amap, vmin, vmax)
    heat = lut[np.rint(t * 255.0).astype(np.intp)].astype(np.float32)
    # Opacity ramps up to full alpha at t = 1/3 (the threshold with the default map_range) so
    # normal regions keep showing the part and anything past the threshold is clearly coloured.
    a = (float(alpha) * np.clip(3.0 * t, 0.2, 1.0))[..., None].astype(np.float32)
    out = img.astype(np.float32) * (1.0 - a) + heat * a
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    if mask is not None and np.any(mask):
        color = contour_color if contour_color is not None else _CONTOUR.get(cmap, (0, 255, 255))
        out[mask_contour(mask, width=contour_width)] = np.asarray(color, dtype=np.uint8)
    if caption:
        out = _draw_caption(out, caption)
    return out


def resize_map(anomaly_map: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float map -> ``(H, W) float32``, bilinear; returned as is when already that size."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape == tuple(hw):
        return amap
    if amap.ndim != 2:
        raise InvalidInputError(f"anomaly_map must be (H, W), got shape {amap.shape}")
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(amap), mode="F")
    return np.asarray(img.resize((int(hw[1]), int(hw[0])), Image.BILINEAR), dtype=np.float32)


def to_png_bytes(rgb: np.ndarray) -> bytes:
    """``(H, W, 3) uint8`` -> PNG file bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _lut(cmap: str) -> np.ndarray:
    try:
        return COLORMAPS[cmap]
    except KeyError:
        raise InvalidInputError(f"unknown colour map {cmap!r}; choose one of {sorted(COLORMAPS)}") from None


def _normalise(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    vmin, vmax = float(vmin), float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax <= vmin:
        raise InvalidInputError(f"need finite vmin < vmax, got vmin={vmin!r} vmax={vmax!r}")
    v = np.asarray(values, dtype=np.float32)
    t = (v - np.float32(vmin)) * np.float32(1.0 / (vmax - vmin))
    # NaN (e.g. a broken map) is shown as the lowest colour rather than crashing the LUT lookup.
    return np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)


def _draw_caption(rgb: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    draw = ImageDraw.Draw(im, "RGBA")

    def font_of(size: int):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
            return ImageFont.load_default()

    size = max(8, min(32, h // 18))
    font = font_of(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    if x1 - x0 > w - 4 and size > 8:  # shrink to fit small images
        size = max(8, int(size * (w - 4) / (x1 - x0)))
        font = font_of(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    draw.rectangle((0, 0, min(w, x1 - x0 + 2 * pad), y1 - y0 + 2 * pad), fill=(0, 0, 0, 170))
    draw.text((pad - x0, pad - y0), text, fill=(255, 255, 255, 255), font=font)
    return np.asarray(im)
