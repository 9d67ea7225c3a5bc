"""Dataset discovery for the MVTec AD layout and a plain folder layout.

Layouts (checked in this order; ``<ext>`` is any of ``extensions``, case-insensitive)::

    MVTec AD                         plain folder
    <root>/train/good/*.<ext>        <root>/train/*.<ext>   or  <root>/good/*.<ext>
                                     or images directly in <root> (no test set)
    <root>/test/good/*.<ext>              (optional, same for both layouts)
    <root>/test/<defect_type>/*.<ext>     (optional)
    <root>/ground_truth/<defect_type>/<stem>_mask.<ext>  or  .../<stem>.<ext>   (optional)

Rules:

- Files starting with ``.`` (macOS ``._x.png`` resource forks, ``.DS_Store``) and files of other
  extensions are ignored; sub-folders of image folders are ignored. Order is deterministic:
  file names sorted; test samples ``good`` first, then defect types sorted by name.
- ``test/good`` images have label 0, every other ``test/<type>`` label 1 (the MVTec convention:
  every defect image has a non-empty mask).
- Data without any mask is normal (``has_masks`` False; pixel metrics are then ``None``). As
  soon as ``ground_truth/`` holds a mask, every defect image needs its mask.
- Structural problems (missing root, no training images, ``train/`` without ``good/`` while it
  has sub-folders, an empty folder, images directly in ``test/``) always raise
  :class:`~npad_edge.errors.DataError` naming the folder and the fix. Per-file problems
  (unreadable image or mask, mask of the wrong size, defect image without mask) raise too, or
  with ``on_error="skip"`` are logged as warnings, skipped and listed in ``Dataset.skipped``.
- ``verify``: ``"header"`` (default) opens every image and mask header (format, mode, size
  limit, mask size == image size) without decoding pixels: fast. ``"full"`` decodes everything
  (also catches truncated files). ``"none"`` only lists files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, InvalidInputError
from .image import DEFAULT_MAX_PIXELS, _mask_size, image_size, read_image, read_mask

__all__ = ["Sample", "Dataset", "load_dataset", "load_test_masks", "DEFAULT_EXTENSIONS"]

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One test image: ``label`` 0 (good) / 1 (anomalous), ``mask_path`` None when it has none."""

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None


@dataclass(frozen=True)
class Dataset:
    """A category: training (good) image paths and labelled test samples.

    ``layout`` is ``"mvtec"`` or ``"folder"``; ``skipped`` lists ``(path, reason)`` of files
    left out with ``on_error="skip"``.
    """

    name: str
    root: Path
    train: list[Path]
    test: list[Sample]
    has_masks: bool
    layout: str = "mvtec"
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """``(N_test,) int64`` test labels."""
        return np.array([s.label for s in self.test], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test} - {_GOOD})


def _norm_exts(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        raise InvalidInputError("extensions must be a sequence of suffixes like ('.png', '.jpg')")
    out = []
    for e in extensions:
        if not isinstance(e, str) or not e.startswith(".") or len(e) < 2:
            raise InvalidInputError(f"extension {e!r} must be a string like '.png'")
        out.append(e.lower())
    if not out:
        raise InvalidInputError("extensions must not be empty")
    return tuple(out)


def _images_in(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list folder: {e}") from e
    return [
        folder / e.name
        for e in entries
        if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in exts and e.is_file()
    ]


def _subdirs(folder: Path) -> list[Path]:
    return [folder / e.name for e in sorted(os.scandir(folder), key=lambda e: e.name)
            if e.is_dir() and not e.name.startswith(".")]


class _Collector:
    def __init__(self, on_error: str):
        self.on_error = on_error
        self.skipped: list[tuple[Path, str]] = []

    def fail(self, path: Path, err: Exception) -> None:
        if self.on_error == "raise":
            raise err
        logger.warning("skipping %s: %s", path, err)
        self.skipped.append((path, str(err)))


def _find_mask(folder: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    for base in (f"{stem}_mask", stem):
        for ext in exts:
            for cand in (folder / f"{base}{ext}", folder / f"{base}{ext.upper()}"):
                if cand.is_file():
                    return cand
    return None


def load_dataset(
    root: str | os.PathLike,
    *,
    on_error: str = "raise",
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    verify: str = "header",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Dataset:
    """Discover a dataset (see the module docstring for layouts and rules).

    Args:
        root: the category folder (e.g. ``.../mvtec_ad/bottle``) or a plain image folder.
        on_error: ``"raise"`` or ``"skip"`` (per-file problems are logged and skipped).
        extensions: accepted image suffixes, case-insensitive.
        verify: ``"header"``, ``"full"`` or ``"none"``.
        max_pixels: per-image pixel limit used while verifying.

    Raises:
        DataError: naming the file or folder and the fix.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if verify not in ("header", "full", "none"):
        raise InvalidInputError(f"verify must be 'header', 'full' or 'none', got {verify!r}")
    exts = _norm_exts(extensions)
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a folder")
    col = _Collector(on_error)
    ext_list = ", ".join(exts)

    # ---- training images
    train_dir = root / "train"
    if train_dir.is_dir():
        if (train_dir / _GOOD).is_dir():
            layout, train_src = "mvtec", train_dir / _GOOD
            stray = _images_in(train_dir, exts)
            if stray:
                logger.warning("%s: %d images directly in train/ ignored (using train/good/)", root, len(stray))
        elif _images_in(train_dir, exts):
            layout, train_src = "folder", train_dir
        else:
            subs = [p.name for p in _subdirs(train_dir)]
            found = f"sub-folders {subs}" if subs else "no images"
            raise DataError(
                f"{train_dir} has no 'good' sub-folder ({found}); the MVTec AD layout needs "
                f"train/good/ with the anomaly-free images ({ext_list}), a plain layout puts them "
                "directly in train/"
            )
    elif (root / _GOOD).is_dir():
        layout, train_src = "folder", root / _GOOD
    elif _images_in(root, exts):
        layout, train_src = "folder", root
    else:
        raise DataError(
            f"{root}: no training images found (extensions {ext_list}). Expected "
            "<root>/train/good/ (MVTec AD), <root>/train/, <root>/good/ or images directly in <root>"
        )
    train_all = _images_in(train_src, exts)
    if not train_all:
        raise DataError(f"{train_src} is empty: no {ext_list} images; put the anomaly-free training images there")

    hw_cache: dict[Path, tuple[int, int]] = {}

    def check_image(p: Path) -> bool:
        try:
            if verify == "header":
                hw_cache[p] = image_size(p, max_pixels=max_pixels)
            elif verify == "full":
                hw_cache[p] = read_image(p, max_pixels=max_pixels).shape[:2]
        except DataError as e:
            col.fail(p, e)
            return False
        return True

    train = [p for p in train_all if check_image(p)]
    if not train:
        raise DataError(f"{train_src}: no readable training image left after skipping bad files")

    # ---- test images
    test: list[Sample] = []
    test_dir = root / "test"
    type_dirs: list[Path] = []
    if train_src != root and test_dir.is_dir():
        loose = _images_in(test_dir, exts)
        if loose:
            raise DataError(
                f"{test_dir} holds images directly ({loose[0].name}, ...); their labels are unknown: "
                "move them into test/good/ or test/<defect_type>/"
            )
        type_dirs = _subdirs(test_dir)
        if not type_dirs:
            raise DataError(f"{test_dir} is empty: add test/good/ and test/<defect_type>/ folders or remove it")
        type_dirs.sort(key=lambda p: (p.name != _GOOD, p.name))
    elif train_src != root and test_dir.exists():
        raise DataError(f"{test_dir} is not a folder")

    # ---- masks
    gt_dir = root / "ground_truth"
    has_masks = False
    if type_dirs and gt_dir.is_dir():
        has_masks = any(_images_in(d, exts) for d in _subdirs(gt_dir) if d.name != _GOOD)
        if not has_masks:
            logger.info("%s holds no masks; pixel metrics will be unavailable", gt_dir)
        test_types = {d.name for d in type_dirs}
        for d in _subdirs(gt_dir):
            if d.name not in test_types and d.name != _GOOD:
                logger.warning("%s has no matching test/%s folder; ignored", d, d.name)

    for d in type_dirs:
        images = _images_in(d, exts)
        if not images:
            raise DataError(f"{d} is empty: no {ext_list} images; remove the folder or add images")
        is_good = d.name == _GOOD
        mask_dir = gt_dir / d.name
        if has_masks and not is_good and not mask_dir.is_dir():
            err = DataError(
                f"{mask_dir} is missing: the dataset has masks, so the defect images of "
                f"{d} need theirs (<stem>_mask.png)"
            )
            if on_error == "raise":
                raise err
        for p in images:
            if not check_image(p):
                continue
            mask_path = None
            if has_masks and not is_good:
                mask_path = _find_mask(mask_dir, p.stem, exts) if mask_dir.is_dir() else None
                if mask_path is None:
                    col.fail(p, DataError(
                        f"{p}: no mask found; expected {mask_dir / (p.stem + '_mask.png')} "
                        "(the dataset has masks, so every defect image needs one)"
                    ))
                    continue
                if verify != "none":
                    try:
                        if verify == "full":
                            read_mask(mask_path, hw_cache[p], max_pixels=max_pixels)
                        else:
                            mhw = _mask_size(mask_path, max_pixels)
                            if mhw != hw_cache[p]:
                                raise DataError(
                                    f"{mask_path}: mask is {mhw[0]} x {mhw[1]} (H x W) but its image "
                                    f"{p} is {hw_cache[p][0]} x {hw_cache[p][1]}; masks must have "
                                    "the image's size"
                                )
                    except DataError as e:
                        col.fail(mask_path, e)
                        continue
            test.append(Sample(path=p, label=0 if is_good else 1, defect_type=d.name, mask_path=mask_path))

    return Dataset(
        name=root.resolve().name,
        root=root,
        train=train,
        test=test,
        has_masks=has_masks,
        layout=layout,
        skipped=col.skipped,
    )


def load_test_masks(dataset: Dataset, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray] | None:
    """Ground truth of ``dataset.test`` in order: ``(H_i, W_i) bool`` per sample, at image size.

    Good samples (and defect samples without a mask) get all-False masks of their image's size.
    Returns ``None`` when the dataset has no masks (pixel metrics are then undefined).
    """
    if not dataset.has_masks:
        return None
    out = []
    for s in dataset.test:
        hw = image_size(s.path, max_pixels=max_pixels)
        if s.mask_path is None:
            out.append(np.zeros(hw, dtype=bool))
        else:
            out.append(read_mask(s.mask_path, hw, max_pixels=max_pixels))
    return out
