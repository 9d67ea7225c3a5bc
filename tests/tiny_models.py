"""Tiny models built from nothing: random-weight backbone, small generated images.

For tests that must run on a clean checkout (no ../shared data, no downloaded weights): an
EfficientNet-Lite0 cut after ``stage3`` (stride 8, 40 channels) with seeded random weights,
a 32x32 input (a 4x4 feature grid), PatchCore on 8 generated 32x32 images. Fitting and
exporting take about two seconds on 2 cores. Needs torch (fit/export time); the models it
writes run without torch.

Also the generator of the frozen ``tests/data/models/v1_exported_tiny`` (run once, never
again: ``python tests/tiny_models.py --frozen``; see tests/data/models/README.md).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
BACKBONE = "efficientnet_lite0"
TAPS = ["stage3"]


def write_images(root: Path, n: int = 10, size: int = 40, seed: int = 0) -> list[Path]:
    """``n`` seeded ``(size, size, 3) uint8`` smooth-plus-noise PNGs in ``root/train/good``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    d = Path(root) / "train" / "good"
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i in range(n):
        base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) + rng.integers(0, 40, (size, size, 3))
        p = d / f"{i:03d}.png"
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def sample_image(seed: int = 1, hw: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A seeded ``(H, W, 3) uint8`` image of another size than the model input."""
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def build_tiny(root: Path, *, method: str = "patchcore", export: bool = True) -> dict[str, Path]:
    """``{"fitted": path, "fp32": path}`` under ``root`` (fp32 only when ``export``)."""
    from npad_edge.pipeline import fit_model

    root = Path(root)
    images = write_images(root / "data")
    fitted = fit_model(root / "data", root / "fitted", method=method, backbone=BACKBONE, image_size=IMAGE_SIZE,
                       taps=TAPS, weights="random", train_paths=images, holdout=2, progress=False, threads=1,
                       method_settings={"coreset": 0.5} if method == "patchcore" else None)
    out = {"fitted": fitted}
    if export:
        from npad_edge.export import export_model

        out["fp32"] = export_model(fitted, root / "fp32", precision="fp32", progress=False)
    return out


def _write_frozen(dest: Path) -> None:
    """Write ``dest`` (an exported v1 model) and ``dest.with_name(dest.name + "_expected.npz")``."""
    from npad_edge import Detector

    with tempfile.TemporaryDirectory() as td:
        built = build_tiny(Path(td))
        shutil.copytree(built["fp32"], dest)
    image = sample_image()
    det = Detector.load(dest, "CPU", threads=1)
    p = det(image)
    np.savez(dest.with_name(dest.name + "_expected.npz"), image=image, score=np.float32(p.score),
             anomaly_map=p.anomaly_map, threshold=np.float32(det.threshold))
    print(json.dumps({"model": str(dest), "score": p.score, "threshold": det.threshold}))


if __name__ == "__main__":
    if sys.argv[1:] != ["--frozen"]:
        sys.exit("usage: python tests/tiny_models.py --frozen   (writes tests/data/models/v1_exported_tiny)")
    target = Path(__file__).resolve().parent / "data" / "models" / "v1_exported_tiny"
    if target.exists():
        sys.exit(f"{target} exists: frozen models are never regenerated")
    _write_frozen(target)
