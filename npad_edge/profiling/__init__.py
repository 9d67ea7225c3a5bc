"""Per-stage latency and throughput of a saved model on each device; environment info.

    from npad_edge.profiling import profile, info
    result = profile("bottle_int8", "mvtec/bottle/test/good", devices=("CPU", "GPU"), n=50)
    print("\\n".join(result["report"]))

Imports no torch unless the ``"CUDA"`` device is asked for (then the backbone runs in torch).
"""

from __future__ import annotations

from .profile import info, profile, stage_stats

__all__ = ["profile", "info", "stage_stats"]
