"""npad_edge: industrial visual anomaly detection (PatchCore, N-pad) on edge hardware.

The runtime (``Detector``) needs only numpy, OpenVINO and the compiled core; fitting and
export (``npad_edge.methods``, ``npad_edge.backbones``, ``npad_edge.export``) need torch.
"""

from __future__ import annotations

from .errors import (  # noqa: F401
    ModelExistsError,
    DataError,
    DeviceError,
    ImageDecodeError,
    InvalidInputError,
    ModelFormatError,
    ModelVersionError,
    NpadError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import npad_edge` stays cheap and never pulls OpenVINO for fit-only use.
    if name in ("Detector", "Prediction"):
        from .runtime import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'npad_edge' has no attribute {name!r}")
