"""The edge runtime: ``Detector`` (OpenVINO backbone + C++ search), no torch, no NNCF.

See docs/runtime.md for the API, thresholds, threading and the async queue.
"""

from __future__ import annotations

from ._openvino import available_devices, check_device
from .detector import Detector, Prediction, check_image

__all__ = ["Detector", "Prediction", "available_devices", "check_device", "check_image"]
