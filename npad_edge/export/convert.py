"""torch ``FeatureExtractor`` -> OpenVINO IR; FP16 weight compression; INT8 with NNCF PTQ."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ..errors import DataError, InvalidInputError, ModelFormatError
from .resize import replace_pillow_resize

__all__ = ["export_model", "convert_extractor", "quantize_backbone", "calibration_images",
           "INPUT_NAME", "OUTPUT_NAME", "QUANT_PRESET", "QUANT_IGNORED_TYPES"]

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "features"
#: NNCF preset. ``performance``: symmetric int8 weights and activations; the backbones here
#: use ReLU/ReLU6 activations, so nothing is lost to the symmetric grid.
QUANT_PRESET = "performance"
#: Operation types NNCF must leave in float. Interpolate: the input resize (quantizing the
#: uint8 -> float resize and the normalisation buys nothing) and the upsampling of coarse taps;
#: AvgPool: the 3x3 aggregation. Together they keep the feature map the search compares in
#: float: a quantizer there would round every feature to 8 bits, and nearest-neighbour
#: choices flip on near-ties (the pitfall of quantizing the k-NN in the peer's export).
QUANT_IGNORED_TYPES = ("Interpolate", "AvgPool", "Concat")

#: The INT8 settings export uses (``int8_options`` overrides them), chosen on real bottle
#: (docs/runtime.md): full bias correction is what keeps PRO near FP32 (fast bias correction
#: lost 6.5 pt), and the stem convolution in float (on the normalised image, a small share of
#: the compute) takes the rest of the gap from -0.5 to -0.1 pt.
QUANT_DEFAULTS = {"preset": QUANT_PRESET, "ignored_types": list(QUANT_IGNORED_TYPES), "float_tail": False,
                  "float_stem": True, "fast_bias_correction": False}

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

PathLike = Union[str, "os.PathLike[str]"]


def convert_extractor(extractor) -> Any:
    """Convert a ``backbones.FeatureExtractor`` to an ``openvino.Model``.

    Input ``image``: ``(B, H, W, 3) u8`` with B, H, W dynamic (the resize is in the graph), or
    for an extractor with ``resize_on="core"`` ``(B, *image_size, 3) f32`` (resized by the
    core); output ``features``: ``(B, D, h, w) f32``.
    """
    import openvino as ov
    import torch

    extractor = extractor.eval()
    h, w = extractor.image_size
    core = getattr(extractor, "resize_on", "graph") == "core"
    # resize_on "core": model-size float32 images resized by the core (data.geometry.core_resize)
    example = torch.zeros((1, h, w, 3), dtype=torch.float32 if core else torch.uint8)
    shape = ov.PartialShape([-1, h, w, 3]) if core else ov.PartialShape([-1, -1, -1, 3])
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about shape checks turned into constants and about jit.trace's
        # deprecation; the IR is checked against torch after conversion instead.
        warnings.simplefilter("ignore")
        # Tracing explicitly, without the trace check, converts in about half the time of
        # handing the module to convert_model (which traces and checks on its own).
        traced = torch.jit.trace(extractor, example, check_trace=False)
        model = ov.convert_model(traced, example_input=example,
                                 input=[(shape, ov.Type.f32 if core else ov.Type.u8)])
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFormatError(f"converted extractor has {len(model.inputs)} inputs and {len(model.outputs)} "
                               "outputs; expected one of each")
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    model.set_rt_info("npad_edge", ["framework", "producer"])
    return model


def calibration_images(calib: PathLike) -> list[Path]:
    """Image files of a calibration directory (sorted): the images directly inside it, or,
    for an MVTec category root, those of ``train/good``."""
    root = Path(os.fspath(calib))
    if not root.is_dir():
        raise DataError(f"calibration directory {root} does not exist or is not a directory")
    for d in (root, root / "train" / "good"):
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
            if files:
                return files
    raise DataError(f"calibration directory {root} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")


def quantize_backbone(model, images: Sequence[PathLike], *, subset: int = 300, preset: str = QUANT_PRESET,
                      ignored_types: Sequence[str] = QUANT_IGNORED_TYPES, float_tail: bool = False,
                      float_stem: bool = True, fast_bias_correction: bool = False, progress: bool = True,
                      prepare=None):
    """INT8 post-training quantization of a converted backbone with NNCF.

    ``images``: paths of nominal images, decoded one by one as the calibration set (at their
    own size: the graph resizes, as at inference). ``subset``: at most this many are used.
    ``float_tail``: keep the convolutions of the coarsest stage (output grid at most half the
    feature grid, e.g. 16x16 for a 32x32 grid) in float. ``float_stem`` (default): keep the
    first convolution (on the normalised image) in float. ``fast_bias_correction``: NNCF's
    fast bias correction, or (default) the slower full one, which keeps PRO near FP32.
    ``prepare``: ``(H, W, 3) uint8 -> (H', W', 3)`` array applied to each decoded image before
    the graph, as the runtime does (the letterbox of a model with ``aspect_rule`` "letterbox",
    the resize of a model that resizes on the host or in the core).
    Returns the quantized ``openvino.Model``.
    """
    import nncf

    from ..data import read_image

    if preset not in ("performance", "mixed"):
        raise InvalidInputError(f"preset must be 'performance' or 'mixed', got {preset!r}")
    images = list(images)
    if not images:
        raise DataError("no calibration images")
    present = {op.get_type_name() for op in model.get_ops()}
    names = _coarse_convolutions(model) if float_tail else []
    if float_stem:
        convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
        names += [convs[0].get_friendly_name()] if convs else []
    # The preprocessing before the first convolution (resize, exposure gain, normalisation)
    # stays in float: NNCF otherwise quantizes both inputs of the exposure gain's multiply (the
    # resized image and the gain) to 8 bits, which cost magnetic_tile N-pad 4.4 points of image
    # AUROC (docs/runtime.md, "INT8 and the exposure gain").
    names += _preprocessing_ops(model)
    ignored = nncf.IgnoredScope(types=[t for t in ignored_types if t in present], names=names, validate=False)
    dataset = nncf.Dataset(images, (lambda p: read_image(p)[None]) if prepare is None else
                           (lambda p: prepare(read_image(p))[None]))
    if not progress:
        nncf.set_log_level(logging.WARNING)
    # NNCF draws its own progress bars on the console; with progress off they are captured.
    quiet = contextlib.nullcontext() if progress else _captured_console()
    with quiet:
        return nncf.quantize(
            model, dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
            subset_size=min(int(subset), len(images)),
            ignored_scope=ignored,
            fast_bias_correction=fast_bias_correction,
        )


@contextlib.contextmanager
def _captured_console():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
    if buf.getvalue():
        log.debug("NNCF output:\n%s", buf.getvalue())


def _preprocessing_ops(model) -> list[str]:
    """Names of the computing ops before the first (group) convolution: the in-graph
    preprocessing (resize, exposure gain, normalisation)."""
    names = []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in ("Convolution", "GroupConvolution"):
            break
        if t not in ("Parameter", "Constant", "Result"):
            names.append(op.get_friendly_name())
    return names


def _coarse_convolutions(model) -> list[str]:
    """Names of the (group) convolutions whose output grid is at most half the feature grid
    (the model output's): the coarsest, cheapest stage."""
    out = model.outputs[0].get_partial_shape()
    if out.rank.get_length() != 4 or not out[2].is_static:
        return []
    grid = out[2].get_length()
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            ps = op.output(0).get_partial_shape()
            if ps.rank.get_length() == 4 and ps[2].is_static and ps[2].get_length() * 2 <= grid:
                names.append(op.get_friendly_name())
    return names


def export_model(model: PathLike, out: PathLike, *, precision: str = "fp32", calib: PathLike | None = None,
                 subset: int = 300, overwrite: bool = False, progress: bool = True,
                 int8_options: dict | None = None) -> Path:
    """Export a fitted model (kind "fitted") to an OpenVINO model directory (kind "exported").

    Args:
        model: a fitted model directory.
        out: the exported model directory to write (atomically; refused if it exists unless
            ``overwrite``).
        precision: ``"fp32"``, ``"fp16"`` (weights stored in fp16) or ``"int8"`` (NNCF
            post-training quantization; needs ``calib``).
        calib: directory of nominal images for INT8 calibration, e.g. the training images
            (an MVTec category root means its ``train/good``).
        subset: at most this many calibration images.
        progress: log progress and let NNCF show its bars.
        int8_options: advanced keyword arguments of :func:`quantize_backbone` (``preset``,
            ``float_stem``, ``float_tail``, ``fast_bias_correction``, ``ignored_types``); recorded
            in the manifest.

    The method state (memory bank...) is copied unchanged; the manifest records the precision
    and, for INT8, the calibration settings. Returns the path written.
    """
    import openvino as ov
    import torch

    from .. import artifact
    from ..backbones import FeatureExtractor

    if precision not in artifact.PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(artifact.PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calib is None:
        raise InvalidInputError("precision 'int8' needs calibration images: pass calib=DIR (e.g. the training "
                                "images, train/good)")
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 1:
        raise InvalidInputError(f"subset must be a positive int, got {subset!r}")
    loaded = artifact.load_model(model)
    m = loaded.manifest
    if m.kind != "fitted":
        raise InvalidInputError(f"{model} is already an exported model ({m.precision}); export the fitted model")
    calib_files = calibration_images(calib) if precision == "int8" else []
    out = Path(os.fspath(out))
    if os.path.lexists(out) and not overwrite:
        raise artifact.ModelExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")

    log.info("export %s -> %s (%s)", model, out, precision)
    extractor = FeatureExtractor.from_config(m.backbone.config)
    ov_model = convert_extractor(extractor)
    calibration = None
    if precision == "int8":
        n = min(subset, len(calib_files))
        log.info("INT8 calibration on %d of %d images from %s", n, len(calib_files), calib)
        opts = {**QUANT_DEFAULTS, **dict(int8_options or {})}
        ov_model = quantize_backbone(ov_model, calib_files, subset=subset, progress=progress,
                                     prepare=_host_preprocess(m), **opts)
        calibration = {
            "method": "nncf.quantize (post-training)",
            "n_images": n,
            "subset": subset,
            **{k: list(v) if isinstance(v, (tuple, list)) else v for k, v in opts.items()},
            # The folder's last parts ("bottle/train/good"), not the machine's absolute path.
            "source": "/".join(calib_files[0].parent.resolve().parts[-3:]),
            "aspect_rule": m.preprocess.aspect_rule,   # the images were prepared as at inference
        }
    # After quantization, so that NNCF never sees (and never quantizes) the resize's ops.
    n_resize = replace_pillow_resize(ov_model)
    check = _parity_check(extractor, ov_model, precision,
                          calib_files[0] if calib_files else None)
    log.info("export check: torch vs IR features max |diff| %.3g (%.3g of the feature range)",
             check["max_abs_diff"], check["rel_diff"])

    versions = {"openvino": ov.__version__.split("-")[0], "torch": torch.__version__}
    if precision == "int8":
        import nncf  # already imported by quantize_backbone

        versions["nncf"] = nncf.__version__
    d = m.to_dict()
    for key in ("files", "arrays", "created"):
        d.pop(key, None)
    d.update(kind="exported", precision=precision, calibration=calibration)
    d["versions"] = {**m.versions, **versions}
    d["extra"] = {**m.extra, "export_check": check,
                  "ir_resize": ("none: resized on the host (npad_edge.data.geometry.host_resize)"
                                if extractor.resize_on == "host" else
                                "none: resized by the core, float32 input (npad_edge.data.geometry.core_resize)"
                                if extractor.resize_on == "core" else
                                "banded gather (npad_edge.export.resize)" if n_resize else "openvino Interpolate")}
    tmp = Path(tempfile.mkdtemp(prefix=".npad-export-", dir=str(out.parent) if out.parent.is_dir() else None))
    try:
        xml = tmp / artifact.BACKBONE_XML
        ov.save_model(ov_model, str(xml), compress_to_fp16=(precision == "fp16"))
        return artifact.write_model(
            out, d, loaded.arrays,
            {artifact.BACKBONE_XML: xml, artifact.BACKBONE_BIN: xml.with_suffix(".bin")},
            overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _host_preprocess(manifest):
    """What the runtime does to an image on the host before the IR (None: nothing): the
    letterbox of ``preprocess.aspect_rule`` "letterbox" and the resize of a model that
    resizes on the host (``resize.on`` "host") (``npad_edge.data.geometry``)."""
    from ..data.geometry import letterbox, resize_for

    pp = manifest.preprocess
    hw, fill, mean = tuple(pp.image_size), pp.letterbox_fill, list(pp.mean)
    on = str((manifest.backbone.config or {}).get("resize", {}).get("on", "graph"))
    if pp.aspect_rule != "letterbox":
        return (lambda image: resize_for(on, image, hw)) if on != "graph" else None
    return lambda image: resize_for(on, letterbox(image, hw, fill=fill, mean=mean)[0], hw)


def _parity_check(extractor, ov_model, precision: str, image_path: Path | None) -> dict[str, Any]:
    """Features of the torch extractor and of the IR (in f32) on one image: how far apart."""
    import openvino as ov
    import torch

    if image_path is not None:
        from ..data import read_image

        img = read_image(image_path)[None]
    else:  # a smooth synthetic image at an odd size (exercises the in-graph resize)
        yy, xx = np.mgrid[0:301, 0:333]
        img = np.stack([(xx * 255 // 332), (yy * 255 // 300), ((xx + yy) * 255 // 632)], -1).astype(np.uint8)[None]
    on = getattr(extractor, "resize_on", "graph")
    if on != "graph":   # its graph takes model-size images only
        from ..data.geometry import resize_for

        img = resize_for(on, img[0], extractor.image_size)[None]
    with torch.no_grad():
        ref = extractor(torch.from_numpy(img)).numpy()
    model = ov_model
    if precision == "fp16":
        # What the saved IR will hold: weights rounded to fp16.
        from openvino import save_model

        with tempfile.TemporaryDirectory() as td:
            save_model(ov_model, os.path.join(td, "m.xml"), compress_to_fp16=True)
            model = ov.Core().read_model(os.path.join(td, "m.xml"))
            compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            got = compiled({0: img})[0]
    else:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled({0: img})[0]
    diff = float(np.abs(got - ref).max())
    span = float(ref.max() - ref.min()) or 1.0
    return {"max_abs_diff": diff, "rel_diff": diff / span, "image": "calibration[0]" if image_path else "synthetic"}
