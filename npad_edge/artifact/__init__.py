"""The saved model of npad_edge: a self-describing, versioned directory, no pickle.

Layout::

    model/
      manifest.json          format, format_version, everything needed to run the model,
                             sha256 + size of every other file (written last)
      arrays/<name>.npy      method state (memory bank, Gaussian parameters...), np.save,
                             C-contiguous, allow_pickle=False
      backbone.xml/.bin      OpenVINO IR, only when kind == "exported"
      ...                    any other file passed to write_model (hashed like the rest)

``manifest.json`` (format ``"npad-edge-model"``, ``format_version`` 2)::

    format          "npad-edge-model"
    format_version  int (2; version 1 models are migrated on read)
    created         ISO 8601 UTC, "2024-05-01T12:00:00Z"
    kind            "fitted" (torch backbone by name/weights) | "exported" (IR inside)
    precision       "fp32" | "fp16" | "int8"
    versions        {str: str}  npad_edge, numpy, python, openvino, torch, search ISA...
    backbone        {name: str, taps: [str], weights: str, weights_sha256: str|null, config: {}}
    preprocess      {image_size: [h, w], mean: [float], std: [float], resize: "nearest"|
                     "bilinear"|"bicubic"|"area", antialias: bool, layout: "NHWC"|"NCHW",
                     color: "RGB"|"BGR"|"GRAY", aspect_rule, letterbox_fill,
                     size_derivation: {}|null, exposure: {mode, target, min_gain, max_gain}|null}
    method          {name: str, settings: {}}
    threshold       {value: float, method: str, n_images: int|null, quantile: float|null}
    calibration     {} | null   (free-form JSON object, e.g. INT8 calibration details)
    arrays          {name: {file: "arrays/<name>.npy", dtype: "<f4", shape: [int]}}
    files           {relative/path: {sha256: hex, bytes: int}}   (every file but the manifest)
    extra           {}  free-form, the place for optional forward-compatible information

Unknown keys anywhere in the typed records are refused (put them in ``extra`` or a free-form
``config`` / ``settings`` / ``calibration`` object); wrong types raise ModelFormatError naming
the key. ``read_manifest`` reads only the manifest, so the format and its version are known
without loading the arrays. A newer ``format_version`` raises ModelVersionError; older ones
are upgraded by functions registered with ``register_migration``.

Compatibility rule: whenever FORMAT_VERSION is bumped, register the migration from the
previous version AND add a frozen example model of the previous version under
``tests/data/models/`` (``v1_minimal`` is the one of version 1, ``v2_minimal`` of version 2). These examples are never
regenerated; a test checks that each keeps loading.
"""

from __future__ import annotations

from .manifest import (
    BACKBONE_BIN,
    BACKBONE_XML,
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    PRECISIONS,
    ArrayEntry,
    Backbone,
    FileEntry,
    Manifest,
    Method,
    Preprocess,
    Threshold,
    register_migration,
    utc_now,
)
from .store import (
    MANIFEST_NAME,
    LoadedModel,
    ModelExistsError,
    describe,
    load_model,
    read_manifest,
    sha256_file,
    write_model,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "PRECISIONS",
    "BACKBONE_XML",
    "BACKBONE_BIN",
    "MANIFEST_NAME",
    "Manifest",
    "Backbone",
    "Preprocess",
    "Method",
    "Threshold",
    "FileEntry",
    "ArrayEntry",
    "LoadedModel",
    "ModelExistsError",
    "write_model",
    "read_manifest",
    "load_model",
    "sha256_file",
    "describe",
    "register_migration",
    "utc_now",
]
