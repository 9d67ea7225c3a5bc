"""The exception hierarchy of npad_edge: everything raised on purpose derives from NpadError."""

from __future__ import annotations

__all__ = [
    "NpadError",
    "InvalidInputError",
    "DataError",
    "ImageDecodeError",
    "ModelFormatError",
    "ModelVersionError",
    "ModelExistsError",
    "WeightsNotFoundError",
    "DeviceError",
]


class NpadError(Exception):
    """Base class of every error npad_edge raises deliberately."""


class InvalidInputError(NpadError, ValueError):
    """An argument has the wrong dtype, shape, layout or value (also a ValueError)."""


class DataError(NpadError, ValueError):
    """A dataset folder is missing, empty, inconsistent or holds unreadable files."""


class ImageDecodeError(DataError):
    """An image file is empty, truncated, corrupt, too large or of an unsupported kind."""


class ModelFormatError(NpadError):
    """A saved model directory is missing files, has mismatching hashes or a malformed manifest."""


class ModelVersionError(ModelFormatError):
    """A saved model was written by a newer, unknown format version."""


class ModelExistsError(ModelFormatError, FileExistsError):
    """A model would be written over an existing one without ``overwrite=True`` / ``--overwrite``."""


class WeightsNotFoundError(NpadError, FileNotFoundError):
    """Pretrained backbone weights are not installed; the message says what to install."""


class DeviceError(NpadError, ValueError):
    """An inference device that does not exist here was requested."""
