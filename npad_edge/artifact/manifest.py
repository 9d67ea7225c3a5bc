"""The manifest of a saved model: a small typed dataclass layer over ``manifest.json``.

Every field is validated strictly when a manifest is parsed (``Manifest.from_json`` /
``Manifest.from_dict``): a wrong type raises :class:`ModelFormatError` naming the key, the
expected type and what was found; unknown keys are refused (``extra`` is the place for
free-form data); missing required keys are refused. Older format versions are upgraded
through the migration registry (:func:`register_migration`) before validation.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ModelFormatError, ModelVersionError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "PRECISIONS",
    "BACKBONE_XML",
    "BACKBONE_BIN",
    "Backbone",
    "Preprocess",
    "Method",
    "Threshold",
    "FileEntry",
    "ArrayEntry",
    "Manifest",
    "register_migration",
    "check_rel_path",
    "check_array_name",
    "utc_now",
]

FORMAT = "npad-edge-model"
#: The newest manifest format version this npad_edge writes and reads.
#: 2: ``preprocess.exposure`` (one exposure gain per image, backbones.features); version 1
#: manifests are migrated with ``exposure: null`` (no gain), which is what they computed.
FORMAT_VERSION = 2

KINDS = ("fitted", "exported")
PRECISIONS = ("fp32", "fp16", "int8")
#: File names of the OpenVINO IR inside an exported model (``kind == "exported"``).
BACKBONE_XML = "backbone.xml"
BACKBONE_BIN = "backbone.bin"

# dtype kinds an array may have: bool, signed/unsigned int, float, complex, bytes, unicode.
# Object, structured (void) and datetime arrays are refused: no pickle, and nothing the
# runtime needs.
_ARRAY_DTYPE_KINDS = "biufcSU"
_MAX_NDIM = 32
_MAX_JSON_DEPTH = 32
_SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_ARRAY_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_PATH_PART_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
# Names Windows refuses as files whatever the extension: models are copied between machines.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}


# --------------------------------------------------------------------------- type checks


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {value!r}"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        r = repr(value)
        return "string " + (r if len(r) <= 60 else r[:57] + "...")
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__module__ + "." + type(value).__qualname__


def _fail(key: str, expected: str, value: Any) -> ModelFormatError:
    return ModelFormatError(f"manifest: '{key}' must be {expected}, found {_found(value)}")


def _str(value: Any, key: str, *, nonempty: bool = True, choices: Optional[Tuple[str, ...]] = None) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    if nonempty and not value:
        raise _fail(key, "a non-empty string", value)
    if choices is not None and value not in choices:
        raise _fail(key, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def _int(value: Any, key: str, *, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, "an integer", value)
    if minimum is not None and value < minimum:
        raise _fail(key, f"an integer >= {minimum}", value)
    return int(value)


def _float(value: Any, key: str, *, lo: Optional[float] = None, hi: Optional[float] = None,
           positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, "a number", value)
    try:
        out = float(value)
    except OverflowError:
        raise _fail(key, "a finite number", value) from None
    if not math.isfinite(out):
        raise _fail(key, "a finite number", value)
    if positive and out <= 0:
        raise _fail(key, "a number > 0", value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise _fail(key, f"a number in [{lo}, {hi}]", value)
    return out


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _list(value: Any, key: str) -> list:
    if not isinstance(value, list):
        raise _fail(key, "a list", value)
    return value


def _obj(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(key, "an object", value)
    return value


def _json_value(value: Any, key: str, depth: int = 0) -> Any:
    """A plain JSON value (str, finite number, bool, null, list, object with str keys)."""
    if depth > _MAX_JSON_DEPTH:
        raise ModelFormatError(f"manifest: '{key}' is nested deeper than {_MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(key, "a finite number", value)
        return value
    if isinstance(value, list):
        return [_json_value(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(f"{key} key", "a string", k)
            out[k] = _json_value(v, f"{key}.{k}", depth + 1)
        return out
    raise _fail(key, "a JSON value (string, number, bool, null, list or object)", value)


def _json_obj(value: Any, key: str) -> Dict[str, Any]:
    return _json_value(_obj(value, key), key)


def _json_obj_or_null(value: Any, key: str) -> Optional[Dict[str, Any]]:
    return None if value is None else _json_obj(value, key)


def _sha256(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise _fail(key, "a sha256 hex digest (64 lowercase hex digits)", value)
    return value


def _opt_sha256(value: Any, key: str) -> Optional[str]:
    return None if value is None else _sha256(value, key)


def _str_list(value: Any, key: str) -> List[str]:
    return [_str(v, f"{key}[{i}]") for i, v in enumerate(_list(value, key))]


def _str_dict(value: Any, key: str) -> Dict[str, str]:
    return {k: _str(v, f"{key}.{k}", nonempty=False) for k, v in _obj(value, key).items()}


def _utc_iso(value: Any, key: str) -> str:
    s = _str(value, key)
    try:
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)
    except ValueError:
        raise _fail(key, "an ISO 8601 UTC time such as '2024-05-01T12:00:00Z'", s) from None
    if t.tzinfo is None or t.utcoffset() is None or t.utcoffset().total_seconds() != 0:
        raise _fail(key, "an ISO 8601 time in UTC (ending in 'Z' or '+00:00')", s)
    return s


def check_rel_path(value: Any, key: str = "path") -> str:
    """A portable relative path inside a model directory: '/'-separated, no '..', not absolute.

    Each component is ``[A-Za-z0-9_][A-Za-z0-9._-]*`` and not a name Windows reserves, so a
    model copied to another machine means the same files there. Raises ModelFormatError.
    """
    if not isinstance(value, str):
        raise _fail(key, "a relative path string", value)
    if not value or len(value) > 512:
        raise _fail(key, "a relative path of 1 to 512 characters", value)
    if value.startswith("/") or "\\" in value or ":" in value:
        raise ModelFormatError(
            f"manifest: '{key}' must be a relative '/'-separated path inside the model directory, "
            f"found {value!r} (absolute paths, drive letters and backslashes are refused)")
    parts = value.split("/")
    if ".." in parts:
        raise ModelFormatError(f"manifest: '{key}' must stay inside the model directory, found {value!r} ('..')")
    if len(parts) > 8:
        raise _fail(key, "a path at most 8 levels deep", value)
    for part in parts:
        if not _PATH_PART_RE.match(part) or part.split(".")[0].lower() in _WINDOWS_RESERVED:
            raise ModelFormatError(
                f"manifest: '{key}' has an unsafe path component {part!r} in {value!r}; components must "
                "match [A-Za-z0-9_][A-Za-z0-9._-]* and not be a reserved device name")
        if part.endswith("."):
            raise ModelFormatError(f"manifest: '{key}' has a path component ending in '.' in {value!r}")
    if value == "manifest.json":
        raise ModelFormatError(f"manifest: '{key}' may not be 'manifest.json' itself")
    return value


def check_array_name(value: Any, key: str = "array name") -> str:
    """An array name: a safe identifier ``[A-Za-z_][A-Za-z0-9_]*`` of at most 64 characters."""
    if not isinstance(value, str) or not _ARRAY_NAME_RE.match(value) or value.lower() in _WINDOWS_RESERVED:
        raise ModelFormatError(
            f"manifest: {key} must be an identifier [A-Za-z_][A-Za-z0-9_]* of at most 64 characters "
            f"(and not a reserved device name), found {_found(value)}")
    return value


def check_array_dtype(value: Any, key: str) -> str:
    """A numpy dtype string (``np.dtype(x).str``, e.g. '<f4') of an allowed kind."""
    s = _str(value, key)
    try:
        dt = np.dtype(s)
    except Exception:  # numpy raises TypeError, ValueError, SyntaxError... on garbage
        raise _fail(key, "a numpy dtype string such as '<f4'", s) from None
    if dt.kind not in _ARRAY_DTYPE_KINDS or dt.hasobject or dt.str != s:
        raise _fail(key, "a plain numeric/bool/string numpy dtype string such as '<f4' (object and "
                    "structured dtypes are refused)", s)
    return s


def _shape(value: Any, key: str) -> List[int]:
    items = _list(value, key)
    if len(items) > _MAX_NDIM:
        raise _fail(key, f"a shape of at most {_MAX_NDIM} dimensions", value)
    return [_int(v, f"{key}[{i}]", minimum=0) for i, v in enumerate(items)]


# --------------------------------------------------------------------------- records


class _Record:
    """Dataclass mixin: strict parse from a JSON object, dump to one."""

    # field name -> checker(value, key) -> value. Fields with a dataclass default are optional.
    _CHECKS: Dict[str, Callable[[Any, str], Any]] = {}

    @classmethod
    def from_dict(cls, data: Any, key: str):
        data = _obj(data, key or "manifest")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ModelFormatError(
                f"manifest: unknown key(s) {', '.join(repr(u) for u in unknown)} in '{key or 'manifest'}' "
                f"(allowed: {', '.join(names)}; put free-form data in 'extra')")
        kwargs = {}
        for f in fields(cls):
            sub = f"{key}.{f.name}" if key else f.name
            if f.name not in data:
                if _has_default(f):
                    continue
                raise ModelFormatError(f"manifest: required key '{sub}' is missing")
            kwargs[f.name] = cls._CHECKS[f.name](data[f.name], sub)
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in fields(self)}


def _has_default(f) -> bool:
    from dataclasses import MISSING

    return f.default is not MISSING or f.default_factory is not MISSING


def _dump(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def _image_size(value: Any, key: str) -> List[int]:
    items = _list(value, key)
    if len(items) != 2:
        raise _fail(key, "[height, width]", value)
    return [_int(v, f"{key}[{i}]", minimum=1) for i, v in enumerate(items)]


def _channel_floats(value: Any, key: str, positive: bool = False) -> List[float]:
    items = _list(value, key)
    if not 1 <= len(items) <= 4:
        raise _fail(key, "a list of 1 to 4 numbers (one per channel)", value)
    return [_float(v, f"{key}[{i}]", positive=positive) for i, v in enumerate(items)]


@dataclass
class Backbone(_Record):
    """The feature extractor: architecture name, feature taps, weights and extractor config."""

    name: str
    taps: List[str]
    #: where the weights came from: "imagenet", "random", a file name, a package name...
    weights: str = "imagenet"
    weights_sha256: Optional[str] = None
    #: ``FeatureExtractor.config()``: image size, feature_dim, pooling... (JSON object)
    config: Dict[str, Any] = field(default_factory=dict)

    _CHECKS = {
        "name": _str,
        "taps": _str_list,
        "weights": _str,
        "weights_sha256": _opt_sha256,
        "config": _json_obj,
    }


@dataclass
class Preprocess(_Record):
    """How an image becomes the network input. Images arrive (B, H, W, C) uint8."""

    image_size: List[int]  # [height, width] of the network input
    mean: List[float]  # per channel, on the 0..1 scale
    std: List[float]  # per channel, > 0
    resize: str = "bilinear"
    antialias: bool = True
    layout: str = "NHWC"  # input layout the model is called with
    color: str = "RGB"
    #: images of another aspect ratio: "resize" (squash; every model before this field) or
    #: "letterbox" (pad to the model's aspect ratio, then resize; npad_edge.data.geometry)
    aspect_rule: str = "resize"
    #: the letterbox fill: "mean" (the normalisation mean) or "edge" (replicate the border)
    letterbox_fill: str = "mean"
    #: how image_size was chosen (rule, short side, median aspect, number of images...);
    #: None for models written before it was recorded
    size_derivation: Optional[Dict[str, Any]] = None
    #: one exposure gain per image before normalisation (format_version 2):
    #: {"mode": "gain", "target": mean intensity 0..255, "min_gain", "max_gain"}, or None (no
    #: gain; every model before it). The backbone computes it (in the IR / FeatureExtractor);
    #: recorded here so the manifest says what the model does to an image.
    exposure: Optional[Dict[str, Any]] = None

    _CHECKS = {
        "image_size": _image_size,
        "mean": _channel_floats,
        "std": lambda v, k: _channel_floats(v, k, positive=True),
        "resize": lambda v, k: _str(v, k, choices=("nearest", "bilinear", "bicubic", "area")),
        "antialias": _bool,
        "layout": lambda v, k: _str(v, k, choices=("NHWC", "NCHW")),
        "color": lambda v, k: _str(v, k, choices=("RGB", "BGR", "GRAY")),
        "aspect_rule": lambda v, k: _str(v, k, choices=("resize", "letterbox")),
        "letterbox_fill": lambda v, k: _str(v, k, choices=("mean", "edge")),
        "size_derivation": _json_obj_or_null,
        "exposure": _json_obj_or_null,
    }


@dataclass
class Method(_Record):
    """The anomaly scoring method (``get_method(name, **settings)``)."""

    name: str
    settings: Dict[str, Any] = field(default_factory=dict)

    _CHECKS = {"name": _str, "settings": _json_obj}


@dataclass
class Threshold(_Record):
    """The image-score threshold above which an image is anomalous, and how it was chosen."""

    value: float
    method: str = "manual"  # how it was calibrated: "quantile", "max", "f1", "manual", ...
    n_images: Optional[int] = None  # number of calibration images
    quantile: Optional[float] = None  # in [0, 1] when method == "quantile"

    _CHECKS = {
        "value": _float,
        "method": _str,
        "n_images": lambda v, k: None if v is None else _int(v, k, minimum=0),
        "quantile": lambda v, k: None if v is None else _float(v, k, lo=0.0, hi=1.0),
    }


@dataclass
class FileEntry(_Record):
    """sha256 and size in bytes of one file of the model directory."""

    sha256: str
    bytes: int

    _CHECKS = {"sha256": _sha256, "bytes": lambda v, k: _int(v, k, minimum=0)}


@dataclass
class ArrayEntry(_Record):
    """One array of the method state: its .npy file, dtype string ('<f4') and shape."""

    file: str
    dtype: str
    shape: List[int]

    _CHECKS = {"file": check_rel_path, "dtype": check_array_dtype, "shape": _shape}


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a 'Z', e.g. '2024-05-01T12:00:00Z'."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _default_versions() -> Dict[str, str]:
    from .. import __version__

    return {"npad_edge": __version__, "numpy": np.__version__, "python": platform.python_version()}


def _files(value: Any, key: str) -> Dict[str, FileEntry]:
    out = {}
    for path, entry in _obj(value, key).items():
        check_rel_path(path, f"{key} path")
        out[path] = FileEntry.from_dict(entry, f"{key}.{path}")
    _check_no_collisions(list(out), key)
    return out


def _arrays(value: Any, key: str) -> Dict[str, ArrayEntry]:
    out = {}
    for name, entry in _obj(value, key).items():
        check_array_name(name, f"'{key}' name")
        out[name] = ArrayEntry.from_dict(entry, f"{key}.{name}")
    _check_no_collisions(list(out), key)
    return out


def _check_no_collisions(paths: List[str], key: str) -> None:
    # Case-insensitive file systems (Windows, macOS) would merge these; "a" and "a/b" cannot
    # both be files.
    seen: Dict[str, str] = {}
    for p in paths:
        low = p.lower()
        if low in seen:
            raise ModelFormatError(f"manifest: '{key}' has names that differ only in case: {seen[low]!r}, {p!r}")
        seen[low] = p
    for p in seen:
        parts = p.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in seen:
                raise ModelFormatError(f"manifest: '{key}' has {seen[prefix]!r} as both a file and a directory")


@dataclass
class Manifest(_Record):
    """The typed content of ``manifest.json``.

    Build one with the required fields (``kind``, ``backbone``, ``preprocess``, ``method``,
    ``threshold``); ``write_model`` fills ``files`` and ``arrays`` (sha256, size, dtype, shape
    of what it writes) and ``created``. Sub-records may be given as the dataclasses above or
    as plain dicts (they are validated by ``write_model`` / ``validated()``).
    """

    kind: str  # "fitted" (torch backbone referenced by name/weights) | "exported" (IR inside)
    backbone: Backbone
    preprocess: Preprocess
    method: Method
    threshold: Threshold
    precision: str = "fp32"
    calibration: Optional[Dict[str, Any]] = None
    versions: Dict[str, str] = field(default_factory=_default_versions)
    created: str = field(default_factory=utc_now)
    files: Dict[str, FileEntry] = field(default_factory=dict)
    arrays: Dict[str, ArrayEntry] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    _CHECKS = {
        "format": lambda v, k: _str(v, k),
        "format_version": lambda v, k: _int(v, k, minimum=1),
        "created": _utc_iso,
        "versions": _str_dict,
        "kind": lambda v, k: _str(v, k, choices=KINDS),
        "backbone": Backbone.from_dict,
        "preprocess": Preprocess.from_dict,
        "method": Method.from_dict,
        "threshold": Threshold.from_dict,
        "precision": lambda v, k: _str(v, k, choices=PRECISIONS),
        "calibration": _json_obj_or_null,
        "files": _files,
        "arrays": _arrays,
        "extra": _json_obj,
    }

    # Key order of manifest.json: identity first, then what a person reading it wants.
    _ORDER = ("format", "format_version", "created", "kind", "precision", "versions", "backbone",
              "preprocess", "method", "threshold", "calibration", "arrays", "files", "extra")

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        return {k: d[k] for k in self._ORDER}

    def to_json(self) -> str:
        """The manifest as JSON text (UTF-8 safe, NaN refused, 2-space indent)."""
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"manifest is not JSON-serialisable: {e}") from None

    @classmethod
    def from_json(cls, text) -> "Manifest":
        """Parse and validate manifest JSON text (str or bytes); migrates older format versions."""
        return cls.from_dict(parse_json(text))

    @classmethod
    def from_dict(cls, data: Any, key: str = "") -> "Manifest":  # type: ignore[override]
        """Validate a manifest dict as read from disk: every top-level key must be present."""
        data = migrate(data)
        missing = [k for k in cls._ORDER if k not in data]
        if missing:
            raise ModelFormatError(f"manifest: required key(s) missing: {', '.join(missing)}")
        m = super().from_dict(data, key)
        m.check_consistency()
        return m

    @classmethod
    def for_writing(cls, data: Any) -> "Manifest":
        """Validate a manifest given to ``write_model`` (a Manifest or dict); defaults fill
        ``format``, ``format_version``, ``created``, ``versions`` (merged over the running
        versions), ``precision``, ``calibration``, ``extra``. numpy scalars and tuples are
        accepted and converted."""
        if isinstance(data, Manifest):
            data = data.to_dict()
        data = _plain(_obj(data, "manifest"))
        data = dict(data)
        if "format" in data and data["format"] != FORMAT:
            raise _fail("format", repr(FORMAT), data["format"])
        if "format_version" in data and data["format_version"] != FORMAT_VERSION:
            raise ModelVersionError(
                f"manifest: this npad_edge writes format_version {FORMAT_VERSION}, "
                f"asked to write {data['format_version']!r}")
        versions = _default_versions()
        versions.update(_str_dict(data.get("versions", {}), "versions"))
        data["versions"] = versions
        m = _Record.from_dict.__func__(cls, data, "")  # defaults apply
        return m

    def check_consistency(self) -> None:
        """Cross-field rules: arrays point at hashed, distinct files; an exported model holds its IR;
        the recorded exposure is the backbone's."""
        if self.format != FORMAT:
            raise _fail("format", repr(FORMAT), self.format)
        cfg_exposure = self.backbone.config.get("exposure") if isinstance(self.backbone.config, dict) else None
        if cfg_exposure != self.preprocess.exposure:
            raise ModelFormatError(
                f"manifest: preprocess.exposure {self.preprocess.exposure!r} differs from the backbone "
                f"config's exposure {cfg_exposure!r}")
        used: Dict[str, str] = {}
        for name, a in self.arrays.items():
            if a.file not in self.files:
                raise ModelFormatError(
                    f"manifest: array '{name}' file {a.file!r} is not listed in 'files' (no sha256/size); refused")
            if a.file in used:
                raise ModelFormatError(f"manifest: arrays '{used[a.file]}' and '{name}' share the file {a.file!r}")
            used[a.file] = name
        if self.kind == "exported":
            missing = [f for f in (BACKBONE_XML, BACKBONE_BIN) if f not in self.files]
            if missing:
                raise ModelFormatError(
                    f"manifest: kind 'exported' needs the OpenVINO IR files {', '.join(missing)} in 'files'")


def _plain(value: Any, depth: int = 0) -> Any:
    """numpy scalars -> Python scalars, tuples -> lists (only for manifests given to write)."""
    if depth > _MAX_JSON_DEPTH + 4:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _Record):
        return _plain(value.to_dict(), depth + 1)
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


# --------------------------------------------------------------------------- JSON + versions


def _no_constants(name: str):
    raise ModelFormatError(f"manifest.json: {name} is not valid JSON (non-finite numbers are refused)")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ModelFormatError(f"manifest.json: duplicate key {k!r}")
        out[k] = v
    return out


def parse_json(text) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys; errors are ModelFormatError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelFormatError(f"manifest.json is not UTF-8 text: {e}") from None
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except ModelFormatError:
        raise
    except RecursionError:
        raise ModelFormatError("manifest.json is nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError and int-conversion limits
        raise ModelFormatError(f"manifest.json is not valid JSON: {e}") from None


# from_version -> function(dict of version v) -> dict of version v + 1
_MIGRATIONS: Dict[int, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}


def register_migration(from_version: int):
    """Register ``fn(manifest_dict) -> manifest_dict`` upgrading ``from_version`` to ``from_version + 1``.

    When FORMAT_VERSION is bumped, register the step from the previous version here and keep a
    frozen example of the previous version under ``tests/data/models/``.
    """

    def deco(fn):
        _MIGRATIONS[from_version] = fn
        return fn

    return deco


@register_migration(1)
def _v1_to_v2(data: Dict[str, Any]) -> Dict[str, Any]:
    """Version 2 added ``preprocess.exposure``; version 1 models apply no gain."""
    pre = data.get("preprocess")
    if isinstance(pre, dict):
        pre.setdefault("exposure", None)
    return data


def migrate(data: Any) -> Dict[str, Any]:
    """Check ``format`` / ``format_version`` and upgrade an older manifest dict to FORMAT_VERSION."""
    data = _obj(data, "manifest")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ModelFormatError(
            f"manifest: 'format' is {_found(fmt) if 'format' in data else 'missing'}, expected {FORMAT!r}: "
            "not an npad_edge model")
    if "format_version" not in data:
        raise ModelFormatError("manifest: required key 'format_version' is missing")
    version = _int(data["format_version"], "format_version", minimum=1)
    if version > FORMAT_VERSION:
        from .. import __version__

        raise ModelVersionError(
            f"model format_version {version} is newer than this npad_edge {__version__} reads "
            f"(format_version <= {FORMAT_VERSION}); upgrade npad_edge (pip install -U npad-edge)")
    while version < FORMAT_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise ModelVersionError(f"model format_version {version} has no migration to {version + 1}")
        data = _obj(step(copy.deepcopy(data)), "manifest")
        version += 1
        data["format_version"] = version
    return data
