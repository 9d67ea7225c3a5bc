"""The torch side of the runtime: fitted models on the CPU, and the CUDA device end to end.

Imported only when a model runs in torch (a fitted model, or ``device="CUDA"``); the OpenVINO
runtime never imports it, so the edge install needs no torch. torch itself is imported inside
the functions, and nothing here imports OpenVINO, NNCF or hnswlib: the CUDA path works on a
machine that has only torch (tests/test_cuda.py checks that in a subprocess).

- :class:`TorchBackend`: uint8 images -> features with a ``backbones.FeatureExtractor`` on the
  CPU (fit time, and fitted models in the runtime). ``npad_edge.pipeline`` re-exports it.
- :func:`check_cuda_request`: what ``Detector(..., device="CUDA")`` may run, checked from the
  manifest before anything is loaded: an INT8 export is refused (its quantised graph is
  OpenVINO's; torch would silently run the float network instead), an unknown or missing GPU
  raises :class:`~npad_edge.errors.DeviceError` listing the available ones.
- :class:`DevicePipeline`: backbone, memory-bank search and anomaly map on one torch device,
  with per-stage times from CUDA events (``perf_counter`` on the CPU, where torch runs
  synchronously). Device-agnostic: the tests run it on CPU tensors against the numpy path.

Precision on the device: ``"fp32"`` (float32 everywhere, TF32 left at torch's default, off),
``"fp16"`` / ``"bf16"`` (backbone under ``torch.autocast``, first search pass in that dtype,
exact float32 re-rank of the candidates; see ``_torch_search``). The Mahalanobis term of N-pad
and the maps are float32 in every mode.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from ..errors import DeviceError, InvalidInputError, NpadError

__all__ = ["TorchBackend", "DEFAULT_BACKBONE", "DEFAULT_THREADS", "check_cuda_request", "cuda_devices",
           "DevicePipeline", "PatchCoreScorer", "NPadScorer", "PRECISIONS"]

log = logging.getLogger(__name__)

#: EfficientNet-Lite2 since stop 26 (Lite0 before): at the product's input (short side 320) it
#: raised PRO on both real categories for both methods, over two seeds and end to end, for a
#: 1.2-1.33x INT8 backbone (+4 to +16 % per frame); docs/accuracy.md, section 000000.
DEFAULT_BACKBONE = "efficientnet_lite2"
DEFAULT_THREADS = 2

#: device precision -> (autocast dtype name or None, first-pass search dtype)
PRECISIONS = {"fp32": (None, "float32"), "fp16": ("float16", "float16"), "bf16": ("bfloat16", "bfloat16")}
# OpenVINO's names (Detector's inference_precision) for the same
_HINT_TO_PRECISION = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _torch():
    import torch

    return torch


# ============================================================================ CPU backend
class TorchBackend:
    """uint8 images -> features with a torch ``FeatureExtractor`` (fit time, or evaluation of a
    fitted model without an exported IR).

    ``input_size``: (H, W) the extractor resizes to. ``feature_hw``: (h, w) of the output grid.
    """

    def __init__(self, extractor, *, threads: int | None = DEFAULT_THREADS):
        torch = _torch()
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.extractor = extractor.eval()
        self.input_size: tuple[int, int] = tuple(extractor.image_size)  # type: ignore[assignment]
        self.feature_hw: tuple[int, int] = tuple(extractor.grid_size)  # type: ignore[assignment]
        self.feature_dim: int = int(extractor.out_dim)

    @classmethod
    def create(cls, backbone: str = DEFAULT_BACKBONE, *, image_size: int | tuple[int, int] = 256,
               weights: str = "imagenet", taps: Sequence[str] | None = None, feature_dim: int | None = None,
               normalization: str = "imagenet", threads: int | None = DEFAULT_THREADS,
               exposure: dict | None = None, resize_on: str = "graph") -> "TorchBackend":
        from ..backbones import FeatureExtractor, create_backbone
        bb = create_backbone(backbone, weights=weights, taps=taps, normalization=normalization)
        return cls(FeatureExtractor(bb, image_size=image_size, feature_dim=feature_dim, exposure=exposure,
                                    resize_on=resize_on), threads=threads)

    def config(self) -> dict[str, Any]:
        return self.extractor.config()

    def extract(self, images) -> np.ndarray:
        """images: (B, H, W, 3) uint8 array, or a list of (H_i, W_i, 3) uint8 arrays (any sizes)
        -> (B, D, h, w) float32 C-contiguous. An extractor with ``resize_on="core"`` takes
        float32 images at ``input_size`` (``data.geometry.core_resize``)."""
        torch = _torch()
        dt = np.dtype(getattr(self.extractor, "input_dtype", "uint8"))
        if isinstance(images, np.ndarray):
            if images.dtype != dt or images.ndim != 4 or images.shape[-1] != 3:
                raise InvalidInputError(f"expected images (B, H, W, 3) {dt}, got {images.shape} {images.dtype}")
            batches = [images]
        else:
            images = list(images)
            if not images:
                raise InvalidInputError("expected at least one image")
            for i, im in enumerate(images):
                if not isinstance(im, np.ndarray) or im.dtype != dt or im.ndim != 3 or im.shape[-1] != 3:
                    raise InvalidInputError(f"image {i}: expected (H, W, 3) {dt}, got "
                                            f"{getattr(im, 'shape', type(im))} {getattr(im, 'dtype', '')}")
            # same-size images go through as one batch; mixed sizes one by one (resize is inside)
            if len({im.shape for im in images}) == 1:
                batches = [np.stack(images)]
            else:
                batches = [im[None] for im in images]
        out = []
        with torch.inference_mode():
            for b in batches:
                out.append(self.extractor(torch.from_numpy(np.ascontiguousarray(b))).numpy())
        return np.ascontiguousarray(np.concatenate(out) if len(out) > 1 else out[0], dtype=np.float32)


def import_torch_for_fitted():
    """torch, or NpadError saying how to run a fitted model without it."""
    if "torch" not in sys.modules:
        # torch's OpenMP threads otherwise spin after each call and slow the search that
        # follows (2x on 2 cores). Read once, when torch loads; a user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return _torch()
    except ImportError:
        raise NpadError("fitted model needs torch; export it (npad-edge export --model MODEL --out EDGE) to run it "
                        "with OpenVINO, or install torch") from None


# ============================================================================ device checks
def is_cuda_name(device: Any) -> bool:
    """``"CUDA"``, ``"cuda"``, ``"CUDA:1"``: the names that select this module's device path."""
    return isinstance(device, str) and device.strip().upper().split(":")[0] == "CUDA"


def cuda_devices() -> list[str]:
    """``["CUDA:0", ...]`` for the GPUs torch sees here ([] without torch or CUDA)."""
    try:
        torch = _torch()
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [f"CUDA:{i}" for i in range(torch.cuda.device_count())]


def device_precision(manifest, inference_precision: str | None) -> str:
    """The precision the device path runs: ``inference_precision`` (``"f32"``, ``"f16"``,
    ``"bf16"``, or ``"fp32"``/``"fp16"``) if given, else the model's (``fp16`` for an FP16
    export, ``fp32`` otherwise). INT8 is refused (DeviceError): no INT8 graph runs in torch."""
    if manifest.precision == "int8":
        raise DeviceError(
            "device 'CUDA' cannot run an INT8 model: its quantised graph is OpenVINO's, and torch would run "
            "the float network instead while the model says int8. Load the fitted model (or an FP32/FP16 "
            "export) with device='CUDA' (inference_precision='f16' for half precision), or run this model on "
            "an OpenVINO device ('CPU', 'GPU')")
    if inference_precision is None:
        return "fp16" if manifest.precision == "fp16" else "fp32"
    p = str(inference_precision).lower()
    p = _HINT_TO_PRECISION.get(p, p)
    if p not in PRECISIONS:
        raise InvalidInputError(f"inference_precision for CUDA must be one of 'f32', 'f16', 'bf16'; "
                                f"got {inference_precision!r}")
    return p


def check_cuda_request(manifest, device: str, inference_precision: str | None = None) -> tuple[str, str]:
    """Check that ``device`` (a CUDA name) can run the model of ``manifest`` here.

    Returns ``(torch device "cuda:N", precision "fp32" | "fp16" | "bf16")``. Raises, before any
    file but the manifest is read: DeviceError for an INT8 model, for no CUDA GPU, or for a GPU
    index that does not exist (listing the available devices); NpadError without torch.
    """
    precision = device_precision(manifest, inference_precision)
    name = device.strip().upper()
    head, _, idx = name.partition(":")
    if head != "CUDA" or (idx and not idx.isdigit()):
        raise DeviceError(f"device {device!r} is not a CUDA device name; use 'CUDA' or 'CUDA:<index>'")
    try:
        torch = _torch()
    except ImportError:
        raise NpadError(f"device {device!r} needs torch with CUDA; install torch, or use an OpenVINO device "
                        "('CPU', 'GPU')") from None
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} is not available: torch {torch.__version__} sees no CUDA GPU; "
                          "available: CPU (and the OpenVINO devices of an exported model)")
    n = torch.cuda.device_count()
    i = int(idx) if idx else 0
    if i >= n:
        raise DeviceError(f"device {device!r} is not available; available: CPU, "
                          + ", ".join(f"CUDA:{j}" for j in range(n)))
    return f"cuda:{i}", precision


# ============================================================================ scorers
def _state(method) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    # The public contract of a fitted method: its settings and state arrays (what the model stores).
    return dict(method.settings), method.state_arrays()


def _smoothed_max(patch, sigma: float):
    """methods.base.smoothed_max on a tensor: (B, h, w) float32 -> (B,) float32, the same
    weights, edge padding and float64 accumulation order."""
    torch = _torch()
    b = patch.shape[0]
    if sigma <= 0:
        return patch.reshape(b, -1).max(dim=1).values
    from ..postprocess import gaussian_kernel1d

    k = gaussian_kernel1d(sigma)
    r = (k.size - 1) // 2
    h, w = patch.shape[1:]
    x = torch.nn.functional.pad(patch.double()[:, None], (r, r, r, r), mode="replicate")[:, 0]
    rows = sum(float(k[t]) * x[:, t:t + h, :] for t in range(k.size))
    out = sum(float(k[t]) * rows[:, :, t:t + w] for t in range(k.size))
    return out.reshape(b, -1).max(dim=1).values.float()


class PatchCoreScorer:
    """PatchCore's scoring on a torch device: ``score(features (B, D, h, w) float32 tensor) ->
    (patch scores (B, h, w) float32, image scores (B,) float32)``, the numpy method's rules
    (nearest-neighbour Euclidean distance; max or the paper's reweighting). The search is the
    exact :class:`TorchFlatIndex` for every model: a model fitted with ``index="hnsw"`` scores
    with exact neighbours here (equal to or below its approximate CPU distances)."""

    def __init__(self, method, device, search_dtype: str = "float32", **index_kw: Any) -> None:
        from ._torch_search import TorchFlatIndex

        torch = _torch()
        settings, arrays = _state(method)
        self.settings = settings
        bank = np.ascontiguousarray(np.asarray(arrays["bank"]), dtype=np.float32)
        self.index = TorchFlatIndex(bank, device=device, dtype=search_dtype, **index_kw)
        self.device = torch.device(device)
        self.feature_dim = int(bank.shape[1])

    def score(self, features):
        torch = _torch()
        b, d, h, w = features.shape
        q = features.permute(0, 2, 3, 1).reshape(b * h * w, d).contiguous()
        dist2, idx = self.index.search(q, 1, check_finite=False)
        patch = torch.sqrt(torch.clamp(dist2[:, 0], min=0.0)).reshape(b, h * w)
        if self.settings["image_score"] == "max":
            image = patch.max(dim=1).values
        elif self.settings["image_score"] == "smoothed":
            image = _smoothed_max(patch.reshape(b, h, w), self.settings["image_sigma"])
        else:
            image = self._reweighted(q.reshape(b, h * w, d), patch, idx[:, 0].reshape(b, h * w))
        return patch.reshape(b, h, w), image

    def _reweighted(self, q, patch, nn_idx):
        # methods.patchcore.reweighted_image_scores on tensors (float64 where it is float64)
        torch = _torch()
        bank = self.index.bank
        rows = torch.arange(patch.shape[0], device=patch.device)
        worst = torch.argmax(patch, dim=1)
        d_star = patch[rows, worst].double()
        m_star = bank[nn_idx[rows, worst]]
        k = min(int(self.settings["reweight_neighbors"]), self.index.ntotal)
        support = self.index.search(m_star.contiguous(), k, check_finite=False)[1]
        qw = q[rows, worst].double()
        dist = torch.linalg.vector_norm(bank[support].double() - qw[:, None, :], dim=2)
        shift = torch.maximum(dist.max(dim=1).values, d_star)
        frac = torch.exp(d_star - shift) / torch.exp(dist - shift[:, None]).sum(dim=1)
        return ((1.0 - frac) * d_star).float()


class NPadScorer:
    """N-pad's scoring on a torch device, the numpy method's rules: reduction, per-position
    Mahalanobis distance (``gaussian="window"``: the stored inverse Cholesky factors;
    ``"knn"``: the local Gaussian of the k nearest stored nominal features in the window,
    one grid row of positions at a time, Woodbury form in float64), nearest-centroid
    Euclidean distance, nominal normalisation and combination."""

    def __init__(self, method, device, search_dtype: str = "float32", **index_kw: Any) -> None:
        from ._torch_search import TorchFlatIndex

        torch = _torch()
        s, a = _state(method)
        self.settings = s
        self.device = dev = torch.device(device)
        f32 = lambda name: torch.from_numpy(np.ascontiguousarray(np.asarray(a[name], dtype=np.float32))).to(dev)
        self.proj = f32("proj") if "proj" in a else None
        self.proj_mean = f32("proj_mean") if "proj" in a else None
        self.stats = np.asarray(a["stats"], dtype=np.float64)
        self.pos_stats = f32("pos_stats") if "pos_stats" in a else None
        self.means = self.factors = self.nominal = None
        if s["combine"] != "euclidean" and s["gaussian"] == "knn":
            self.nominal = f32("nominal").permute(0, 3, 1, 2).contiguous()     # (N, D, h, w)
        elif s["combine"] != "euclidean":
            self.means = f32("means")                                           # (P, D)
            p, d = self.means.shape
            packed = np.asarray(a["factors_packed"]).astype(np.float32)
            tri = np.tril_indices(d)
            full = np.zeros((p, d, d), dtype=np.float32)
            full[:, tri[0], tri[1]] = packed
            self.factors_t = torch.from_numpy(np.ascontiguousarray(full.transpose(0, 2, 1))).to(dev)   # W^T
        self.index = None
        if s["combine"] != "mahalanobis":
            self.index = TorchFlatIndex(np.ascontiguousarray(np.asarray(a["centroids"], dtype=np.float32)),
                                        device=dev, dtype=search_dtype, **index_kw)
        meta = np.asarray(a["_meta"])
        self.feature_dim = int(meta[0])

    def _knn_maha(self, x):
        """x (B, h, w, D) float32 -> (B, h, w) float32: methods.npad._knn_mahalanobis on the
        device (the same neighbours up to float32 ties, the Woodbury form in float64)."""
        torch = _torch()
        fn = torch.nn.functional
        s = self.settings
        r, k = s["radius"], s["knn_k"]
        sh = s["shrinkage"] if s["shrinkage"] > 0 else 1e-6
        b, h, w, d = x.shape
        n = self.nominal.shape[0]
        ks = 2 * r + 1
        padded = fn.pad(self.nominal, (r, r, r, r))                              # (N, D, h+2r, w+2r)
        valid = fn.pad(torch.ones((1, 1, h, w), device=x.device), (r, r, r, r))
        out = torch.empty((b, h, w), dtype=torch.float32, device=x.device)
        c = (1.0 - sh) / (k - 1)
        for i in range(h):                      # one grid row of positions: (w, N * ks^2, D) candidates
            cand = fn.unfold(padded[:, :, i:i + ks], ks)                          # (N, D * S, w)
            cand = cand.view(n, d, ks * ks, w).permute(3, 0, 2, 1).reshape(w, n * ks * ks, d)
            ok = fn.unfold(valid[:, :, i:i + ks], ks).view(ks * ks, w).T > 0.5   # (w, S)
            ok = ok[:, None, :].expand(w, n, ks * ks).reshape(w, n * ks * ks)
            q = x[:, i].transpose(0, 1)                                           # (w, B, D)
            d2 = ((q * q).sum(-1)[:, :, None] + (cand * cand).sum(-1)[:, None, :]
                  - 2.0 * torch.bmm(q, cand.transpose(1, 2)))
            d2 = d2.masked_fill(~ok[:, None, :], float("inf"))
            kk = min(k, int(ok.sum(1).min()))
            nn = torch.topk(d2, kk, dim=2, largest=False).indices                 # (w, B, kk)
            z = torch.gather(cand[:, None].expand(w, b, -1, d), 2,
                             nn[..., None].expand(w, b, kk, d)).double()          # (w, B, kk, D)
            mu = z.mean(2)
            z = z - mu[:, :, None]
            v = q.double() - mu
            lam = torch.clamp(sh * (z * z).sum((2, 3)) / ((kk - 1) * d), min=1e-12)
            zv = torch.einsum("wbkd,wbd->wbk", z, v)
            g = c * torch.matmul(z, z.transpose(2, 3)) + lam[..., None, None] * torch.eye(kk, dtype=z.dtype,
                                                                                        device=z.device)
            sol = torch.linalg.solve(g, zv[..., None])[..., 0]
            m2 = ((v * v).sum(-1) - c * (zv * sol).sum(-1)) / lam
            out[:, i] = torch.sqrt(torch.clamp(m2, min=0.0)).T.float()
        return out

    def score(self, features):
        torch = _torch()
        s = self.settings
        b, _, h, w = features.shape
        x = features.permute(0, 2, 3, 1)
        if self.proj is not None:
            x = torch.matmul(x - self.proj_mean, self.proj)
        x = x.contiguous()
        d = x.shape[-1]
        maha = eucl = None
        if self.means is not None:
            xp = x.reshape(b, h * w, d).transpose(0, 1)                       # (P, B, D)
            step = max(1, (1 << 22) // max(1, b * d))                           # positions per block
            parts = []
            for p0 in range(0, h * w, step):
                diff = xp[p0:p0 + step] - self.means[p0:p0 + step, None, :]
                z = torch.bmm(diff, self.factors_t[p0:p0 + step])
                parts.append(torch.sqrt((z * z).sum(2)))
            maha = torch.cat(parts).T.reshape(b, h, w)
        elif self.nominal is not None:
            maha = self._knn_maha(x)
        if self.index is not None:
            dist2, _ = self.index.search(x.reshape(-1, d), 1, check_finite=False)
            eucl = torch.sqrt(torch.clamp(dist2[:, 0], min=0.0)).reshape(b, h, w)
        zm = ze = None
        if maha is not None:
            if self.pos_stats is not None:
                zm = (maha - self.pos_stats[0]) / torch.clamp(self.pos_stats[1], min=1e-12)
            else:
                zm = (maha.double() - float(self.stats[0, 0])) / float(self.stats[0, 1])
        if eucl is not None:
            ze = (eucl.double() - float(self.stats[1, 0])) / float(self.stats[1, 1])
        if s["combine"] == "mahalanobis":
            patch = zm
        elif s["combine"] == "euclidean":
            patch = ze
        elif s["combine"] == "max":
            patch = torch.maximum(zm.double(), ze)
        else:
            patch = s["weight"] * zm.double() + (1.0 - s["weight"]) * ze
        patch = patch.float()
        grid = patch
        if s.get("image_combine") == "max" and zm is not None and ze is not None:
            grid = torch.maximum(zm.double(), ze.double()).float()
        if s.get("image_score") == "smoothed":
            return patch, _smoothed_max(grid, s["image_sigma"])
        return patch, grid.reshape(b, -1).max(dim=1).values


def make_scorer(method, device, search_dtype: str = "float32", **index_kw: Any):
    """The device scorer of a fitted method object (``methods.method_class(...).from_state``)."""
    name = getattr(method, "name", None)
    if name == "patchcore":
        return PatchCoreScorer(method, device, search_dtype, **index_kw)
    if name == "npad":
        return NPadScorer(method, device, search_dtype, **index_kw)
    raise InvalidInputError(f"method {name!r} has no device scorer (known: patchcore, npad)")


# ============================================================================ timing
class _StageClock:
    """Marks between stages: CUDA events on a GPU (read after the final synchronisation), host
    ``perf_counter`` on the CPU (torch CPU ops are synchronous)."""

    def __init__(self, device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            torch = _torch()
            e = torch.cuda.Event(enable_timing=True)
            e.record(torch.cuda.current_stream(self.device))  # the stream of this device, not the current one
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def spans_ms(self) -> list[float]:
        """Milliseconds between consecutive marks (call after synchronising)."""
        if self.cuda:
            return [float(a.elapsed_time(b)) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1000.0 for a, b in zip(self.marks, self.marks[1:])]


class DeviceFeatures:
    """What :meth:`DevicePipeline.extract` returns: the features on the device plus the clock
    that timed the upload and the backbone (read in :meth:`DevicePipeline.finish`)."""

    __slots__ = ("tensor", "clock")

    def __init__(self, tensor, clock: _StageClock) -> None:
        self.tensor = tensor
        self.clock = clock

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


# ============================================================================ pipeline
class DevicePipeline:
    """Backbone + search + anomaly map on one torch device.

    Args:
        extractor: a ``backbones.FeatureExtractor`` (moved to ``device``).
        method: the fitted method object (PatchCore or N-pad); its state is copied to the device.
        device: torch device (``"cuda:0"``, or ``"cpu"`` for tests).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (module docstring).
        input_size: (H, W) of the model input; ``sigma``: map blur; ``pixel_threshold``: mask.
        index_kw: passed to :class:`TorchFlatIndex` (``bank_block``, ``block_elems``, ``extra``).

    ``extract(images (B, H, W, 3) uint8) -> DeviceFeatures``; ``finish(features, sizes) ->
    (scores (B,) float32, maps [(H_i, W_i) float32], masks [(H_i, W_i) bool], stage ms)`` with
    stage ms ``{"backbone", "search", "postprocess"}`` for the whole batch: ``backbone`` includes
    the upload of the uint8 images, ``postprocess`` the map, the mask and their download.
    """

    def __init__(self, extractor, method, *, device: Any, precision: str = "fp32",
                 input_size: tuple[int, int], sigma: float, pixel_threshold: float, **index_kw: Any) -> None:
        torch = _torch()
        if precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        amp, search_dtype = PRECISIONS[precision]
        self._amp = None if amp is None else getattr(torch, amp)
        self.inference_precision = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[precision]
        self.extractor = extractor.to(self.device).eval()
        self.scorer = make_scorer(method, self.device, search_dtype, **index_kw)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.sigma = float(sigma)
        self.pixel_threshold = float(pixel_threshold)
        self._ops: dict = {}

    def __repr__(self) -> str:
        return f"DevicePipeline(device={str(self.device)!r}, precision={self.precision!r})"

    @property
    def name(self) -> str:
        """``"CUDA:0"`` / ``"CPU"``: the device as the Detector reports it."""
        if self.device.type == "cuda":
            return f"CUDA:{self.device.index if self.device.index is not None else 0}"
        return self.device.type.upper()

    def extract(self, images: np.ndarray) -> DeviceFeatures:
        """``(B, H, W, 3) uint8`` -> features ``(B, D, h, w) float32`` on the device (not waited for)."""
        torch = _torch()
        clock = _StageClock(self.device)
        clock.mark()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=False)
            if self._amp is None:
                f = self.extractor(x)
            else:
                with torch.autocast(device_type=self.device.type, dtype=self._amp):
                    f = self.extractor(x)
            f = f.float().contiguous()
        clock.mark()
        return DeviceFeatures(f, clock)

    def _operator(self, n_grid: int, n_model: int, n_out: int):
        key = (n_grid, n_model, n_out)
        op = self._ops.get(key)
        if op is None:
            from ..postprocess import axis_operator

            torch = _torch()
            op = torch.from_numpy(np.array(axis_operator(n_grid, n_model, n_out, self.sigma))).to(self.device)
            if len(self._ops) > 64:
                self._ops.clear()
            self._ops[key] = op
        return op

    def finish(self, features: DeviceFeatures, sizes: Sequence[tuple[int, int]]):
        torch = _torch()
        feats, clock = features.tensor, features.clock
        with torch.inference_mode():
            finite = torch.isfinite(feats).all()
            patch, image = self.scorer.score(feats)
            clock.mark()
            b, h, w = patch.shape
            groups: dict = {}
            for i, hw in enumerate(sizes):
                groups.setdefault((int(hw[0]), int(hw[1])), []).append(i)
            out: dict = {}
            for (oh, ow), ids in groups.items():
                ly = self._operator(h, self.input_size[0], oh)                  # (H, h)
                lxt = self._operator(w, self.input_size[1], ow).T               # (w, W)
                p = patch[ids] if len(ids) < b else patch
                m = torch.matmul(ly, torch.matmul(p, lxt))                      # (n, H, W)
                out[(oh, ow)] = (ids, m, m >= self.pixel_threshold)
            host = {key: (ids, m.cpu().numpy(), k.cpu().numpy()) for key, (ids, m, k) in out.items()}
            scores = image.cpu().numpy().astype(np.float32)
            ok = bool(finite.cpu())
        clock.mark()
        if clock.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        if not ok:
            raise InvalidInputError("features: contains NaN or infinite values (the backbone's output)")
        maps = [None] * b
        masks = [None] * b
        for ids, m, k in host.values():
            for j, i in enumerate(ids):
                maps[i] = m[j]
                masks[i] = k[j]
        upload_backbone, search, post = clock.spans_ms()
        return scores, maps, masks, {"backbone": upload_backbone, "search": search, "postprocess": post}

    def score_features(self, features_np: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scorer alone on host features ``(B, D, h, w) float32`` -> numpy (patch, image); for
        comparing with the numpy method."""
        torch = _torch()
        with torch.inference_mode():
            patch, image = self.scorer.score(torch.from_numpy(np.ascontiguousarray(features_np)).to(self.device))
            return patch.cpu().numpy(), image.cpu().numpy()


def build_device_pipeline(manifest, method, device: str, precision: str, *, input_size, sigma: float,
                          pixel_threshold: float, **index_kw: Any) -> DevicePipeline:
    """The :class:`DevicePipeline` of a loaded model (``manifest`` and its method object)."""
    from ..backbones import FeatureExtractor

    extractor = FeatureExtractor.from_config(manifest.backbone.config)
    return DevicePipeline(extractor, method, device=device, precision=precision, input_size=input_size,
                          sigma=sigma, pixel_threshold=pixel_threshold, **index_kw)


def gpu_name(device) -> str | None:
    """``torch.cuda.get_device_name`` of a CUDA device, None otherwise."""
    torch = _torch()
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else None

