"""``FeatureExtractor``: uint8 images in, PatchCore patch features out, all inside one module.

This module is what export converts to OpenVINO, so everything from the decoded image to the
feature map (dtype, layout, resize, normalisation, taps, aggregation, reduction) is in
``forward`` and the IR computes the same thing as torch.

Resize: bilinear, ``align_corners=False``, **antialias=True**. Without antialiasing, a 900x900
camera frame resized to 256 samples only ~2x2 of every 3.5x3.5 source pixels and aliases fine
texture; with it, the kernel widens to cover the whole footprint (PIL-like). OpenVINO converts
torch's antialiased bilinear resize to ``Interpolate`` (antialias=true) and matches torch to
~1e-5 relative (see tests/test_features.py), so no area-pooling workaround is needed. When the
input already has ``image_size`` the resize is an exact identity (and is kept in the graph, so
the exported model accepts any input size).

Resize in the C++ core (``resize_on="core"``, config ``resize.on``, issue 10): the graph has no
resize op and takes **float32** images already at ``image_size`` (0..255 scale, NHWC); the
caller resizes them with ``npad_edge.data.geometry.core_resize``, the same antialiased filter as
the in-graph resize computed in float32 by the C++ core (within 1e-4 of 255 of torch's, about
1.4 ms of one core for 900x900 -> 320x320 on an AVX-512 machine) and never rounded to uint8.

Resize on the host (``resize_on="host"``, config ``resize.on``, issue 10): the graph has no resize
op and takes images already at ``image_size``; the caller resizes them first with
``npad_edge.data.geometry.host_resize`` (PIL ``BILINEAR``: the same triangle filter, uint8 out,
about 1 ms of one core for 900x900 -> 320x320 where the in-graph banded resize costs about
5-10 ms; docs/runtime.md, "The resize (issue 10)"). The fit reader, INT8 calibration and the
Detector apply it. Written as ``format_version`` 3, so an older npad_edge, which would not
resize on the host, refuses the config; graph-resize configs stay version 2.

Exposure (``exposure``, config version 2): optionally, after the resize, every image is
multiplied by one gain ``g = clip(target / mean(image), min_gain, max_gain)`` so that its mean
intensity (over all pixels and channels, 0..255 scale) equals ``target``: at fit time the
median of the training images' mean intensities (``pipeline.exposure_target``), so a typically
exposed image is left (nearly) as it is and only the exposure deviations are undone.
Illumination and exposure are multiplicative and vary between images of the same good part
(lamp ageing, auto-exposure, reflectivity of the batch); nearest-neighbour distances in the
feature space grow with image contrast, so without it a bright image of a good part scores high
everywhere (magnetic_tile: rank correlation +0.61 between a good image's brightness and its
score). One gain per image keeps every local contrast ratio, so local defects stay as visible
as before. A fixed target for all data (the backbone's mean intensity, 114.5) was measured and
rejected: it moves every bottle image by 0.84x and costs 0.5-0.8 PRO there (docs/accuracy.md).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .tap import TapBackbone, create_backbone

__all__ = ["FeatureExtractor", "CONFIG_FORMAT", "CONFIG_VERSION", "EXPOSURE_MODES", "RESIZE_ON", "check_exposure"]

CONFIG_FORMAT = "npad_edge.feature_extractor"
#: 2 added ``exposure`` (absent or None in version 1 configs: no gain). 3 added ``resize.on``
#: ("host", "core"); configs that resize in the graph are still written as version 2.
CONFIG_VERSION = 3

#: where the input resize runs: "graph" (in the backbone graph / IR), "core" (before it, by the
#: C++ core, float32 hand-over) or "host" (before it, PIL, uint8 hand-over)
RESIZE_ON = ("graph", "core", "host")

#: exposure modes (``"gain"``: one multiplicative gain per image; see the module docstring)
EXPOSURE_MODES = ("gain",)
DEFAULT_GAIN_RANGE = (0.25, 4.0)


def check_exposure(exposure: Any) -> dict[str, Any] | None:
    """Validate an exposure setting -> a normalised dict or None.

    ``{"mode": "gain", "target": float in (0, 255], "min_gain": float > 0 (default 0.25),
    "max_gain": float >= min_gain (default 4)}``."""
    if exposure is None:
        return None
    if not isinstance(exposure, Mapping):
        raise InvalidInputError(f"exposure must be None or a mapping with mode and target, got {exposure!r}")
    e = dict(exposure)
    unknown = set(e) - {"mode", "target", "min_gain", "max_gain"}
    if unknown:
        raise InvalidInputError(f"exposure: unknown key(s) {sorted(unknown)}")
    if e.get("mode") not in EXPOSURE_MODES:
        raise InvalidInputError(f"exposure mode must be one of {EXPOSURE_MODES}, got {e.get('mode')!r}")
    lo = e.get("min_gain", DEFAULT_GAIN_RANGE[0])
    hi = e.get("max_gain", DEFAULT_GAIN_RANGE[1])
    t = e.get("target")
    for name, v in (("target", t), ("min_gain", lo), ("max_gain", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or float(v) <= 0:
            raise InvalidInputError(f"exposure {name} must be a finite number > 0, got {v!r}")
    if float(t) > 255.0 or float(hi) < float(lo):
        raise InvalidInputError(f"exposure needs 0 < target <= 255 and min_gain <= max_gain, got {e!r}")
    return {"mode": e["mode"], "target": float(t), "min_gain": float(lo), "max_gain": float(hi)}


def _channel_pool_plan(d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices (d_out * L,) and weights (d_out, L) reproducing adaptive_avg_pool1d."""
    bins = []
    for i in range(d_out):
        start = (i * d_in) // d_out
        end = -(-((i + 1) * d_in) // d_out)
        bins.append(range(start, end))
    width = max(len(b) for b in bins)
    idx = torch.zeros(d_out, width, dtype=torch.long)
    w = torch.zeros(d_out, width, dtype=torch.float32)
    for i, b in enumerate(bins):
        idx[i, : len(b)] = torch.tensor(list(b))
        w[i, : len(b)] = 1.0 / len(b)
    return idx.reshape(-1), w


class FeatureExtractor(nn.Module):
    """images (B, H, W, 3) uint8 RGB -> features (B, D, h, w) float32.

    Steps: float, NHWC -> NCHW, bilinear antialiased resize to ``image_size``, optionally one
    exposure gain per image (``exposure``, module docstring), normalise with the
    backbone's mean/std, backbone taps, ``aggregate`` x ``aggregate`` local average per tap
    (stride 1, zero padding counted, as ``avg_pool2d(k, 1, k // 2)``), every tap brought to the
    grid of the stride-8 tap (coarser taps: bilinear upsampling, ``align_corners=False``; finer
    taps: adaptive average pooling), concatenation in tap order, then optionally
    ``feature_dim``: adaptive average pooling over channels (PatchCore's reduction).

    ``h, w = ceil(image_size / grid_stride)`` where ``grid_stride`` is 8 when a stride-8 tap is
    present, else the finest tap's stride. ``D = sum(channels)`` or ``feature_dim``.
    """

    def __init__(
        self,
        backbone: TapBackbone,
        *,
        image_size: tuple[int, int] | int = (256, 256),
        feature_dim: int | None = None,
        aggregate: int = 3,
        antialias: bool = True,
        exposure: Mapping[str, Any] | None = None,
        resize_on: str = "graph",
    ):
        super().__init__()
        if resize_on not in RESIZE_ON:
            raise InvalidInputError(f"resize_on must be one of {RESIZE_ON}, got {resize_on!r}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 32:
            raise InvalidInputError(f"image_size must be (H, W) with H, W >= 32, got {image_size}")
        if not (isinstance(aggregate, int) and aggregate >= 1 and aggregate % 2 == 1):
            raise InvalidInputError(f"aggregate must be an odd positive int, got {aggregate!r}")
        d_in = sum(backbone.channels)
        ok_dim = isinstance(feature_dim, int) and 1 <= feature_dim <= d_in
        if feature_dim is not None and not ok_dim:
            raise InvalidInputError(
                f"feature_dim must be an int in [1, {d_in}] (the concatenated tap channels), "
                f"got {feature_dim!r}"
            )
        self.backbone = backbone
        self.image_size: tuple[int, int] = image_size  # type: ignore[assignment]
        self.feature_dim = feature_dim
        self.aggregate = aggregate
        self.antialias = bool(antialias)
        self.resize_on = resize_on
        self.exposure = check_exposure(exposure)
        strides = backbone.strides
        self.grid_stride = 8 if 8 in strides else min(strides)
        self.grid_size = (
            math.ceil(image_size[0] / self.grid_stride),
            math.ceil(image_size[1] / self.grid_stride),
        )
        self.out_dim = feature_dim if feature_dim is not None else d_in

        # (x / 255 - mean) / std folded into one multiply-add.
        mean = torch.tensor(backbone.mean, dtype=torch.float32)
        std = torch.tensor(backbone.std, dtype=torch.float32)
        self.register_buffer("_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_shift", (-mean / std).view(1, 3, 1, 1), persistent=False)
        if feature_dim is not None and feature_dim != d_in:
            idx, w = _channel_pool_plan(d_in, feature_dim)
            self.register_buffer("_pool_idx", idx, persistent=False)
            self.register_buffer("_pool_w", w.view(1, feature_dim, -1, 1, 1), persistent=False)
        else:
            self._pool_idx = None
        self.eval()

    # -- forward -------------------------------------------------------------------------------
    @property
    def input_dtype(self) -> str:
        """The dtype of the images ``forward`` takes: ``"float32"`` (model-size images resized by
        the core) for ``resize_on="core"``, else ``"uint8"``."""
        return "float32" if self.resize_on == "core" else "uint8"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, 3) uint8 (float32 at image_size for ``resize_on="core"``) ->
        (B, 3, *image_size) float32, normalised."""
        want = torch.float32 if self.resize_on == "core" else torch.uint8
        if not torch.jit.is_tracing() and (
            images.dtype != want or images.ndim != 4 or images.shape[-1] != 3
        ):
            raise InvalidInputError(
                f"expected images (B, H, W, 3) {self.input_dtype}, got {tuple(images.shape)} {images.dtype}"
            )
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        if self.resize_on != "graph":   # resized before the graph: model-size images only
            if not torch.jit.is_tracing() and tuple(images.shape[1:3]) != self.image_size:
                raise InvalidInputError(
                    f"this extractor takes images resized before it (resize_on={self.resize_on!r}): expected "
                    f"{self.image_size[0]}x{self.image_size[1]} {self.input_dtype}, got "
                    f"{images.shape[1]}x{images.shape[2]} (npad_edge.data.geometry.{self.resize_on}_resize)")
            return self._normalise(x)
        # Always resized, even at image_size (then an exact identity), so a traced/exported
        # graph keeps the resize for other input sizes.
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                          antialias=self.antialias)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.exposure is not None:
            e = self.exposure
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            gain = (e["target"] / mean.clamp_min(1e-3)).clamp(e["min_gain"], e["max_gain"])
            x = x * gain
        return x * self._scale + self._shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, 3) uint8 RGB -> (B, D, h, w) float32 (see class docstring)."""
        feats = self.backbone(self.preprocess(images))
        grid = None
        for f, s in zip(feats, self.backbone.strides):
            if s == self.grid_stride:
                grid = f.shape[-2:]
                break
        out = []
        k = self.aggregate
        for f, s in zip(feats, self.backbone.strides):
            if k > 1:
                f = F.avg_pool2d(f, k, stride=1, padding=k // 2)  # count_include_pad=True
            if s > self.grid_stride:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            elif s < self.grid_stride:
                r = f.shape[-2] // grid[0]
                if r >= 1 and f.shape[-2] == r * grid[0] and f.shape[-1] == r * grid[1]:
                    # the same means as adaptive pooling when the grids divide (always at the
                    # default sizes), as a plain r x r average pool: OpenVINO's CPU plugin runs
                    # AdaptiveAvgPool with a slow generic kernel (~1 ms, 10 % of the INT8
                    # backbone at 320 x 320; docs/runtime.md)
                    f = F.avg_pool2d(f, r)
                else:
                    f = F.adaptive_avg_pool2d(f, grid)
            out.append(f)
        x = torch.cat(out, dim=1) if len(out) > 1 else out[0]
        if self._pool_idx is not None:
            x = x.index_select(1, self._pool_idx).unflatten(1, (self.out_dim, -1))
            x = (x * self._pool_w).sum(dim=2)
        return x

    # -- description ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able description; ``FeatureExtractor.from_config`` rebuilds the module."""
        b = self.backbone
        return {
            "format": CONFIG_FORMAT,
            "format_version": 2 if self.resize_on == "graph" else 3,
            "input": {"layout": "NHWC", "dtype": self.input_dtype, "channels": "RGB"},
            "backbone": b.name,
            "weights": b.weights,
            "weights_file": b.weights_file,
            "weights_sha256": b.weights_sha256,
            "seed": b.seed,
            "taps": list(b.taps),
            "strides": list(b.strides),
            "channels": list(b.channels),
            "normalization": b.normalization,
            "mean": list(b.mean),
            "std": list(b.std),
            "image_size": list(self.image_size),
            "resize": {"mode": "bilinear", "align_corners": False, "antialias": self.antialias,
                       **({} if self.resize_on == "graph" else {"on": self.resize_on})},
            "aggregate": self.aggregate,
            "grid_stride": self.grid_stride,
            "grid_size": list(self.grid_size),
            "feature_dim": self.feature_dim,
            "out_dim": self.out_dim,
            "exposure": self.exposure,
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], weights: str | None = None) -> "FeatureExtractor":
        """Rebuild from ``config()``; ``weights`` overrides ``cfg["weights"]`` (e.g. a path)."""
        if cfg.get("format") != CONFIG_FORMAT:
            raise InvalidInputError(f"not a feature-extractor config: format={cfg.get('format')!r}")
        if int(cfg.get("format_version", 0)) > CONFIG_VERSION:
            raise InvalidInputError(
                f"feature-extractor config version {cfg['format_version']} is newer than this "
                f"npad_edge understands ({CONFIG_VERSION})"
            )
        backbone = create_backbone(
            cfg["backbone"],
            weights=cfg["weights"] if weights is None else weights,
            seed=int(cfg.get("seed", 0)),
            taps=cfg["taps"],
            normalization=cfg.get("normalization", "imagenet"),
        )
        return cls(
            backbone,
            image_size=tuple(cfg["image_size"]),
            feature_dim=cfg.get("feature_dim"),
            aggregate=int(cfg.get("aggregate", 3)),
            antialias=bool(cfg.get("resize", {}).get("antialias", True)),
            exposure=cfg.get("exposure"),
            resize_on=str(cfg.get("resize", {}).get("on", "graph")),
        )

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, aggregate={self.aggregate}, "
                f"grid_stride={self.grid_stride}, out_dim={self.out_dim}, exposure={self.exposure}, "
                f"resize_on={self.resize_on!r}")
