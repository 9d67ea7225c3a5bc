"""Fit many part types at once: one Ray task per part, an index that survives interruption.

    from npad_edge.fleet import FitSettings, fit_many
    result = fit_many("data_root", "fleet", FitSettings(method="npad", export="fp32"), address=None)

Every sub-folder of the data root is a part (MVTec layout or plain folder, as
``npad_edge.data.load_dataset`` reads it). Each part is fitted by ``pipeline.fit_model`` in a Ray
task that requests ``cpus_per_fit`` CPUs and sets torch's and BLAS's thread pools to that share.
A part that fails (unreadable images, empty folder...) is recorded with a one-line reason and
the others go on; a task whose worker dies (killed, out of memory, node lost) is retried by Ray
(``max_retries``). The index (``npad_edge.fleet.index``) is rewritten after each part, so a
killed run loses only the parts in flight, and a re-run skips every part whose model is
complete, whose training images hash the same and whose settings are the same.

Shared backbones: with ``export`` set, the first part of each backbone group (same backbone,
weights, taps, input size, precision) is exported with ``npad_edge.export.export_model``; every
other part of the group gets a copy of that IR (byte-identical files, so a server compiles it
once: ``runtime._openvino.CompiledModelCache``) next to its own method state. For INT8 this
means the group's IR is calibrated on the training images of the part exported first.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..data.geometry import DEFAULT_RESIZE_ON, DEFAULT_SHORT_SIDE
from ..errors import DataError, InvalidInputError
from . import index as fx

__all__ = ["FitSettings", "FitResult", "discover_parts", "fit_many", "connect"]

log = logging.getLogger(__name__)

EXPORTS = ("none", "fp32", "fp16", "int8")


@dataclass
class FitSettings:
    """The fit settings shared by every part of a fleet (``pipeline.fit_model`` arguments).

    ``export``: ``"none"`` keeps fitted (torch) models; ``"fp32"``/``"fp16"``/``"int8"`` exports
    each part for the OpenVINO runtime (INT8 calibrated on the part's training images, at most
    ``int8_subset`` of them).
    """

    method: str = "patchcore"
    backbone: Optional[str] = None
    image_size: Any = DEFAULT_SHORT_SIDE
    method_settings: dict = field(default_factory=dict)
    taps: Optional[list] = None
    weights: str = "imagenet"
    seed: int = 0
    holdout: Any = 0.1
    export: str = "none"
    int8_subset: int = 300
    skip_bad: bool = False
    #: per-image exposure gain (``pipeline.fit_model``): "gain" or "off"; ``exposure_target``
    #: pins the gain's target for every part (then parts of one backbone and input size share
    #: one IR); None: each part's own training median (best accuracy, one IR per part)
    exposure: str = "gain"
    exposure_target: Optional[float] = None
    #: where each part's frames are resized to its input (``pipeline.fit_model``'s resize_on):
    #: "core" (default), "graph" or "host"
    resize_on: str = DEFAULT_RESIZE_ON

    def __post_init__(self) -> None:
        if self.method not in ("patchcore", "npad"):
            raise InvalidInputError(f"method must be 'patchcore' or 'npad', got {self.method!r}")
        if self.exposure not in ("gain", "off"):
            raise InvalidInputError(f"exposure must be 'gain' or 'off', got {self.exposure!r}")
        if self.resize_on not in ("graph", "core", "host"):
            raise InvalidInputError(f"resize_on must be 'graph', 'core' or 'host', got {self.resize_on!r}")
        if self.export not in EXPORTS:
            raise InvalidInputError(f"export must be one of {', '.join(EXPORTS)}, got {self.export!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["image_size"], tuple):
            d["image_size"] = list(d["image_size"])
        return d

    def config_sha256(self) -> str:
        """What changes a part's model; ``skip_bad`` does not (the data hash covers the files)."""
        d = self.to_dict()
        d.pop("skip_bad")
        return fx.sha256_json(d)


@dataclass
class FitResult:
    """What ``fit_many`` did: part ids fitted now, skipped (unchanged), failed (id -> reason)."""

    fitted: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float
    index: fx.FleetIndex


def discover_parts(root: str | os.PathLike) -> dict[str, Path]:
    """Part id -> folder: every non-hidden sub-folder of ``root``, sorted. Raises DataError when
    ``root`` is not a folder or has none, InvalidInputError for a folder name that cannot be a
    part id."""
    root = Path(os.fspath(root))
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder (pass a folder holding one sub-folder per part type)")
    parts = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        parts[fx.check_part_id(p.name)] = p
    if not parts:
        raise DataError(f"{root} has no sub-folders; fit-many expects one folder per part type "
                        "(e.g. an MVTec AD root holding bottle/, cable/, ...)")
    return parts


def one_line(exc: BaseException) -> str:
    from ..errors import NpadError

    msg = str(exc) if isinstance(exc, NpadError) else f"{type(exc).__name__}: {exc}"
    return " ".join(msg.split())[:500] or type(exc).__name__


# --------------------------------------------------------------------------- task bodies
# Plain functions: run in Ray workers (wrapped with ray.remote at call time, so importing this
# module never imports Ray) and directly in tests.


def _limit_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover - threadpoolctl is a base dependency
        pass


def fit_part(part: str, data_dir: str, fleet: str, settings: dict, threads: int) -> dict:
    """Fit one part into ``FLEET/.work/<part>/fitted`` (or straight into ``models/<part>`` without
    export). Returns a result dict; never raises for a problem with the part (status "failed")."""
    t0 = time.perf_counter()
    try:
        _limit_threads(threads)
        from .. import artifact
        from ..pipeline import fit_model

        s = FitSettings(**settings)
        root = Path(fleet)
        out = root / (fx.MODELS_DIR if s.export == "none" else f"{fx.WORK_DIR}/fitted") / part
        out.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = dict(method=s.method, image_size=_size(s.image_size),
                                      exposure=s.exposure, exposure_target_value=s.exposure_target,
                                      resize_on=s.resize_on,
                                      method_settings=s.method_settings or None, taps=s.taps,
                                      weights=s.weights, seed=s.seed, holdout=s.holdout, overwrite=True,
                                      on_error="skip" if s.skip_bad else "raise", progress=False,
                                      threads=threads)
        if s.backbone:
            kwargs["backbone"] = s.backbone
        fit_model(data_dir, out, **kwargs)
        m = artifact.read_manifest(out)
        return {"part": part, "status": "fitted", "path": str(out), "group": backbone_group(m, s.export),
                "seconds": time.perf_counter() - t0, "pid": os.getpid()}
    except BaseException as e:  # noqa: BLE001 - a failed part is a result, not a crash
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"part": part, "status": "failed", "error": one_line(e), "seconds": time.perf_counter() - t0}


def export_part(part: str, fitted: str, out: str, precision: str, calib: str, subset: int, threads: int) -> dict:
    """Export one fitted part with ``export_model``; its IR becomes its backbone group's."""
    t0 = time.perf_counter()
    try:
        _limit_threads(threads)
        import torch

        torch.set_num_threads(threads)
        from ..export import export_model

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        export_model(fitted, out, precision=precision, calib=calib if precision == "int8" else None,
                     subset=subset, overwrite=True, progress=False)
        return {"part": part, "status": "complete", "path": out, "seconds": time.perf_counter() - t0}
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"part": part, "status": "failed", "error": f"export: {one_line(e)}",
                "seconds": time.perf_counter() - t0}


def assemble_part(fitted: str, source: str, out: str, source_part: str) -> None:
    """Write an exported model for a fitted part with the IR files of ``source`` (an exported
    model of the same backbone group): the part's own method state and threshold, the group's
    byte-identical IR. numpy + standard library only (runs in the driver)."""
    from .. import artifact

    fm = artifact.load_model(fitted)
    src = artifact.read_manifest(source)
    d = fm.manifest.to_dict()
    for key in ("files", "arrays", "created"):
        d.pop(key, None)
    d.update(kind="exported", precision=src.precision, calibration=src.calibration)
    d["versions"] = {**fm.manifest.versions, **{k: v for k, v in src.versions.items()
                                                if k in ("openvino", "torch", "nncf")}}
    d["extra"] = {**fm.manifest.extra,
                  "export_check": src.extra.get("export_check"), "ir_resize": src.extra.get("ir_resize"),
                  "shared_backbone": {"ir_from_part": source_part,
                                      "note": "IR copied from the first exported part of its backbone group"}}
    srcdir = Path(source)
    artifact.write_model(out, d, fm.arrays, {artifact.BACKBONE_XML: srcdir / artifact.BACKBONE_XML,
                                             artifact.BACKBONE_BIN: srcdir / artifact.BACKBONE_BIN},
                         overwrite=True)


def backbone_group(manifest, export: str) -> str:
    """sha256 of what makes two parts' IRs interchangeable: backbone config (architecture, taps,
    input size, feature size), weights, preprocessing and the export precision."""
    b, p = manifest.backbone, manifest.preprocess
    return fx.sha256_json({"backbone": b.name, "taps": list(b.taps), "weights": b.weights,
                           "weights_sha256": b.weights_sha256, "config": b.config,
                           "preprocess": p.to_dict() if hasattr(p, "to_dict") else str(p),
                           "export": export})


def _size(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# --------------------------------------------------------------------------- Ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; returns True if it started a local Ray here
    (the caller shuts it down). ``address``: None starts a local Ray (all CPUs, or
    ``num_cpus``), ``"auto"`` joins the cluster of this node, ``"ray://host:10001"`` a remote one
    through Ray Client. An already initialised Ray is used as it is."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError("the fleet commands need Ray: pip install 'npad-edge[fleet]'") from None
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        return True
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return False


def _entry_ok(index: fx.FleetIndex, part: str, data_sha: str, config_sha: str) -> bool:
    """A part is done when the index says complete with the same data and settings, and its
    model directory still has the manifest the index recorded."""
    e = index.parts.get(part)
    if not e or e.get("status") != "complete" or e.get("data_sha256") != data_sha or e.get("config_sha256") != config_sha:
        return False
    try:
        from ..artifact import sha256_file

        return sha256_file(index.model_path(part) / "manifest.json") == e.get("manifest_sha256")
    except (OSError, KeyError, Exception):  # noqa: BLE001 - anything wrong means: fit again
        return False


def fit_many(data: str | os.PathLike, fleet: str | os.PathLike, settings: FitSettings | None = None, *,
             address: str | None = None, cpus_per_fit: int = 1, num_cpus: int | None = None,
             max_retries: int = 2, parts: list[str] | None = None,
             progress: Callable[[dict], None] | None = None) -> FitResult:
    """Fit every part under ``data`` into the fleet folder ``fleet`` with Ray tasks.

    Args:
        data: a folder with one sub-folder per part type (see :func:`discover_parts`).
        fleet: the fleet folder (created; an existing one is resumed).
        settings: the fit settings of every part (:class:`FitSettings`).
        address: Ray address (see :func:`connect`); None starts a local Ray for this call.
        cpus_per_fit: CPUs each task requests; torch and BLAS inside it use that many threads.
        num_cpus: CPUs of a local Ray started here (default: all).
        max_retries: Ray retries of a task whose worker died (not of a part that fails).
        parts: fit only these part ids (default: all found).
        progress: called with ``{"done", "failed", "skipped", "remaining", "total", "elapsed_s",
            "eta_s", "part", "status", "error"}`` after each part finishes.

    Returns a :class:`FitResult`. Raises DataError/InvalidInputError for a bad data root or
    settings, before any task starts.
    """
    settings = settings or FitSettings()
    if isinstance(cpus_per_fit, bool) or not isinstance(cpus_per_fit, int) or cpus_per_fit < 1:
        raise InvalidInputError(f"cpus_per_fit must be a positive int, got {cpus_per_fit!r}")
    found = discover_parts(data)
    if parts is not None:
        unknown = sorted(set(parts) - set(found))
        if unknown:
            raise InvalidInputError(f"parts not found under {data}: {', '.join(unknown)}")
        found = {k: v for k, v in found.items() if k in set(parts)}
    root = Path(os.fspath(fleet))
    root.mkdir(parents=True, exist_ok=True)
    index = fx.read_index(root)
    index.settings = settings.to_dict()
    config_sha = settings.config_sha256()
    t_start = time.perf_counter()

    todo: dict[str, tuple[Path, str, dict]] = {}
    skipped: list[str] = []
    for part, folder in found.items():
        known = (index.parts.get(part) or {}).get("data_files")
        try:
            data_sha, files = fx.hash_files(fx.train_folder(folder), known)
        except InvalidInputError as e:
            data_sha, files = "", {}
            log.debug("%s: %s", part, e)
        if data_sha and _entry_ok(index, part, data_sha, config_sha):
            skipped.append(part)
        else:
            todo[part] = (folder, data_sha, files)
    fitted_now: list[str] = []
    failed: dict[str, str] = {}
    total = len(found)
    state = {"done": 0}

    def record(part: str, entry: dict) -> None:
        index.parts[part] = entry
        fx.write_index(index)
        if entry["status"] == "complete":
            fitted_now.append(part)
        else:
            failed[part] = entry["error"]
        state["done"] += 1
        if progress is not None:
            elapsed = time.perf_counter() - t_start
            n_done = len(fitted_now) + len(failed)
            remaining = len(todo) - n_done
            progress({"done": len(fitted_now) + len(skipped), "failed": len(failed), "skipped": len(skipped),
                      "remaining": remaining, "total": total, "elapsed_s": elapsed,
                      "eta_s": elapsed / n_done * remaining if n_done else None,
                      "part": part, "status": entry["status"], "error": entry.get("error")})

    if not todo:
        fx.write_index(index)
        return FitResult([], skipped, {}, time.perf_counter() - t_start, index)

    started_here = connect(address, num_cpus=num_cpus)
    try:
        _run(index, root, todo, settings, config_sha, cpus_per_fit, max_retries, record)
    finally:
        if started_here:
            import ray

            ray.shutdown()
    shutil.rmtree(root / fx.WORK_DIR, ignore_errors=True)
    return FitResult(fitted_now, skipped, failed, time.perf_counter() - t_start, index)


def _run(index, root: Path, todo, settings: FitSettings, config_sha: str, cpus: int, retries: int,
         record) -> None:
    import ray

    fit_task = ray.remote(fit_part).options(num_cpus=cpus, max_retries=retries, retry_exceptions=False)
    export_task = ray.remote(export_part).options(num_cpus=cpus, max_retries=retries, retry_exceptions=False)
    s = settings.to_dict()
    pending: dict[Any, tuple[str, str]] = {}  # ref -> (kind, part)
    for part, (folder, _, _) in todo.items():
        pending[fit_task.remote(part, str(folder), str(root), s, cpus)] = ("fit", part)
    fit_info: dict[str, dict] = {}
    group_source: dict[str, tuple[str, str]] = {}  # group -> (part, model dir) of an exported part
    exporting: dict[str, str] = {}  # group -> part being exported
    waiting: dict[str, list[str]] = {}  # group -> fitted parts waiting for the group's IR
    if settings.export != "none":
        for part, e in index.complete().items():  # resume: a complete part of the group is the source
            g = e.get("backbone_group")
            if g and e.get("config_sha256") == config_sha and part not in todo:
                try:
                    group_source.setdefault(g, (part, str(index.model_path(part))))
                except KeyError:
                    pass

    def entry(part: str, status: str, *, error: str | None = None, model: Path | None = None,
              seconds: float = 0.0, group: str | None = None) -> dict:
        folder, data_sha, files = todo[part]
        e: dict[str, Any] = {"status": status, "method": settings.method, "model": None,
                             "data_sha256": data_sha, "config_sha256": config_sha, "data_files": files,
                             "fit_seconds": round(seconds, 3), "updated": fx.utc_now()}
        if error is not None:
            e["error"] = error
        if model is not None:
            from .. import artifact

            m = artifact.read_manifest(model)
            e.update(model=model.relative_to(root).as_posix(), kind=m.kind, precision=m.precision,
                     manifest_sha256=artifact.sha256_file(model / "manifest.json"), backbone_group=group,
                     metrics={"threshold": m.threshold.value, "threshold_method": m.threshold.method,
                              "n_train_images": m.extra.get("n_train_images"),
                              "n_fit_images": m.extra.get("n_fit_images"),
                              "state_bytes": m.extra.get("state_bytes"),
                              "feature_shape": m.extra.get("feature_shape"),
                              "input_size": list(m.preprocess.image_size)})
        return e

    def start_export(group: str, part: str) -> None:
        info = fit_info[part]
        exporting[group] = part
        out = root / fx.MODELS_DIR / part
        calib = str(fx.train_folder(todo[part][0]))
        ref = export_task.remote(part, info["path"], str(out), settings.export, calib, settings.int8_subset, cpus)
        pending[ref] = ("export", part)

    def finish_assembled(part: str, group: str, source: tuple[str, str]) -> None:
        info = fit_info[part]
        out = root / fx.MODELS_DIR / part
        t0 = time.perf_counter()
        try:
            assemble_part(info["path"], source[1], str(out), source[0])
        except Exception as e:  # noqa: BLE001
            record(part, entry(part, "failed", error=f"assemble: {one_line(e)}", seconds=info["seconds"]))
            return
        record(part, entry(part, "complete", model=out, group=group,
                           seconds=info["seconds"] + time.perf_counter() - t0))

    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        kind, part = pending.pop(ref)
        try:
            res = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - worker lost after its retries, or cancelled
            res = {"part": part, "status": "failed", "seconds": 0.0,
                   "error": f"{'export' if kind == 'export' else 'fit'} task lost after {retries} retries: {one_line(e)}"}
        if kind == "fit":
            if res["status"] == "failed":
                record(part, entry(part, "failed", error=res["error"], seconds=res["seconds"]))
                continue
            fit_info[part] = res
            g = res["group"]
            if settings.export == "none":
                record(part, entry(part, "complete", model=Path(res["path"]), seconds=res["seconds"], group=g))
            elif g in group_source:
                finish_assembled(part, g, group_source[g])
            elif g in exporting:
                waiting.setdefault(g, []).append(part)
            else:
                start_export(g, part)
        else:
            g = fit_info[part]["group"]
            exporting.pop(g, None)
            if res["status"] == "failed":
                record(part, entry(part, "failed", error=res["error"], seconds=fit_info[part]["seconds"] + res["seconds"]))
                rest = waiting.get(g, [])
                if rest:  # try the group's IR from another part
                    start_export(g, rest.pop(0))
                continue
            model = Path(res["path"])
            group_source[g] = (part, str(model))
            record(part, entry(part, "complete", model=model, group=g,
                               seconds=fit_info[part]["seconds"] + res["seconds"]))
            for other in waiting.pop(g, []):
                finish_assembled(other, g, group_source[g])
