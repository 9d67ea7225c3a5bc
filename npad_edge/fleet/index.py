"""The fleet folder and its index: one model directory per part type, one JSON file that lists
them. Standard library + numpy only: readable without Ray, torch or OpenVINO.

Layout::

    FLEET/
      fleet.json                 the index (format "npad-edge-fleet", format_version 1)
      models/<part>/             a complete model directory (npad_edge.artifact), exported or fitted
      .work/                     fit-time scratch (fitted models before export); safe to delete

``fleet.json``::

    format           "npad-edge-fleet"
    format_version   1
    updated          ISO 8601 UTC of the last write
    settings         {method, image_size, export, ...}  the fit settings of the last fit-many run
    parts            {part_id: entry}

    entry:
      status         "complete" | "failed"
      method         "patchcore" | "npad"
      model          "models/<part>" (relative to FLEET), null when failed
      manifest_sha256  sha256 of the model's manifest.json (it hashes every other file)
      kind, precision  of the model ("exported"/"fitted", "fp32"/"fp16"/"int8")
      backbone_group sha256 of what makes a backbone IR shareable (backbone, weights, taps,
                     input size, precision); parts of one group hold byte-identical IR files
      data_sha256    sha256 of the training images (names and contents)
      config_sha256  sha256 of the fit settings that change the model
      data_files     {relative name: [size, mtime_ns, sha256]}: lets a re-run skip re-reading
                     unchanged files (like git's index)
      metrics        {threshold, n_train_images, state_bytes, ...}
      fit_seconds    wall time of this part's fit (+ export) in its task
      error          one line, when failed
      updated        ISO 8601 UTC

The index is rewritten whole, atomically (temporary file, fsync, rename, fsync of the folder),
after every part that finishes, so a killed fit loses at most the parts still running.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidInputError, ModelFormatError

__all__ = ["INDEX_NAME", "FORMAT", "FORMAT_VERSION", "FleetIndex", "read_index", "write_index",
           "check_part_id", "train_folder", "hash_files", "MODELS_DIR", "WORK_DIR"]

INDEX_NAME = "fleet.json"
FORMAT = "npad-edge-fleet"
FORMAT_VERSION = 1
MODELS_DIR = "models"
WORK_DIR = ".work"
STATUSES = ("complete", "failed")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_INDEX_BYTES = 64 << 20


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_part_id(part: Any) -> str:
    """A part id is a folder name: letters, digits, '.', '_', '-', at most 128, not starting
    with '.' (so it is safe in a path and in a URL). Raises InvalidInputError otherwise."""
    if not isinstance(part, str) or not _PART_RE.match(part):
        raise InvalidInputError(f"part id must match {_PART_RE.pattern} (a folder name without spaces), got {part!r}")
    return part


@dataclass
class FleetIndex:
    """The parsed ``fleet.json``. ``parts``: part id -> entry dict (see the module docstring)."""

    root: Path
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    updated: str = ""

    def complete(self) -> dict[str, dict[str, Any]]:
        """The parts with a usable model, by id."""
        return {k: v for k, v in self.parts.items() if v.get("status") == "complete"}

    def failed(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.parts.items() if v.get("status") == "failed"}

    def model_path(self, part: str) -> Path:
        """The model directory of a complete part. Raises KeyError for an unknown or failed part."""
        entry = self.parts[part]
        if entry.get("status") != "complete" or not entry.get("model"):
            raise KeyError(part)
        rel = Path(entry["model"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelFormatError(f"{self.root / INDEX_NAME}: part {part!r} model path {entry['model']!r} "
                                   "must stay inside the fleet folder")
        return self.root / rel

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "updated": self.updated,
                "settings": self.settings, "parts": {k: self.parts[k] for k in sorted(self.parts)}}


def read_index(fleet: str | os.PathLike) -> FleetIndex:
    """Read ``FLEET/fleet.json``; an absent index is an empty fleet. Raises ModelFormatError for
    a malformed index and for one written by a newer format version."""
    root = Path(os.fspath(fleet))
    path = root / INDEX_NAME
    if not path.exists():
        return FleetIndex(root=root)
    try:
        if path.stat().st_size > _MAX_INDEX_BYTES:
            raise ModelFormatError(f"{path}: larger than {_MAX_INDEX_BYTES >> 20} MiB, not a fleet index")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a fleet index (expected format {FORMAT!r})")
    ver = data.get("format_version")
    if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
        raise ModelFormatError(f"{path}: format_version must be a positive int, found {ver!r}")
    if ver > FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format_version {ver} is newer than this npad_edge reads "
                               f"({FORMAT_VERSION}); upgrade npad_edge")
    parts = data.get("parts")
    if not isinstance(parts, dict):
        raise ModelFormatError(f"{path}: 'parts' must be an object")
    for k, v in parts.items():
        try:
            check_part_id(k)
        except InvalidInputError as e:
            raise ModelFormatError(f"{path}: {e}") from None
        if not isinstance(v, dict) or v.get("status") not in STATUSES:
            raise ModelFormatError(f"{path}: part {k!r} must be an object with status in {STATUSES}")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    return FleetIndex(root=root, parts=dict(parts), settings=settings, updated=str(data.get("updated", "")))


def write_index(index: FleetIndex) -> Path:
    """Write ``index`` to ``<root>/fleet.json`` atomically; returns the path."""
    index.root.mkdir(parents=True, exist_ok=True)
    index.updated = utc_now()
    text = json.dumps(index.to_dict(), indent=1, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_text(index.root / INDEX_NAME, text)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary sibling + fsync + rename (+ fsync of the folder):
    a reader sees the old file or the new one, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    return path


# --------------------------------------------------------------------------- data hashes


def train_folder(part_dir: Path) -> Path:
    """The folder holding a part's good training images, by the rules of
    ``npad_edge.data.load_dataset``: ``train/good``, ``train``, ``good`` or the folder itself."""
    for rel in ("train/good", "train", "good"):
        if (part_dir / rel).is_dir():
            return part_dir / rel
    return part_dir


def hash_files(folder: Path, known: Mapping[str, Any] | None = None) -> tuple[str, dict[str, list]]:
    """sha256 over the names and contents of the regular, non-hidden files directly in ``folder``.

    ``known``: ``{name: [size, mtime_ns, sha256]}`` from a previous run; a file whose size and
    mtime are unchanged is not read again. Returns ``(digest, {name: [size, mtime_ns, sha256]})``.
    """
    known = known or {}
    files: dict[str, list] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise InvalidInputError(f"{folder}: cannot list the folder ({e.strerror})") from None
    total = hashlib.sha256()
    for e in entries:
        if e.name.startswith(".") or not e.is_file(follow_symlinks=True):
            continue
        st = e.stat()
        prev = known.get(e.name)
        if isinstance(prev, list) and len(prev) == 3 and prev[0] == st.st_size and prev[1] == st.st_mtime_ns:
            digest = str(prev[2])
        else:
            h = hashlib.sha256()
            with open(e.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
        files[e.name] = [st.st_size, st.st_mtime_ns, digest]
        total.update(f"{e.name}\0{digest}\n".encode())
    return total.hexdigest(), files


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
