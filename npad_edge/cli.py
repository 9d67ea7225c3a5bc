"""The ``npad-edge`` command line: fit, export, predict, eval, profile, info, demo.

Heavy modules (torch, OpenVINO, the pipeline) are imported inside the subcommand that needs
them, so ``npad-edge --help`` and ``npad-edge info`` start fast and work on an edge install
without torch. Failures end with ``npad-edge: error: <one line>`` on stderr and exit code 1
(2 for usage errors, 130 for Ctrl-C); ``--debug`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

# Library logic the commands (and older callers of these names) use; light modules.
from ._progress import progress_iter  # noqa: F401
from .predict import IMAGE_SUFFIXES, predict_images, write_scores  # noqa: F401

PROG = "npad-edge"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# How many of the worst-ranked images `eval --report` shows with overlays, per side.
REPORT_WORST_K = 4


class CliError(Exception):
    """A problem with the command line's inputs, reported as one line (exit code 1)."""


class UsageError(Exception):
    """Flags that do not go together (exit code 2, like argparse's own errors)."""


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS so that a flag given before the subcommand is not reset by the subparser default.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars")

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Industrial visual anomaly detection (PatchCore, N-pad) on edge CPUs.",
        epilog="Start with `npad-edge demo` (offline, one to two minutes), then see "
               "`npad-edge <command> --help`.",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    f = sub.add_parser("fit", parents=[common], help="fit a detector on good images (needs the fit extra)",
                       description="Fit a detector on the good training images of one category.")
    f.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="category folder in MVTec layout (DIR/train/good/*.png) or a folder of good images")
    f.add_argument("--method", choices=("patchcore", "npad"), default="patchcore", help="default: patchcore")
    f.add_argument("--backbone", metavar="NAME", help="feature backbone (default: efficientnet_lite2)")
    f.add_argument("--weights", metavar="SOURCE",
                   help="backbone weights: 'imagenet' (default, installed package or torch hub cache) "
                        "or a path to a .pth file")
    f.add_argument("--taps", metavar="A,B[,C]",
                   help="backbone stages to take features from (default: the backbone's; stage2,stage3,stage5 "
                        "for EfficientNet-Lite: the stride-4, stride-8 and stride-16 stages)")
    f.add_argument("--coreset", type=float, metavar="FRACTION",
                   help="fraction of patch features kept in the memory bank, e.g. 0.1")
    f.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any other method setting; VALUE is read as JSON if it parses (repeatable)")
    f.add_argument("--image-size", default="320", metavar="N|HxW",
                   help="model input: N = the short side, the long side following the median aspect ratio "
                        "of the training images (default 320; square images give N x N), or HxW "
                        "explicitly, e.g. 640x256")
    f.add_argument("--aspect-rule", choices=("resize", "letterbox"), default="resize",
                   help="images of another aspect ratio than the model input: squash them (resize, default) "
                        "or pad them to the model's aspect ratio first (letterbox); maps come back at "
                        "each image's own size either way")
    f.add_argument("--resize-on", choices=("graph", "core", "host"), default="core",
                   help="the resize to the model input: by the C++ core before the backbone (core, default: "
                        "the in-graph filter with a float32 hand-over, faster), inside the backbone graph "
                        "(graph: the IR takes frames of any size) or by PIL before it (host: the same filter "
                        "rounded to uint8); docs/runtime.md")
    f.add_argument("--letterbox-fill", choices=("mean", "edge"), default="mean",
                   help="letterbox padding: the normalisation mean (default) or the replicated border")
    f.add_argument("--exposure", choices=("gain", "off"), default="gain",
                   help="gain (default): multiply every image by one gain that brings its mean intensity "
                        "to the training images' median, so exposure and illumination changes between "
                        "good parts do not read as defects; off: no gain")
    f.add_argument("--exposure-target", type=float, default=None, metavar="T",
                   help="the gain's target mean intensity (0..255) instead of the training median, e.g. "
                        "one value for every part of a fleet so that they share one backbone IR")
    f.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    f.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of failing")
    f.add_argument("--out", required=True, type=Path, metavar="MODEL", help="model folder to write")
    f.set_defaults(handler=cmd_fit, subparser=f)

    e = sub.add_parser("export", parents=[common], help="export a fitted model to OpenVINO (needs the fit extra)",
                       description="Export a fitted model for the edge runtime (OpenVINO IR).")
    e.add_argument("--model", required=True, type=Path, metavar="MODEL", help="folder written by `fit`")
    e.add_argument("--out", required=True, type=Path, metavar="EDGE", help="exported model folder to write")
    prec = e.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="half-precision weights")
    prec.add_argument("--int8", action="store_true", help="INT8 post-training quantization (NNCF)")
    e.add_argument("--calib", type=Path, metavar="DIR", help="good images to calibrate INT8 with, e.g. <category>/train/good (required with --int8)")
    e.add_argument("--subset", type=int, metavar="N", help="number of calibration images (default 300)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing folder at --out")
    e.set_defaults(handler=cmd_export, subparser=e)

    pr = sub.add_parser("predict", parents=[common], help="score images, write overlays + scores.csv/json",
                        description="Score images with a model and write heat-map overlays and scores.")
    pr.add_argument("--model", required=True, type=Path, metavar="EDGE", help="exported model folder")
    pr.add_argument("--images", required=True, type=Path, metavar="DIR_OR_FILE",
                    help="an image or a folder searched recursively for images")
    pr.add_argument("--out", required=True, type=Path, metavar="OUT", help="output folder")
    pr.add_argument("--device", default="CPU", help="OpenVINO device (default CPU; see `npad-edge info`)")
    pr.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all)")
    pr.add_argument("--no-overlays", action="store_true", help="write only scores.csv / scores.json")
    pr.add_argument("--tile-scale", type=float, metavar="X",
                    help="score large frames by overlapping tiles of X times the model input (source "
                         "pixels), e.g. 4; default: the whole frame resized to the model input")
    pr.add_argument("--tile-overlap", type=float, default=0.25, metavar="F",
                    help="fraction of a tile shared with its neighbour (default 0.25; with --tile-scale)")
    pr.add_argument("--skip-bad", action="store_true",
                    help="record unreadable images as errors in the scores instead of failing")
    pr.set_defaults(handler=cmd_predict, subparser=pr)

    ev = sub.add_parser("eval", parents=[common], help="evaluate on a labelled test set (AUROC, PRO, F1)",
                        description="Evaluate a model on the test split of a category in MVTec layout. "
                                    "If MODEL and DIR hold one sub-folder per category, every category is "
                                    "evaluated and a mean row is added.")
    ev.add_argument("--model", required=True, type=Path, metavar="MODEL", help="fitted or exported model folder")
    ev.add_argument("--data", required=True, type=Path, metavar="DIR", help="category folder with test/ (and ground_truth/)")
    ev.add_argument("--json", type=Path, metavar="OUT", help="write the full results as JSON")
    ev.add_argument("--report", type=Path, metavar="OUT.html", help="write a self-contained HTML report")
    ev.add_argument("--eval-size", metavar="N|HxW|native|model",
                    help="resolution of the pixel metrics: native (each image's own size), model (the "
                         "model input), N or HxW; default: the model input when all test images have one "
                         "size, else native")
    ev.set_defaults(handler=cmd_eval, subparser=ev)

    pf = sub.add_parser("profile", parents=[common], help="per-stage latency on each device",
                        description="Measure per-stage latency of an exported model on one or more devices.")
    pf.add_argument("--model", required=True, type=Path, metavar="EDGE", help="exported model folder")
    pf.add_argument("--images", required=True, type=Path, metavar="DIR", help="images to run")
    pf.add_argument("--device", default="CPU", metavar="LIST", help="comma-separated devices, e.g. CPU,GPU,AUTO (default CPU)")
    pf.add_argument("--json", type=Path, metavar="OUT", help="write the measurements as JSON")
    pf.set_defaults(handler=cmd_profile, subparser=pf)

    i = sub.add_parser("info", parents=[common], help="versions, search instruction set, OpenVINO devices",
                       description="Print versions, the k-NN search instruction set and the OpenVINO devices.")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(handler=cmd_info, subparser=i)

    d = sub.add_parser("demo", parents=[common], help="offline quickstart on bundled images with synthetic defects",
                       description="Fit, export (INT8), predict and evaluate on small texture images that ship "
                                   "with the package, with SYNTHETIC defects. Shows the workflow; the numbers "
                                   "are not an accuracy claim. Needs the fit extra.")
    d.add_argument("--out", type=Path, default=Path("npad-edge-demo"), metavar="DIR",
                   help="output folder (default ./npad-edge-demo)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    d.set_defaults(handler=cmd_demo, subparser=d)
    _add_fleet_parsers(sub, common)
    return p


def _add_fleet_parsers(sub, common) -> None:
    """``fit-many`` and ``serve`` (the fleet extra, Ray; see docs/fleet.md)."""
    fm = sub.add_parser("fit-many", parents=[common], help="fit one model per part type with Ray (fleet extra)",
                        description="Fit every sub-folder of DATA (one part type each, MVTec layout or plain "
                                    "folder) as a Ray task into the fleet folder FLEET. Re-running skips parts "
                                    "whose model is complete and whose images and settings are unchanged.")
    fm.add_argument("--data", required=True, type=Path, metavar="ROOT", help="folder with one sub-folder per part type")
    fm.add_argument("--out", required=True, type=Path, metavar="FLEET", help="fleet folder (created or resumed)")
    fm.add_argument("--address", metavar="ADDR",
                    help="Ray cluster: 'auto' (this node's cluster) or ray://HEAD:10001; default: start a local Ray")
    fm.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all; without --address)")
    fm.add_argument("--cpus-per-fit", type=int, default=1, metavar="N",
                    help="CPUs per part's task; its torch/BLAS threads (default 1)")
    fm.add_argument("--retries", type=int, default=2, metavar="N", help="retries of a task whose worker died (default 2)")
    fm.add_argument("--method", choices=("patchcore", "npad"), default="patchcore", help="default: patchcore")
    fm.add_argument("--backbone", metavar="NAME", help="feature backbone (default: efficientnet_lite2)")
    fm.add_argument("--taps", metavar="A,B[,C]", help="backbone stages to take features from")
    fm.add_argument("--coreset", type=float, metavar="FRACTION", help="PatchCore memory-bank fraction, e.g. 0.1")
    fm.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="any other method setting (repeatable)")
    fm.add_argument("--image-size", default="320", metavar="N|HxW",
                    help="model input; HxW gives every part the same input, so parts can share a backbone")
    fm.add_argument("--exposure", choices=("gain", "off"), default="gain",
                    help="per-image exposure gain as in fit (default gain)")
    fm.add_argument("--exposure-target", type=float, default=None, metavar="T",
                    help="one gain target for every part, so parts with the same backbone and --image-size HxW "
                         "share one backbone IR (default: each part's training median, one IR per part)")
    fm.add_argument("--resize-on", choices=("graph", "core", "host"), default="core",
                    help="where frames are resized to the model input, as in fit (default core)")
    fm.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    fm.add_argument("--export", choices=("none", "fp32", "fp16", "int8"), default="none",
                    help="export each part for the OpenVINO runtime (int8: calibrated on the training images "
                         "of the first part of each backbone group); default none (fitted models)")
    fm.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of failing the part")
    fm.add_argument("--parts", metavar="A,B", help="fit only these parts")
    fm.set_defaults(handler=cmd_fit_many, subparser=fm)

    sv = sub.add_parser("serve", parents=[common], help="serve a fleet over HTTP with Ray Serve (fleet extra)",
                        description="Serve every complete part of FLEET: POST /v1/parts/{part}/predict, "
                                    "GET /v1/parts, GET /healthz. Runs until Ctrl-C.")
    sv.add_argument("--fleet", required=True, type=Path, metavar="FLEET", help="fleet folder written by fit-many")
    sv.add_argument("--address", metavar="ADDR", help="Ray cluster ('auto' or ray://HEAD:10001); default: local Ray")
    sv.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all)")
    sv.add_argument("--host", default="127.0.0.1", help="HTTP host to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    sv.add_argument("--replicas", type=int, default=1, metavar="N", help="model replicas (default 1)")
    sv.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="N", help="CPUs per replica (default 1)")
    sv.add_argument("--max-resident", type=int, default=32, metavar="N",
                    help="parts loaded per replica, least recently used evicted (default 32)")
    sv.add_argument("--max-batch-size", type=int, default=1, metavar="N",
                    help="requests of one part scored together (default 1: no batching)")
    sv.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS", help="wait for a batch to fill (default 5)")
    sv.add_argument("--max-body-mb", type=float, default=32.0, metavar="MB", help="largest request body (default 32)")
    sv.set_defaults(handler=cmd_serve, subparser=sv)


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to ``sys.exit``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    try:
        args.handler(args, parser)
        return EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `npad-edge info | head -1`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except UsageError as exc:
        # Same format as argparse's own usage errors.
        args.subparser.print_usage(sys.stderr)
        sys.stderr.write(f"{args.subparser.prog}: error: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the boundary: everything becomes one line
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: error: {error_line(exc, debug=args.debug)}\n")
        return EXIT_ERROR


def error_line(exc: BaseException, *, debug: bool = False) -> str:
    """One line that says what went wrong and, where we know it, how to fix it."""
    from .errors import NpadError

    if isinstance(exc, (NpadError, CliError)):
        msg = str(exc)
    elif isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in _FIT_MODULES:
        msg = (f"this command needs the '{exc.name.split('.')[0]}' package: "
               f"pip install 'npad-edge[fit]' (torch CPU first, see the README)")
    elif isinstance(exc, OSError) and exc.filename is not None:
        what = {FileNotFoundError: "not found", IsADirectoryError: "is a folder, expected a file",
                NotADirectoryError: "is not a folder", PermissionError: "permission denied",
                FileExistsError: "already exists (pass --overwrite to replace it)"}.get(type(exc))
        msg = f"{exc.filename}: {what or exc.strerror or exc}"
    elif isinstance(exc, (OSError, ValueError, MemoryError)):
        msg = f"{type(exc).__name__}: {exc}"
    else:
        msg = f"internal error {type(exc).__name__}: {exc}"
        if not debug:
            msg += " (run again with --debug for the traceback and please report it)"
    return " ".join(str(msg).split()) or type(exc).__name__


_FIT_MODULES = {"torch", "nncf"}


# --------------------------------------------------------------------------- helpers


def _require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise CliError(f"{what} not found: {path} ({hint})")
    if not path.is_dir():
        raise CliError(f"{what} must be a folder, got a file: {path} ({hint})")
    return path


def _require_model(path: Path) -> Path:
    return _require_dir(path, "model", "pass the folder written by `npad-edge fit --out` or `npad-edge export --out`")


def list_images(path: Path) -> list[Path]:
    """An image file, or every image under a folder (recursive, sorted): ``predict.list_images``
    with its errors as CliError."""
    from .errors import DataError
    from .predict import list_images as _list

    try:
        return _list(path)
    except DataError as exc:
        raise CliError(str(exc)) from None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_is_num(r[i]) for r in rows) if rows else False for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_num(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


class _Fixed1(float):
    """A float shown with one decimal in tables (percentages, milliseconds)."""


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, _Fixed1):
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _pct(v: Any) -> float | None:
    return None if v is None else _Fixed1(100.0 * float(v))


# --------------------------------------------------------------------------- fit / export


def cmd_fit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    settings = _parse_settings(args.settings)
    if args.coreset is not None:
        if not 0.0 < args.coreset <= 1.0:
            raise UsageError(f"--coreset must be in (0, 1], got {args.coreset}")
        settings["coreset"] = args.coreset
    from .data.geometry import parse_image_size
    from .errors import InvalidInputError

    try:
        image_size = parse_image_size(args.image_size)
    except InvalidInputError as exc:
        raise UsageError(f"--image-size: {exc}") from None
    _require_dir(args.data, "data folder", "pass a category folder holding train/good/, e.g. mvtec_ad/bottle")
    _refuse_dataset_root(args.data)
    _refuse_existing(args.out, args.overwrite)
    from .pipeline import fit_model

    kwargs: dict[str, Any] = dict(method=args.method, image_size=image_size, aspect_rule=args.aspect_rule,
                                  letterbox_fill=args.letterbox_fill, exposure=args.exposure,
                                  exposure_target_value=args.exposure_target, resize_on=args.resize_on,
                                  method_settings=settings or None, seed=args.seed,
                                  overwrite=args.overwrite, on_error="skip" if args.skip_bad else "raise",
                                  progress=not args.quiet)
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.weights:
        kwargs["weights"] = args.weights
    if args.taps:
        kwargs["taps"] = [t.strip() for t in args.taps.split(",") if t.strip()]
    t0 = time.perf_counter()
    out = fit_model(args.data, args.out, **kwargs)
    print(f"fitted {args.method} model written to {out} in {time.perf_counter() - t0:.1f} s")
    if args.method == "npad" and "gaussian" not in (settings or {}):
        from . import artifact

        reading = artifact.read_manifest(out).method.settings.get("gaussian")
        other = {"knn": "window (faster)", "window": "knn"}.get(reading, "window")
        print(f"N-pad reading: {reading} (chosen from how much of the feature variance the position "
              f"explains; --set gaussian={other.split()[0]} for the other)")
    print(f"next: {PROG} eval --model {out} --data {args.data}   or   "
          f"{PROG} export --model {out} --out {out}-int8 --int8 --calib {args.data}")


def _refuse_existing(out: Path, overwrite: bool) -> None:
    # Checked here as well as in the library so that minutes of work are not thrown away at the end.
    if os.path.lexists(out) and not overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")


def _refuse_dataset_root(data: Path) -> None:
    """A model is fitted per category: point at ``mvtec_ad/bottle``, not at ``mvtec_ad``."""
    if (data / "train").is_dir():
        return
    cats = sorted(p.name for p in data.iterdir() if p.is_dir() and (p / "train").is_dir())
    if cats:
        shown = ", ".join(cats[:4]) + (", ..." if len(cats) > 4 else "")
        raise CliError(f"{data} holds several categories ({shown}); fit one at a time, e.g. --data {data / cats[0]}")


def _parse_settings(items: Sequence[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings[key.strip()] = value
    return settings


def cmd_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if (args.calib is not None or args.subset is not None) and not args.int8:
        raise UsageError("--calib and --subset only apply with --int8")
    if args.int8 and args.calib is None:
        raise UsageError("--int8 needs --calib DIR: good images to calibrate with, e.g. <category>/train/good")
    if args.subset is not None and args.subset < 1:
        raise UsageError(f"--subset must be a positive number of images, got {args.subset}")
    _require_model(args.model)
    if args.calib is not None:
        _require_dir(args.calib, "calibration folder", "pass a folder of good images, e.g. mvtec_ad/bottle/train/good")
    _refuse_existing(args.out, args.overwrite)
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    from .export import export_model

    kwargs: dict[str, Any] = dict(precision=precision, overwrite=args.overwrite, progress=not args.quiet)
    if args.int8:
        kwargs["calib"] = args.calib
        if args.subset is not None:
            kwargs["subset"] = args.subset
    t0 = time.perf_counter()
    out = export_model(args.model, args.out, **kwargs)
    print(f"{precision} edge model written to {out} in {time.perf_counter() - t0:.1f} s")
    print(f"next: {PROG} predict --model {out} --images <DIR> --out <OUT>")


# --------------------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require_model(args.model)
    files = list_images(args.images)
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out must be a folder, got a file: {args.out}")
    from . import Detector

    tiling = None
    if args.tile_scale is not None:
        from .data.geometry import Tiling
        from .errors import InvalidInputError

        try:
            tiling = Tiling(scale=args.tile_scale, overlap=args.tile_overlap)
        except InvalidInputError as exc:
            raise UsageError(f"--tile-scale/--tile-overlap: {exc}") from None
    det = Detector.load(args.model, device=args.device, threads=args.threads,
                        **({"tiling": tiling} if tiling is not None else {}))
    root = args.images if args.images.is_dir() else args.images.parent
    rows = predict_images(det, files, root, args.out, overlays=not args.no_overlays,
                          skip_bad=args.skip_bad, progress=not args.quiet,
                          meta={"model": str(args.model), "device": args.device})
    n_bad = sum(1 for r in rows if r["is_anomalous"])
    n_err = sum(1 for r in rows if r["error"])
    ms = [r["ms"] for r in rows if r["ms"] is not None]
    print(f"{len(rows)} images: {n_bad} anomalous (threshold {det.threshold:.4g})"
          + (f", {n_err} unreadable" if n_err else "")
          + (f"; median {statistics.median(ms):.1f} ms/image on {getattr(det, 'device', args.device)}"
             if ms else ""))
    print(f"wrote {args.out / 'scores.csv'}, {args.out / 'scores.json'}"
          + ("" if args.no_overlays else f" and overlays in {args.out / 'overlays'}"))


# --------------------------------------------------------------------------- eval


def eval_jobs(model: Path, data: Path) -> list[tuple[str, Path, Path]]:
    """``(category, model, data)`` pairs: one model, or one model per category sub-folder."""
    _require_model(model)
    _require_dir(data, "data folder", "pass a category folder holding test/, e.g. mvtec_ad/bottle")
    if (model / "manifest.json").is_file():
        return [(data.resolve().name, model, data)]
    subs = sorted(p for p in model.iterdir() if (p / "manifest.json").is_file())
    if not subs:
        raise CliError(f"{model} holds no manifest.json: pass a folder written by `{PROG} fit` "
                       f"(or a folder of such folders, one per category)")
    missing = [p.name for p in subs if not (data / p.name).is_dir()]
    if missing:
        raise CliError(f"no data for categories {', '.join(missing)} under {data} "
                       f"(model sub-folders must match category folders by name)")
    return [(p.name, p, data / p.name) for p in subs]


def cmd_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    eval_size = _parse_eval_size(args.eval_size)
    jobs = eval_jobs(args.model, args.data)
    from .evaluation import evaluate_model

    results = []
    for cat, model, data in jobs:
        if len(jobs) > 1 and not args.quiet:
            sys.stderr.write(f"evaluating {cat} ...\n")
        results.append((cat, model, evaluate_model(model, data, eval_size=eval_size, progress=not args.quiet)))

    rows = [metrics_row(cat, r) for cat, _, r in results]
    if len(rows) > 1:
        rows.append(mean_row(rows))
    print(format_table(EVAL_HEADERS, rows))

    if args.json is not None:
        payload = {cat: result_json(r) for cat, _, r in results}
        _write_text(args.json, json.dumps(payload if len(results) > 1 else payload[results[0][0]], indent=2))
        print(f"wrote {args.json}")
    if args.report is not None:
        from .report import collect_overlays, write_html_report

        for cat, model, r in results:
            out = args.report if len(results) == 1 else args.report.with_name(f"{args.report.stem}_{cat}{args.report.suffix or '.html'}")
            overlays = collect_overlays(r, model, k=REPORT_WORST_K)
            write_html_report(r, out, overlays=overlays, title=f"npad-edge evaluation: {cat}")
            print(f"wrote {out}")


def _parse_eval_size(text: str | None) -> Any:
    """``--eval-size``: None, "native", "model", N (N x N) or HxW; UsageError otherwise."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("native", "model", "auto"):
        return t
    parts = t.replace("*", "x").split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
        vals = [int(p) for p in parts]
        if min(vals) >= 8:
            return vals[0] if len(vals) == 1 else (vals[0], vals[1])
    raise UsageError(f"--eval-size must be native, model, N or HxW with sides of at least 8, got {text!r}")


EVAL_HEADERS = ("category", "image AUROC %", "95% CI", "pixel AUROC %", "PRO %", "images", "eval res",
                "threshold", "F1 thr", "F1 %", "ms/image")


def metrics_row(cat: str, result: Any) -> list[Any]:
    m = result.metrics
    res = m.get("eval_resolution")
    if isinstance(res, (list, tuple)):
        res = "x".join(str(v) for v in res)
    ci = m.get("image_auroc_ci95")
    ci_text = f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}" if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    return [cat, _pct(m.get("image_auroc")), ci_text, _pct(m.get("pixel_auroc")), _pct(m.get("pro")),
            m.get("n_images"), res, m.get("threshold"), m.get("f1_threshold"), _pct(m.get("f1")),
            ms_per_image(result)]


def mean_row(rows: list[list[Any]]) -> list[Any]:
    out: list[Any] = ["mean"]
    for i in range(1, len(EVAL_HEADERS)):
        if EVAL_HEADERS[i] in ("image AUROC %", "pixel AUROC %", "PRO %", "F1 %", "ms/image"):
            vals = [r[i] for r in rows if isinstance(r[i], (int, float))]
            out.append(_Fixed1(sum(vals) / len(vals)) if vals else None)
        elif EVAL_HEADERS[i] == "images":
            out.append(sum(r[i] or 0 for r in rows))
        else:
            out.append(None)
    return out


def ms_per_image(result: Any) -> float | None:
    """Median milliseconds per image of the evaluation run (``result.timings``), if recorded."""
    t = getattr(result, "timings", None) or {}
    v = t.get("median_ms", t.get("mean_ms"))
    return _Fixed1(v) if isinstance(v, (int, float)) else None


def result_json(result: Any) -> Any:
    data = result.to_json()
    return json.loads(data) if isinstance(data, str) else data


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- profile / info / demo


def cmd_profile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require_model(args.model)
    if not args.images.exists():
        raise CliError(f"images not found: {args.images} (pass a folder of images or one image to time)")
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    if not devices:
        raise UsageError("--device needs at least one device name, e.g. CPU or CPU,GPU")
    from .profiling import profile

    result = profile(args.model, args.images, devices, json_out=args.json)
    unavailable = result.get("unavailable") or {}
    if not result.get("devices"):
        raise CliError("; ".join(unavailable.values()) or f"none of {args.device} could be profiled")
    print(format_profile(result))
    for reason in unavailable.values():
        sys.stderr.write(f"{PROG}: warning: {reason}\n")
    if args.json is not None:
        print(f"wrote {args.json}")


PROFILE_STAGES = ("decode", "preprocess", "backbone", "search", "postprocess", "total")


def format_profile(result: dict[str, Any]) -> str:
    """A table of median milliseconds per stage and throughput, one row per device."""
    rows = []
    for dev, r in result["devices"].items():
        st = r.get("stages", {})
        rows.append([dev, r.get("backend"), r.get("precision")]
                    + [st.get(s, {}).get("median_ms") for s in PROFILE_STAGES]
                    + [st.get("total", {}).get("p90_ms"), r.get("sync", {}).get("throughput_ips"),
                       r.get("async", {}).get("throughput_ips")])
    headers = ["device", "backend", "precision"] + [f"{s} ms" for s in PROFILE_STAGES] + \
              ["total p90 ms", "sync img/s", "async img/s"]
    img = result.get("images", {})
    size = img.get("size")
    head = (f"{result.get('model')} ({result.get('kind')}, {result.get('method')}, input "
            f"{'x'.join(str(v) for v in result.get('input_size', []))}); {img.get('count')} images"
            + (f" of {size[0]}x{size[1]}" if size else "") + f", n={result.get('n')}; median ms per image")
    return head + "\n" + format_table(headers, rows)


def cmd_info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from .profiling import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return
    for key, value in _flatten(data):
        print(f"{key}: {value}")


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)):
            yield f"{prefix}{k}", ", ".join(str(x) for x in v) if v else "-"
        else:
            yield f"{prefix}{k}", v


def cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from .demo import run_demo

    run_demo(args.out, overwrite=args.overwrite, progress=not args.quiet, log=print)


# --------------------------------------------------------------------------- fleet (Ray)


def _fleet_image_size(text: str):
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
            size: Any = (h, w)
        else:
            size = int(text)
    except ValueError:
        raise UsageError(f"--image-size must be N or HxW, got {text!r}") from None
    if min(size if isinstance(size, tuple) else (size,)) < 32:
        raise UsageError(f"--image-size must be at least 32, got {text!r}")
    return size


def _require_ray(address: str | None = None) -> None:
    if address is None:
        # A local Ray started by the command stays on the loopback interface (read by Ray when
        # it is imported; a cluster given by --address is left alone).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CliError("this command needs Ray: pip install 'npad-edge[fleet]' (see docs/fleet.md)") from None


def cmd_fit_many(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    settings = _parse_settings(args.settings)
    if args.coreset is not None:
        if not 0.0 < args.coreset <= 1.0:
            raise UsageError(f"--coreset must be in (0, 1], got {args.coreset}")
        settings["coreset"] = args.coreset
    if args.cpus_per_fit < 1 or args.retries < 0:
        raise UsageError("--cpus-per-fit must be >= 1 and --retries >= 0")
    if args.address and args.num_cpus:
        raise UsageError("--num-cpus sizes a local Ray; a cluster given by --address has its own CPUs")
    _require_dir(args.data, "data folder", "pass a folder holding one sub-folder per part type")
    _require_ray(args.address)
    from .fleet.fit import FitSettings, fit_many

    fs = FitSettings(method=args.method, backbone=args.backbone, image_size=_fleet_image_size(args.image_size),
                     method_settings=settings, seed=args.seed, export=args.export, skip_bad=args.skip_bad,
                     exposure=args.exposure, exposure_target=args.exposure_target, resize_on=args.resize_on,
                     taps=[t.strip() for t in args.taps.split(",") if t.strip()] if args.taps else None)

    def progress(ev: dict) -> None:
        if args.quiet:
            return
        eta = "-" if ev["eta_s"] is None else f"{ev['eta_s']:.0f} s"
        what = ev["status"] if ev["status"] == "complete" else f"FAILED: {ev['error']}"
        sys.stderr.write(f"fit-many: {ev['done']}/{ev['total']} done, {ev['failed']} failed, "
                         f"{ev['remaining']} remaining, ETA {eta} | {ev['part']}: {what}\n")
        sys.stderr.flush()

    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    res = fit_many(args.data, args.out, fs, address=args.address, cpus_per_fit=args.cpus_per_fit,
                   num_cpus=args.num_cpus, max_retries=args.retries, parts=parts, progress=progress)
    print(f"fleet {args.out}: {len(res.fitted)} fitted, {len(res.skipped)} unchanged (skipped), "
          f"{len(res.failed)} failed, in {res.seconds:.1f} s")
    for part, reason in sorted(res.failed.items()):
        print(f"  failed {part}: {reason}")
    if res.failed and not res.fitted and not res.skipped:
        raise CliError(f"every part failed ({len(res.failed)}); see the reasons above")


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    _require_dir(args.fleet, "fleet folder", "pass the folder written by `npad-edge fit-many --out`")
    if not (args.fleet / "fleet.json").is_file():
        raise CliError(f"{args.fleet} has no fleet.json; fit a fleet first: {PROG} fit-many --data ROOT --out {args.fleet}")
    _require_ray(args.address)
    from .fleet.serve import ServeSettings, serve_fleet

    st = ServeSettings(num_replicas=args.replicas, cpus_per_replica=args.cpus_per_replica,
                       max_resident=args.max_resident, max_batch_size=args.max_batch_size,
                       batch_wait_ms=args.batch_wait_ms, max_body_bytes=int(args.max_body_mb * 2**20))
    serve_fleet(args.fleet, st, host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus)
    print(f"serving {args.fleet} at http://{args.host}:{args.port}/v1/parts (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        from ray import serve

        serve.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
