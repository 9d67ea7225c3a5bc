"""Many part types, many cameras: fit a fleet of models with Ray and serve it with Ray Serve.

Optional extra ``fleet`` (``pip install 'npad-edge[fleet]'``: Ray Core + Ray Serve). The index and
the client need no Ray; nothing in ``npad_edge.runtime`` imports Ray.

- ``fit_many(data, fleet, FitSettings(...), address=...)``: one Ray task per part (``fit.py``).
- ``read_index(fleet)``: the fleet folder's ``fleet.json`` (``index.py``).
- ``PartModels(fleet)``: Detectors of many parts in one process, LRU-bounded, sharing compiled
  backbones (``models.py``).
- ``serve_fleet(fleet, ServeSettings(...))``: the HTTP service (``serve.py``).
- ``Client(url)``: its Python client (``client.py``).

See docs/fleet.md.
"""

from __future__ import annotations

from .client import Client, FleetHTTPError
from .index import FleetIndex, read_index

__all__ = ["Client", "FleetHTTPError", "FleetIndex", "read_index", "FitSettings", "FitResult", "fit_many",
           "discover_parts", "connect", "PartModels", "ServeSettings", "serve_fleet", "build_app"]


def __getattr__(name: str):
    # Lazy: importing the package (for the index or the client) never imports Ray or OpenVINO.
    if name in ("FitSettings", "FitResult", "fit_many", "discover_parts", "connect"):
        from . import fit

        return getattr(fit, name)
    if name == "PartModels":
        from .models import PartModels

        return PartModels
    if name in ("ServeSettings", "serve_fleet", "build_app"):
        from . import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'npad_edge.fleet' has no attribute {name!r}")
