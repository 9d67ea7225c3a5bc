"""Image decoding, input validation and dataset discovery (numpy + pillow only)."""

from __future__ import annotations

from .dataset import DEFAULT_EXTENSIONS, Dataset, Sample, load_dataset, load_test_masks
from .image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    as_image_array,
    decode_image,
    image_size,
    read_image,
    read_mask,
)

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "Dataset",
    "Sample",
    "as_image_array",
    "decode_image",
    "image_size",
    "load_dataset",
    "load_test_masks",
    "read_image",
    "read_mask",
]
