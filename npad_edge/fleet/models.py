"""Many parts in one process: Detectors loaded on demand, LRU-evicted, one compiled backbone per
backbone group. No Ray here: the Serve replicas wrap a :class:`PartModels`, and it works on its own.

    models = PartModels("fleet", max_resident=32, threads=1)
    pred = models.predict("bottle", image)      # loads bottle's Detector on first use
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from . import index as fx

__all__ = ["PartModels", "UnknownPartError"]

log = logging.getLogger(__name__)


class UnknownPartError(InvalidInputError, KeyError):
    """A part id that the fleet index does not list as complete."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PartModels:
    """Detectors of a fleet's parts, at most ``max_resident`` loaded at once (least recently used
    is evicted), sharing compiled backbones through one ``CompiledModelCache``.

    Args:
        fleet: the fleet folder (its ``fleet.json`` is read here and on :meth:`reload`).
        max_resident: bound on loaded Detectors.
        device, threads, hint: passed to every ``Detector``.
        share_backbones: False gives each Detector its own compiled backbone (for comparison).
    """

    def __init__(self, fleet: str | os.PathLike, *, max_resident: int = 32, device: str = "CPU",
                 threads: int | None = None, hint: str = "latency", share_backbones: bool = True) -> None:
        if isinstance(max_resident, bool) or not isinstance(max_resident, int) or max_resident < 1:
            raise InvalidInputError(f"max_resident must be a positive int, got {max_resident!r}")
        from ..runtime._openvino import CompiledModelCache

        self.root = Path(os.fspath(fleet))
        self.max_resident = max_resident
        self.device, self.threads, self.hint = device, threads, hint
        self.cache = CompiledModelCache() if share_backbones else None
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._resident: "OrderedDict[str, Any]" = OrderedDict()
        self.loads = 0
        self.evictions = 0
        self.reload()

    def reload(self) -> None:
        """Re-read the index (parts fitted since start become servable)."""
        self.index = fx.read_index(self.root)

    def parts(self) -> dict[str, dict[str, Any]]:
        """The complete parts: id -> ``{method, precision, kind, threshold, input_size}``."""
        out = {}
        for k, e in self.index.complete().items():
            m = e.get("metrics") or {}
            out[k] = {"method": e.get("method"), "kind": e.get("kind"), "precision": e.get("precision"),
                      "threshold": m.get("threshold"), "input_size": m.get("input_size"),
                      "resident": k in self._resident}
        return out

    def resident(self) -> list[str]:
        """Loaded parts, least recently used first."""
        with self._lock:
            return list(self._resident)

    def get(self, part: str):
        """The Detector of ``part`` (loaded now if needed). Raises UnknownPartError."""
        with self._lock:
            det = self._resident.get(part)
            if det is not None:
                self._resident.move_to_end(part)
                return det
            if part not in self.index.complete():
                raise UnknownPartError(f"unknown part {part!r}; GET /v1/parts lists the {len(self.index.complete())} "
                                       "parts of this fleet")
            gate = self._loading.setdefault(part, threading.Lock())
        with gate:  # one load per part, other parts load meanwhile
            with self._lock:
                det = self._resident.get(part)
                if det is not None:
                    self._resident.move_to_end(part)
                    return det
            det = self._load(part)
            with self._lock:
                self._resident[part] = det
                self.loads += 1
                while len(self._resident) > self.max_resident:
                    old, _ = self._resident.popitem(last=False)
                    self.evictions += 1
                    log.info("evicted part %s (resident bound %d)", old, self.max_resident)
        return det

    def load(self, part: str):
        """A new Detector of ``part``, not kept here (a caller with its own cache, e.g. Ray Serve's
        multiplexing, holds it). Raises UnknownPartError, ModelFormatError."""
        if part not in self.index.complete():
            raise UnknownPartError(f"unknown part {part!r}; GET /v1/parts lists the {len(self.index.complete())} "
                                   "parts of this fleet")
        det = self._load(part)
        with self._lock:
            self.loads += 1
        return det

    def _load(self, part: str):
        from ..runtime.detector import Detector

        path = self.index.model_path(part)
        kwargs: dict[str, Any] = {"threads": self.threads, "hint": self.hint}
        if self.cache is not None:
            from .. import artifact

            if artifact.read_manifest(path).kind == "exported":
                kwargs["compiled_cache"] = self.cache
        return Detector.load(path, self.device, **kwargs)

    def predict(self, part: str, image: np.ndarray):
        return self.get(part).predict(image)

    def predict_batch(self, part: str, images: list[np.ndarray]):
        return self.get(part).predict_batch(images)
