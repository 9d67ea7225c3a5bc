"""Shared fixtures: paths to the real data in ../shared, markers, thread control."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NPAD_SHARED", REPO.parent / "shared")).resolve()
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
TORCH_HUB = SHARED / "weights" / "torch_hub"

# torchvision-style weight lookup finds MobileNetV2 in the shared hub cache, as on a user's
# machine after a download.
if TORCH_HUB.is_dir():
    os.environ.setdefault("TORCH_HOME", str(TORCH_HUB))


@pytest.fixture(scope="session")
def bottle_dir() -> Path:
    if not BOTTLE.is_dir():
        pytest.skip(f"real MVTec AD bottle data not found at {BOTTLE}")
    return BOTTLE


@pytest.fixture(scope="session")
def torch_hub_dir() -> Path:
    if not TORCH_HUB.is_dir():
        pytest.skip(f"shared torch hub cache not found at {TORCH_HUB}")
    return TORCH_HUB


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's own SIGINT handler, and gets it back afterwards.

    A library started by an earlier test (Ray, in the fleet tests) can leave SIGINT ignored or
    handled process-wide; Ctrl-C tests in this process, and subprocesses that inherit an
    ignored SIGINT, would then never see KeyboardInterrupt (seen: a hung coreset test and a CLI
    fit that ran to completion after SIGINT in a full-suite run).
    """
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
