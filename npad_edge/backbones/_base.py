"""What every architecture in this package provides: named tap points and truncation.

An architecture is an ``nn.Module`` whose submodule names reproduce the key layout of the
weight files it loads (so ``load_state_dict(strict=True)`` works), plus three methods:

- ``tap_points()``: the points whose output can be tapped, in forward order;
- ``sequence()``: the forward pass as a list of ``(callable, tap name or None)`` steps;
- ``truncate(last_tap)``: delete every module that runs after ``last_tap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

Step = tuple[Callable[[torch.Tensor], torch.Tensor], "str | None"]


@dataclass(frozen=True)
class TapPoint:
    """A point of the network whose output is a feature map: name, stride, channels."""

    name: str
    stride: int
    channels: int


class TapNet(nn.Module):
    """Base class of the architectures: runs ``sequence()`` and stops at the last tap."""

    def tap_points(self) -> list[TapPoint]:
        raise NotImplementedError

    def sequence(self) -> list[Step]:
        raise NotImplementedError

    def truncate(self, last_tap: str) -> None:
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) of the untruncated network (a sanity check of the weights)."""
        raise NotImplementedError

    def forward_taps(self, x: torch.Tensor, taps: Sequence[str]) -> list[torch.Tensor]:
        """Run the network up to the last of ``taps``; return their outputs in ``taps`` order."""
        wanted = set(taps)
        found: dict[str, torch.Tensor] = {}
        for fn, tap in self.sequence():
            x = fn(x)
            if tap is not None and tap in wanted:
                found[tap] = x
                if len(found) == len(wanted):
                    break
        missing = wanted.difference(found)
        if missing:
            # Only reachable when a tap was asked for after truncate() removed it.
            raise RuntimeError(
                f"taps {sorted(missing)} are not computed by this (truncated) network"
            )
        return [found[t] for t in taps]


def tap_index(points: Sequence[TapPoint], name: str) -> int:
    for i, p in enumerate(points):
        if p.name == name:
            return i
    raise KeyError(name)
