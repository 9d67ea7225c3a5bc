"""ResNet18 and Wide-ResNet50-2 in plain torch, key-compatible with torchvision's checkpoints
(``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``fc``). Taps: ``stem`` (after the max-pool,
stride 4, 64), ``layer1`` (4), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import Step, TapNet, TapPoint, tap_index


def _conv3x3(i: int, o: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 base_width: int = 64):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)  # stride on the 3x3 (torchvision "V1.5")
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


VARIANTS: dict[str, tuple[type[nn.Module], list[int], int]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 64),
    "wide_resnet50_2": (Bottleneck, [3, 4, 6, 3], 128),
}


class ResNet(TapNet):
    def __init__(self, variant: str, num_classes: int = 1000):
        super().__init__()
        block, layers, base_width = VARIANTS[variant]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        points = [TapPoint("stem", 4, 64)]
        inplanes, stride_total = 64, 4
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    _conv1x1(inplanes, planes * block.expansion, stride),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            blocks = [block(inplanes, planes, stride, downsample, base_width)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes, 1, None, base_width) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            stride_total *= stride
            points.append(TapPoint(f"layer{i + 1}", stride_total, inplanes))
        self.fc = nn.Linear(inplanes, num_classes)
        self._points = points

    def tap_points(self) -> list[TapPoint]:
        return list(self._points)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def sequence(self) -> list[Step]:
        steps: list[Step] = [(self._stem, "stem")]
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}", None)
            if layer is not None:
                steps.append((layer, f"layer{i}"))
        return steps

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        for fn, _ in self.sequence():
            x = fn(x)
        return self.fc(x.mean(dim=(2, 3)))

    def truncate(self, last_tap: str) -> None:
        idx = tap_index(self._points, last_tap)
        del self.fc
        for p in self._points[idx + 1 :]:
            delattr(self, p.name)
        self._points = self._points[: idx + 1]
