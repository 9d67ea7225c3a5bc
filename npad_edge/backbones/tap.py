"""``create_backbone``: an architecture with weights, cut after its last tap."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import InvalidInputError
from . import _weights
from ._base import TapNet, TapPoint
from .efficientnet_lite import EfficientNetLite
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet

log = logging.getLogger(__name__)

__all__ = [
    "TapBackbone", "create_backbone", "available_backbones", "available_taps", "NORMALIZATIONS",
]

# name -> (constructor, default taps). Default taps: the end of the last stride-8 stage and the
# end of the last stride-16 stage (PatchCore's WRN50 layer2 + layer3 analogue); for the
# EfficientNet-Lite family also the end of the stride-4 stage (stage2), average-pooled onto the
# stride-8 grid: it costs no backbone compute (it lies before stage3) and raised pixel AUROC
# and PRO on both real categories for both methods (docs/accuracy.md, "defaults").
_REGISTRY: dict[str, tuple[Callable[[], TapNet], tuple[str, ...]]] = {
    "efficientnet_lite0": (lambda: EfficientNetLite("efficientnet_lite0"), ("stage2", "stage3", "stage5")),
    "efficientnet_lite1": (lambda: EfficientNetLite("efficientnet_lite1"), ("stage2", "stage3", "stage5")),
    "efficientnet_lite2": (lambda: EfficientNetLite("efficientnet_lite2"), ("stage2", "stage3", "stage5")),
    "mobilenet_v2": (MobileNetV2, ("features.6", "features.13")),
    "resnet18": (lambda: ResNet("resnet18"), ("layer2", "layer3")),
    "wide_resnet50_2": (lambda: ResNet("wide_resnet50_2"), ("layer2", "layer3")),
}

# Input normalisation applied to [0, 1] RGB: (x - mean) / std.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # TensorFlow EfficientNet-Lite preprocessing, (x*255 - 127) / 128.
    "tf": ((127.0 / 255,) * 3, (128.0 / 255,) * 3),
}


def available_backbones() -> list[str]:
    """Names accepted by ``create_backbone``."""
    return list(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        )


def available_taps(name: str) -> list[TapPoint]:
    """Tap points of backbone ``name`` in forward order (name, stride, channels)."""
    _check_name(name)
    with torch.device("meta"):
        return _REGISTRY[name][0]().tap_points()


class TapBackbone(nn.Module):
    """A backbone cut after its last tap; ``forward`` returns the tapped feature maps.

    Attributes:
        name: backbone name; ``taps``: tap names in forward order; ``strides``, ``channels``:
        per tap; ``mean``, ``std``: RGB normalisation on [0, 1] the weights expect;
        ``normalization``: its name; ``weights``: "imagenet", "random" or the file path used;
        ``seed``; ``weights_file``, ``weights_sha256``: provenance (None for random weights).
    """

    def __init__(self, name: str, body: TapNet, taps: Sequence[str], *, normalization: str,
                 weights: str, seed: int, weights_file: str | None, weights_sha256: str | None):
        super().__init__()
        points = {p.name: p for p in body.tap_points()}
        self.name = name
        self.body = body
        self.taps = tuple(taps)
        self.strides = tuple(points[t].stride for t in self.taps)
        self.channels = tuple(points[t].channels for t in self.taps)
        self.normalization = normalization
        self.mean, self.std = NORMALIZATIONS[normalization]
        self.weights = weights
        self.seed = seed
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) float32, normalised -> one (B, C_i, ceil(H/s_i), ceil(W/s_i)) per tap."""
        # Skipped while tracing: comparisons on traced sizes would only add TracerWarnings.
        tracing = torch.jit.is_tracing()
        if not tracing and (x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point()):
            raise InvalidInputError(
                f"expected a (B, 3, H, W) float tensor, got {tuple(x.shape)} {x.dtype}"
            )
        return self.body.forward_taps(x, self.taps)

    def train(self, mode: bool = True) -> "TapBackbone":
        # A frozen feature extractor: batch norm must keep its ImageNet statistics, so the
        # module stays in eval mode whatever a caller (or a parent's .train()) asks.
        return super().train(False)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, taps={self.taps}, strides={self.strides}, "
                f"channels={self.channels}")


def _init_random(model: nn.Module) -> None:
    # He init on fan-in keeps activations O(1) through depth with BN at identity statistics.
    # torchvision's fan-out init (meant for training, where BN renormalises) shrinks them
    # ~k*k-fold per depthwise conv: EfficientNet-Lite0's stride-16 tap came out ~1e-6.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def create_backbone(
    name: str,
    weights: str | os.PathLike = "imagenet",
    seed: int = 0,
    *,
    taps: Sequence[str] | None = None,
    normalization: str = "imagenet",
    check_hash: bool = True,
) -> TapBackbone:
    """Build backbone ``name`` in eval mode, cut after its last tap.

    Args:
        name: one of ``available_backbones()``.
        weights: "imagenet" (installed pretrained file, see ``WeightsNotFoundError``), "random"
            (torchvision-style init seeded by ``seed``; the global RNG is left untouched) or a
            path to a state-dict file in the original key layout (loaded with strict=True).
        taps: tap names (see ``available_taps(name)``); default: the end of the last stride-8
            and of the last stride-16 stage. Returned in forward order.
        normalization: "imagenet" (default) or "tf" (EfficientNet's TensorFlow preprocessing).
        check_hash: verify the sha256 prefix in the weight file's name (torchvision convention).

    Raises:
        InvalidInputError: unknown name/tap/normalisation, a file that does not load strictly,
            or a sha256 mismatch.
        WeightsNotFoundError: "imagenet" weights not installed; the message says what to do.
    """
    _check_name(name)
    if normalization not in NORMALIZATIONS:
        raise InvalidInputError(
            f"unknown normalization {normalization!r}; available: {', '.join(NORMALIZATIONS)}"
        )
    make, default_taps = _REGISTRY[name]
    points = available_taps(name)
    order = {p.name: i for i, p in enumerate(points)}
    taps = tuple(default_taps if taps is None else taps)
    if not taps:
        raise InvalidInputError("taps must name at least one tap point")
    unknown = [t for t in taps if t not in order]
    if unknown:
        raise InvalidInputError(
            f"unknown taps {unknown} for {name!r}; available: "
            + ", ".join(f"{p.name} (stride {p.stride}, {p.channels} ch)" for p in points)
        )
    taps = tuple(sorted(set(taps), key=order.__getitem__))

    weights_file = weights_sha = None
    if isinstance(weights, str) and weights == "random":
        # Cut first, then allocate and initialise only what is kept (WRN50's layer4 alone is
        # 15M parameters); the seed makes it reproducible without touching the global RNG.
        with torch.device("meta"):
            body = make()
        body.truncate(taps[-1])
        body = body.to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _init_random(body)
        source = "random"
    else:
        if isinstance(weights, str) and weights == "imagenet":
            path = _weights.find_imagenet_weights(name)
            source = "imagenet"
        elif isinstance(weights, (str, os.PathLike)):
            path = Path(weights).expanduser()
            source = str(path)
        else:
            raise InvalidInputError(
                f"weights must be 'imagenet', 'random' or a path, got {type(weights).__name__}"
            )
        sd, weights_sha = _weights.read_state_dict(path, check_hash=check_hash)
        # Built on the meta device and assigned the loaded tensors: no wasted random init.
        with torch.device("meta"):
            body = make()
        try:
            body.load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as e:
            raise InvalidInputError(
                f"weight file {path} does not match the {name!r} architecture: {e}"
            ) from e
        body = body.float()
        weights_file = str(path)
        log.info("loaded %s weights from %s", name, path)
        body.truncate(taps[-1])
    body.eval()
    backbone = TapBackbone(
        name, body, taps, normalization=normalization, weights=source, seed=seed,
        weights_file=weights_file, weights_sha256=weights_sha,
    )
    backbone.eval()
    backbone.requires_grad_(False)
    return backbone
