"""Anomaly-detection methods: nominal features -> model state; features -> patch and image scores.

numpy + ``npad_edge.search`` only (no torch): the edge runtime imports this package.

    >>> m = get_method("patchcore", coreset=0.1)
    >>> m.fit(train_features)                      # (N, D, h, w) float32
    >>> patch_scores, image_scores = m.score(test_features)
    >>> m2 = type(m).from_state(m.settings, m.state_arrays())
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .base import AnomalyMethod, check_features
from .npad import NPad
from .patchcore import PatchCore

__all__ = ["AnomalyMethod", "PatchCore", "NPad", "get_method", "method_class", "available_methods",
           "check_features"]

_REGISTRY: dict[str, type[AnomalyMethod]] = {PatchCore.name: PatchCore, NPad.name: NPad}


def available_methods() -> list[str]:
    """Names accepted by ``get_method``."""
    return sorted(_REGISTRY)


def method_class(name: str) -> type[AnomalyMethod]:
    """The class registered under ``name`` (for ``from_state``); InvalidInputError listing valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidInputError(f"unknown method {name!r}; available methods: {available_methods()}") from None


def get_method(name: str, **settings: Any) -> AnomalyMethod:
    """A new, unfitted method; unknown settings raise InvalidInputError listing the valid ones."""
    return method_class(name)(**settings)
