"""Backbones (torch; fit/export time only): architectures, weight loading, feature taps.

- ``create_backbone(name, weights="imagenet" | "random" | path, seed=0, *, taps=None)``
  -> ``TapBackbone``: the network cut after its last tap, ``forward`` returns one map per tap.
- ``FeatureExtractor(backbone, *, image_size=(256, 256), feature_dim=None, aggregate=3)``:
  uint8 (B, H, W, 3) images -> (B, D, H/8, W/8) float32 PatchCore patch features; the module
  that export converts to OpenVINO.
"""

from __future__ import annotations

from ._base import TapPoint
from .features import FeatureExtractor
from .tap import NORMALIZATIONS, TapBackbone, available_backbones, available_taps, create_backbone

__all__ = [
    "FeatureExtractor",
    "NORMALIZATIONS",
    "TapBackbone",
    "TapPoint",
    "available_backbones",
    "available_taps",
    "create_backbone",
]
