"""MobileNetV2 in plain torch, key-compatible with torchvision's ``mobilenet_v2-b0353104.pth``
(``features.N`` ..., ``classifier.1``). Taps are named after the ``features`` index:
``features.3`` (stride 4, 24), ``features.6`` (stride 8, 32), ``features.13`` (stride 16, 96),
``features.17`` (stride 32, 320), ``features.18`` (stride 32, 1280).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import Step, TapNet, TapPoint, tap_index

# (expand ratio, out channels, repeats, first stride), as in torchvision.
_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class _ConvBNReLU6(nn.Sequential):
    # Children 0 (conv) and 1 (bn) give torchvision's Conv2dNormActivation keys.
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=False),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(TapNet):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU6(3, 32, stride=2)]
        points = [TapPoint("features.0", 2, 32)]
        in_ch, stride_total = 32, 2
        for t, c, n, s in _SETTING:
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidual(in_ch, c, stride, t))
                stride_total *= stride
                points.append(TapPoint(f"features.{len(layers) - 1}", stride_total, c))
                in_ch = c
        layers.append(_ConvBNReLU6(in_ch, 1280, kernel=1))
        points.append(TapPoint(f"features.{len(layers) - 1}", stride_total, 1280))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self._points = points

    def tap_points(self) -> list[TapPoint]:
        return list(self._points)

    def sequence(self) -> list[Step]:
        return [(m, f"features.{i}") for i, m in enumerate(self.features)]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))

    def truncate(self, last_tap: str) -> None:
        idx = tap_index(self._points, last_tap)
        del self.classifier
        self.features = nn.Sequential(*list(self.features)[: idx + 1])
        self._points = self._points[: idx + 1]
