"""Writing, reading, verifying and describing model directories (numpy + standard library)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import shutil
import stat
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from ..errors import InvalidInputError, ModelExistsError, ModelFormatError
from .manifest import (
    FORMAT_VERSION,
    ArrayEntry,
    FileEntry,
    Manifest,
    check_array_name,
    check_rel_path,
    _check_no_collisions,
)
from .npy import npy_from_buffer, read_npy

__all__ = [
    "MANIFEST_NAME",
    "ModelExistsError",
    "LoadedModel",
    "write_model",
    "read_manifest",
    "load_model",
    "sha256_file",
    "describe",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ARRAYS_DIR = "arrays"
_MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]



# --------------------------------------------------------------------------- small helpers


def sha256_file(path: PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2; False where the system or file system does not support it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux); False if unsupported here."""
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _move_new(src: Path, dst: Path) -> None:
    """Rename ``src`` to a ``dst`` that does not exist, never replacing one created meanwhile."""
    msg = f"{dst} appeared while the model was being written; pass overwrite=True (--overwrite) to replace it"
    try:
        if _renameat2(src, dst, _RENAME_NOREPLACE):
            return
        if os.path.lexists(dst):
            raise ModelExistsError(msg)
        _rename(src, dst)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as e:
        if isinstance(e, ModelExistsError):
            raise
        raise ModelExistsError(msg) from None
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:
            raise ModelExistsError(msg) from None
        raise


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / MANIFEST_NAME).is_file()


# --------------------------------------------------------------------------- write


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    if not isinstance(arrays, Mapping):
        raise InvalidInputError(f"arrays must be a dict of name -> numpy array, got {type(arrays).__name__}")
    for name, arr in arrays.items():
        try:
            check_array_name(name, "array name")
        except ModelFormatError as e:
            raise InvalidInputError(str(e).replace("manifest: ", "")) from None
        if not isinstance(arr, np.ndarray):
            raise InvalidInputError(f"array {name!r} must be a numpy ndarray, got {type(arr).__name__}")
        if arr.dtype.hasobject or arr.dtype.kind not in "biufcSU":
            raise InvalidInputError(
                f"array {name!r} has dtype {arr.dtype}; object, structured and datetime arrays are refused "
                "(models are stored without pickle)")
        if arr.ndim > 32:
            raise InvalidInputError(f"array {name!r} has {arr.ndim} dimensions; at most 32")
    try:
        _check_no_collisions([f"{ARRAYS_DIR}/{n}.npy" for n in arrays], "arrays")
    except ModelFormatError as e:
        raise InvalidInputError(str(e).replace("manifest: ", "")) from None


def _check_files(files: Mapping[str, Union[PathLike, bytes]]) -> None:
    if not isinstance(files, Mapping):
        raise InvalidInputError(f"files must be a dict of relative path -> Path or bytes, got {type(files).__name__}")
    for rel, src in files.items():
        try:
            check_rel_path(rel, "file path")
        except ModelFormatError as e:
            raise InvalidInputError(str(e).replace("manifest: ", "")) from None
        if rel.split("/")[0].lower() == ARRAYS_DIR:
            raise InvalidInputError(f"file path {rel!r}: '{ARRAYS_DIR}/' is reserved for the arrays")
        if isinstance(src, (bytes, bytearray, memoryview)):
            continue
        if not isinstance(src, (str, os.PathLike)):
            raise InvalidInputError(f"file {rel!r}: source must be a path or bytes, got {type(src).__name__}")
        if not Path(src).is_file():
            raise InvalidInputError(f"file {rel!r}: source {src} is not a file")
    try:
        _check_no_collisions(list(files), "files")
    except ModelFormatError as e:
        raise InvalidInputError(str(e).replace("manifest: ", "")) from None


def write_model(
    dest: PathLike,
    manifest: Union[Manifest, dict],
    arrays: Mapping[str, np.ndarray],
    files: Optional[Mapping[str, Union[PathLike, bytes]]] = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model directory atomically and return its path.

    ``manifest``: a :class:`Manifest` or dict (``kind``, ``backbone``, ``preprocess``,
    ``method``, ``threshold`` required; ``files``/``arrays`` entries are computed here and
    replace any given). ``arrays``: name -> ndarray, saved as ``arrays/<name>.npy``
    (C-contiguous, no pickle). ``files``: relative path -> source Path or bytes, copied in
    (e.g. ``{"backbone.xml": xml_path, "backbone.bin": bin_path}``).

    Everything is written to a temporary sibling directory and fsynced, the manifest last,
    then renamed into place. With ``overwrite`` an existing model is swapped out atomically
    (Linux ``renameat2``) or renamed aside first and removed only once the new one is in
    place. An error or interrupt at any point leaves ``dest`` either untouched or complete.

    Raises ModelExistsError (a ModelFormatError and FileExistsError) when ``dest`` exists and
    ``overwrite`` is False, InvalidInputError for bad arrays/files, ModelFormatError for a
    bad manifest.
    """
    dest = Path(os.path.abspath(os.fspath(dest)))
    files = dict(files or {})
    m = Manifest.for_writing(manifest)
    _check_arrays(arrays)
    _check_files(files)
    if os.path.lexists(dest):
        if not overwrite:
            raise ModelExistsError(f"{dest} already exists; pass overwrite=True (--overwrite) to replace it")
        if not _is_model_dir(dest):
            raise ModelExistsError(
                f"refusing to overwrite {dest}: it is not an npad_edge model directory "
                f"({'a symbolic link' if dest.is_symlink() else 'no ' + MANIFEST_NAME}); remove it yourself")
    dest.parent.mkdir(parents=True, exist_ok=True)

    tmp = _make_temp_dir(dest)
    try:
        entries_files: Dict[str, FileEntry] = {}
        entries_arrays: Dict[str, ArrayEntry] = {}
        (tmp / ARRAYS_DIR).mkdir()
        for name, arr in arrays.items():
            rel = f"{ARRAYS_DIR}/{name}.npy"
            if not arr.flags.c_contiguous:  # (not ascontiguousarray: it turns 0-d into 1-d)
                arr = arr.copy(order="C")
            with open(tmp / rel, "wb") as f:
                np.save(f, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            entries_files[rel] = _file_entry(tmp / rel)
            entries_arrays[name] = ArrayEntry(file=rel, dtype=arr.dtype.str, shape=list(arr.shape))
        for rel, src in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, (bytes, bytearray, memoryview)):
                with open(target, "wb") as f:
                    f.write(src)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                shutil.copyfile(src, target)
                _fsync_file(target)
            entries_files[rel] = _file_entry(target)
        m.files = dict(sorted(entries_files.items()))
        m.arrays = entries_arrays
        m.check_consistency()
        text = m.to_json()
        Manifest.from_json(text)  # what we write must read back
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for d in sorted({(tmp / r).parent for r in entries_files} | {tmp}, key=lambda p: -len(p.parts)):
            _fsync_dir(d)
        _install(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(dest.parent)
    log.info("wrote model %s (%d arrays, %d files)", dest, len(m.arrays), len(m.files))
    return dest


def _make_temp_dir(dest: Path) -> Path:
    # Not tempfile.mkdtemp: its 0700 mode would be kept by the renamed model directory, and
    # camera software often runs as another user. os.mkdir honours the umask.
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            os.mkdir(tmp)
            return tmp
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary directory next to {dest}")


def _file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def _install(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``dest``; on return ``tmp`` no longer holds a model."""
    if not os.path.lexists(dest):
        _move_new(tmp, dest)
        return
    if not overwrite:  # appeared while writing
        raise ModelExistsError(f"{dest} already exists; pass overwrite=True (--overwrite) to replace it")
    if not _is_model_dir(dest):
        raise ModelExistsError(f"refusing to overwrite {dest}: it is not an npad_edge model directory")
    if _exchange(tmp, dest):
        # tmp now holds the old model; removing it is cleanup, not correctness.
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    _rename(dest, aside)
    try:
        _rename(tmp, dest)
    except BaseException:
        # Put the old model back: never leave dest empty because of us.
        if not os.path.lexists(dest):
            _rename(aside, dest)
        raise
    try:
        shutil.rmtree(aside)
    except OSError as e:
        log.warning("new model is in place at %s but the old one could not be removed from %s: %s", dest, aside, e)


# --------------------------------------------------------------------------- read


def _model_root(path: PathLike) -> Path:
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise ModelFormatError(f"model path must be a str or Path, got {type(path).__name__}") from None
    if not os.path.lexists(p):
        raise ModelFormatError(f"{p} is not an npad_edge model directory (it does not exist)")
    if not p.is_dir():
        raise ModelFormatError(f"{p} is not an npad_edge model directory (it is a file, not a directory)")
    if not os.path.lexists(p / MANIFEST_NAME):
        raise ModelFormatError(f"{p} is not an npad_edge model directory (no {MANIFEST_NAME})")
    return p


def _inside(root: Path, rel: str, what: str) -> Path:
    """``root/rel`` resolved, refusing anything (symlinks included) that leaves ``root``."""
    if rel != MANIFEST_NAME:
        check_rel_path(rel, what)  # already validated in the manifest; defence in depth
    try:
        real_root = root.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop (Python < 3.13)
        raise ModelFormatError(f"{root}: {what} {rel!r} cannot be resolved: {e}") from None
    try:
        target.relative_to(real_root)
    except ValueError:
        raise ModelFormatError(f"{root}: {what} {rel!r} resolves outside the model directory ({target}); refused") from None
    return target


def _regular_file_size(path: Path, root: Path, rel: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{root}: file {rel!r} listed in the manifest is missing") from None
    except OSError as e:
        raise ModelFormatError(f"{root}: file {rel!r} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{root}: {rel!r} is not a regular file")
    return st.st_size


def read_manifest(path: PathLike) -> Manifest:
    """Read and validate only ``manifest.json`` of a model directory (no arrays are read).

    Raises ModelFormatError (not a model directory, bad JSON, wrong types, unknown keys, wrong
    format) or ModelVersionError (written by a newer npad_edge). Older format versions are
    migrated to the current one.
    """
    root = _model_root(path)
    mpath = _inside(root, MANIFEST_NAME, "manifest")
    size = _regular_file_size(mpath, root, MANIFEST_NAME)
    if size > _MAX_MANIFEST_BYTES:
        raise ModelFormatError(f"{root}: {MANIFEST_NAME} is {size} bytes, more than {_MAX_MANIFEST_BYTES}; refused")
    try:
        raw = mpath.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{root}: cannot read {MANIFEST_NAME}: {e.strerror}") from None
    try:
        return Manifest.from_json(raw)
    except ModelFormatError as e:
        # Keep the subclass (ModelVersionError) and add where it happened.
        raise type(e)(f"{root}: {e}") from None


@dataclass
class LoadedModel:
    """A verified model: its directory, manifest, method-state arrays and the bytes of its
    other files (e.g. the IR), exactly the bytes that were hashed."""

    root: Path
    manifest: Manifest
    arrays: Dict[str, np.ndarray]
    data: Dict[str, bytes] = field(default_factory=dict, repr=False)

    def file_path(self, name: str) -> Path:
        """Path of a file listed in the manifest (e.g. ``"backbone.xml"``), inside ``root``.

        Reading the path again reads what is on disk now, not what was verified: use
        :meth:`file_bytes` for that."""
        if name not in self.manifest.files:
            raise ModelFormatError(
                f"{self.root}: the model has no file {name!r} (files: {', '.join(self.manifest.files) or 'none'})")
        return _inside(self.root, name, "file")

    def file_bytes(self, name: str) -> bytes:
        """The content of a listed non-array file (e.g. ``"backbone.bin"``) as read, sized and
        (with ``verify``) hashed by :func:`load_model`: one read, so a file replaced on disk
        after the check cannot be what the caller parses."""
        if name not in self.data:
            self.file_path(name)  # the error naming the files
            raise ModelFormatError(f"{self.root}: file {name!r} is an array file; use .arrays")
        return self.data[name]


def _open_listed(p: Path, root: Path, rel: str, expect_bytes: int):
    """Open a listed file for reading; check, on the open file, that it is regular and sized
    as the manifest says."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not block the open (no effect on
        # regular files); the type is checked on the open file just below.
        fp = os.fdopen(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)), "rb")
    except FileNotFoundError:
        raise ModelFormatError(f"{root}: file {rel!r} listed in the manifest is missing") from None
    except OSError as e:
        raise ModelFormatError(f"{root}: file {rel!r} cannot be read: {e.strerror}") from None
    st = os.fstat(fp.fileno())
    if not stat.S_ISREG(st.st_mode):
        fp.close()
        raise ModelFormatError(f"{root}: {rel!r} is not a regular file")
    if st.st_size != expect_bytes:
        fp.close()
        raise ModelFormatError(
            f"{root}: file {rel!r} is {st.st_size} bytes, the manifest says {expect_bytes} (truncated or replaced)")
    return fp


def _check_digest(digest: str, entry: FileEntry, root: Path, rel: str) -> None:
    if digest != entry.sha256:
        raise ModelFormatError(
            f"{root}: file {rel!r} sha256 {digest[:12]}... does not match the manifest "
            f"{entry.sha256[:12]}... (modified, corrupted or swapped)")


def _read_listed(p: Path, root: Path, rel: str, entry: FileEntry, verify: bool) -> bytearray:
    """The whole file, read once into memory; its size and (``verify``) sha256 checked on
    those very bytes."""
    with _open_listed(p, root, rel, entry.bytes) as fp:
        buf = bytearray(entry.bytes)
        try:
            n = fp.readinto(buf)
            extra = fp.read(1)
        except OSError as e:
            raise ModelFormatError(f"{root}: file {rel!r} cannot be read: {e.strerror}") from None
    if n != entry.bytes or extra:
        raise ModelFormatError(f"{root}: file {rel!r} changed size while it was read (replaced?)")
    if verify:
        _check_digest(hashlib.sha256(buf).hexdigest(), entry, root, rel)
    return buf


def load_model(path: PathLike, *, verify: bool = True, mmap: bool = False) -> LoadedModel:
    """Load a model directory, checking it fully before trusting it.

    Every file listed in the manifest must exist inside the directory (no absolute paths,
    '..' or symlinks leading out) as a regular file of the listed size; with ``verify`` its
    sha256 must match too. Each file is read once and what is returned is parsed from the
    bytes that were checked (``LoadedModel.arrays`` and ``LoadedModel.file_bytes``), so a
    file swapped on disk between the check and the use cannot slip in. Each array's .npy
    header is checked against the manifest dtype and shape and against the file size.

    ``mmap=True`` returns read-only memory maps for the arrays instead of in-memory copies:
    the map is of the same open file that was sized and hashed (a rename over it afterwards
    does not reach the map), but, as with any memory map, bytes written into that file later
    show through. Raises ModelFormatError naming the file.
    """
    m = read_manifest(path)
    root = Path(os.fspath(path))
    array_files = {a.file for a in m.arrays.values()}
    for name, a in m.arrays.items():
        if a.file not in m.files:  # check_consistency already refuses this; keep it explicit
            raise ModelFormatError(f"{root}: array {name!r} file {a.file!r} is not hashed in the manifest")
    data: Dict[str, bytes] = {}
    raw_arrays: Dict[str, bytearray] = {}
    mapped: Dict[str, object] = {}
    try:
        for rel, entry in m.files.items():
            p = _inside(root, rel, "file")
            if mmap and rel in array_files:
                fp = _open_listed(p, root, rel, entry.bytes)
                mapped[rel] = fp
                if verify:
                    h = hashlib.sha256()
                    try:
                        for chunk in iter(lambda: fp.read(_CHUNK), b""):
                            h.update(chunk)
                    except OSError as e:
                        raise ModelFormatError(f"{root}: file {rel!r} cannot be read: {e.strerror}") from None
                    _check_digest(h.hexdigest(), entry, root, rel)
                continue
            buf = _read_listed(p, root, rel, entry, verify)
            if rel in array_files:
                raw_arrays[rel] = buf
            else:
                data[rel] = bytes(buf)
        arrays: Dict[str, np.ndarray] = {}
        for name, a in m.arrays.items():
            where = f"{root}: {a.file}"
            try:
                if a.file in mapped:
                    fp = mapped[a.file]
                    fp.seek(0)
                    arrays[name] = read_npy(fp, where, expect_dtype=a.dtype, expect_shape=tuple(a.shape), mmap=True)
                else:
                    arrays[name] = npy_from_buffer(raw_arrays[a.file], where, expect_dtype=a.dtype,
                                                   expect_shape=tuple(a.shape))
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"{root}: file {a.file!r} cannot be read as an array: {e}") from None
    finally:
        for fp in mapped.values():
            fp.close()  # np.memmap keeps its own mapping of the file
    return LoadedModel(root=root, manifest=m, arrays=arrays, data=data)


# --------------------------------------------------------------------------- describe


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def describe(path: PathLike) -> str:
    """A short human summary of a model (reads only the manifest), for ``npad-edge info``."""
    m = read_manifest(path)
    b, p, t = m.backbone, m.preprocess, m.threshold
    total = sum(f.bytes for f in m.files.values())
    thr = f"{t.value:.6g} ({t.method}"
    if t.quantile is not None:
        thr += f", q={t.quantile:g}"
    if t.n_images is not None:
        thr += f", {t.n_images} images"
    thr += ")"
    settings = ", ".join(f"{k}={v}" for k, v in m.method.settings.items())
    lines = [
        f"npad_edge model {Path(os.fspath(path))}",
        f"  format      {m.format} v{m.format_version} (this npad_edge reads <= v{FORMAT_VERSION}), created {m.created}",
        f"  kind        {m.kind}, precision {m.precision}",
        f"  backbone    {b.name} taps [{', '.join(b.taps)}], weights {b.weights}",
        f"  input       {p.image_size[0]}x{p.image_size[1]} {p.color} {p.layout}, resize {p.resize}"
        f"{' (antialias)' if p.antialias else ''}"
        f"{ {'host': ' on the host', 'core': ' in the core (float32 hand-over)'}.get((b.config or {}).get('resize', {}).get('on'), '')}",
        f"  method      {m.method.name}" + (f" ({settings})" if settings else ""),
        f"  threshold   {thr}",
    ]
    for name, a in m.arrays.items():
        lines.append(f"  array       {name}: {a.dtype} {tuple(a.shape)}")
    lines.append(f"  files       {len(m.files)}, {_human_bytes(total)}")
    if m.versions:
        lines.append("  versions    " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return "\n".join(lines)
