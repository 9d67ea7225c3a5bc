"""The interface every anomaly-detection method implements, and its input checks.

A method turns nominal feature maps into a model state (``fit``) and scores feature maps of
new images (``score``). It knows nothing about images, backbones or files: features come in
as ``(N, D, h, w) float32`` arrays and the state goes out as a dict of plain numpy arrays, so
the artifact layer can store it without pickle and the edge runtime can use it without torch.
"""

from __future__ import annotations

import json
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..errors import InvalidInputError, ModelFormatError

__all__ = ["AnomalyMethod", "ProgressFn", "check_features"]

#: ``progress(stage, done, total)``; called now and then during a long fit.
ProgressFn = Callable[[str, int, int], None]


def check_features(features: Any, name: str = "features", *, dim: int | None = None,
                   hw: tuple[int, int] | None = None) -> np.ndarray:
    """Check a ``(N, D, h, w) float32`` feature array; return it as C-contiguous (no copy if it is).

    Raises InvalidInputError naming what was expected and what came; never casts dtypes.
    """
    if not isinstance(features, np.ndarray):
        raise InvalidInputError(f"{name}: expected a numpy array (N, D, h, w) float32, got {type(features).__name__}")
    if features.dtype != np.float32:
        raise InvalidInputError(f"{name}: expected dtype float32, got {features.dtype}")
    if features.ndim != 4:
        raise InvalidInputError(f"{name}: expected shape (N, D, h, w), got {features.shape}")
    if min(features.shape) < 1:
        raise InvalidInputError(f"{name}: empty array of shape {features.shape}")
    if dim is not None and features.shape[1] != dim:
        raise InvalidInputError(f"{name}: expected feature dim D={dim}, got {features.shape[1]}")
    if hw is not None and tuple(features.shape[2:]) != tuple(hw):
        raise InvalidInputError(f"{name}: expected spatial size {tuple(hw)}, got {tuple(features.shape[2:])}")
    if not np.isfinite(features).all():
        raise InvalidInputError(f"{name}: contains NaN or infinite values")
    return np.ascontiguousarray(features)


def to_rows(features: np.ndarray) -> np.ndarray:
    """``(N, D, h, w)`` -> ``(N*h*w, D)`` C-contiguous float32, rows ordered (n, i, j)."""
    n, d, h, w = features.shape
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(n * h * w, d))


class AnomalyMethod:
    """Base class: subclasses define ``name``, ``DEFAULTS``, ``_fit``, ``_score``, ``_state``, ``_load``.

    Attributes
    ----------
    name : str
        Registry name (``get_method(name)``).
    settings : dict
        JSON-able settings, defaults filled in. Unknown keys raise InvalidInputError.
    """

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(self.DEFAULTS))
        if unknown:
            raise InvalidInputError(
                f"{self.name}: unknown setting(s) {unknown}; valid settings are {sorted(self.DEFAULTS)}")
        merged = dict(self.DEFAULTS)
        merged.update(settings)
        self.settings: dict[str, Any] = self._validate(merged)
        try:
            json.dumps(self.settings)
        except TypeError as exc:  # pragma: no cover - guarded by _validate
            raise InvalidInputError(f"{self.name}: settings must be JSON-able: {exc}") from None
        self._fitted = False
        self.feature_dim: int | None = None
        self.feature_hw: tuple[int, int] | None = None

    # -- subclass hooks ------------------------------------------------------------------
    def _validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        return settings

    def _fit(self, features: np.ndarray, seed: int, progress: ProgressFn | None) -> None:
        raise NotImplementedError

    def _score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load(self, arrays: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def fit(self, features: np.ndarray, *, seed: int = 0, progress: ProgressFn | None = None) -> "AnomalyMethod":
        """Fit on nominal features ``(N, D, h, w) float32``. Returns self.

        ``progress(stage, done, total)`` is called now and then; ``seed`` fixes every random step.
        """
        features = check_features(features)
        self.feature_dim = int(features.shape[1])
        self.feature_hw = (int(features.shape[2]), int(features.shape[3]))
        self._fit(features, int(seed), progress)
        self._fitted = True
        return self

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score ``(B, D, h, w) float32`` -> ``(patch_scores (B, h, w) float32, image_scores (B,) float32)``."""
        if not self._fitted:
            raise InvalidInputError(f"{self.name}: score() called before fit() or from_state()")
        features = check_features(features, dim=self.feature_dim, hw=self._expected_hw())
        patch, image = self._score(features)
        return np.ascontiguousarray(patch, dtype=np.float32), np.ascontiguousarray(image, dtype=np.float32)

    def _expected_hw(self) -> tuple[int, int] | None:
        return None

    #: whether the image score is the peak of the anomaly map's own grid (then the image
    #: threshold also serves the map's mask); a method that scores images otherwise says False
    #: and ``map_peaks`` gives the map's peaks for a pixel threshold of their own
    @property
    def image_score_is_map_peak(self) -> bool:
        return True

    def map_peaks(self, patch: np.ndarray) -> np.ndarray:
        """``(B, h, w)`` patch scores (the map's grid) -> ``(B,)`` their peaks, by the image-score
        rule of the settings (``image_score="smoothed"``: ``smoothed_max``; else the largest).
        N-pad's image score is this rule on its image grid."""
        patch = np.asarray(patch, dtype=np.float32)
        if self.settings.get("image_score") == "smoothed":
            return smoothed_max(patch, float(self.settings.get("image_sigma", 0.5)))
        return patch.reshape(patch.shape[0], -1).max(axis=1)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named numpy arrays (no object arrays; safe for ``.npy`` without pickle)."""
        if not self._fitted:
            raise InvalidInputError(f"{self.name}: state_arrays() called before fit()")
        state = self._state()
        state["_meta"] = np.array([self.feature_dim, *self.feature_hw], dtype=np.int64)
        return state

    #: Settings a saved model may lack (written before the setting existed) and the value it
    #: was fitted and scored with; the defaults of new fits can differ.
    SAVED_WITHOUT: Mapping[str, Any] = {}

    @classmethod
    def from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "AnomalyMethod":
        """Rebuild a fitted method from ``settings`` and ``state_arrays()``; scores are identical."""
        settings = dict(settings)
        for key, value in cls.SAVED_WITHOUT.items():
            settings.setdefault(key, value)
        obj = cls(**settings)
        if "_meta" not in arrays:
            raise ModelFormatError(f"{cls.name}: state arrays lack '_meta'")
        meta = np.asarray(arrays["_meta"])
        obj.feature_dim = int(meta[0])
        obj.feature_hw = (int(meta[1]), int(meta[2]))
        try:
            obj._load(arrays)
        except KeyError as exc:
            raise ModelFormatError(f"{cls.name}: state arrays lack {exc}; have {sorted(arrays)}") from None
        obj._fitted = True
        return obj

    def state_nbytes(self) -> int:
        """Bytes of the stored state (what the model directory holds for this method)."""
        return int(sum(a.nbytes for a in self.state_arrays().values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


def require_choice(settings: Mapping[str, Any], key: str, choices: tuple) -> None:
    if settings[key] not in choices:
        raise InvalidInputError(f"setting {key!r} must be one of {list(choices)}, got {settings[key]!r}")


def require_number(settings: Mapping[str, Any], key: str, *, lo: float | None = None,
                   hi: float | None = None, integer: bool = False, allow_none: bool = False,
                   lo_open: bool = False) -> None:
    v = settings[key]
    if v is None and allow_none:
        return
    ok_type = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.integer, np.floating))
    if isinstance(v, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise InvalidInputError(f"setting {key!r} must be {kind}{' or None' if allow_none else ''}, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidInputError(f"setting {key!r} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise InvalidInputError(f"setting {key!r} must be <= {hi}, got {v!r}")


def smoothed_max(patch: np.ndarray, sigma: float) -> np.ndarray:
    """Image scores as the peak of the smoothed patch-score grid: (B, h, w) float32 -> (B,) float32.

    The grid is blurred with a separable Gaussian of ``sigma`` grid cells (weights
    ``postprocess.gaussian_kernel1d``, edges repeated), accumulated in float64, then the
    largest value per image is taken; ``sigma == 0`` is the plain maximum. This is the image
    score of the anomaly map the product shows (the map's blur is sigma 4 input pixels, half a
    cell of the stride-8 grid), so one isolated high patch counts less than a defect's region.
    """
    b = patch.shape[0]
    if sigma <= 0:
        return patch.reshape(b, -1).max(axis=1)
    from ..postprocess import gaussian_kernel1d

    k = gaussian_kernel1d(sigma)
    r = (k.size - 1) // 2
    x = np.pad(patch.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="edge")
    h, w = patch.shape[1:]
    rows = sum(k[t] * x[:, t:t + h, :] for t in range(k.size))          # (B, h, w + 2r)
    out = sum(k[t] * rows[:, :, t:t + w] for t in range(k.size))        # (B, h, w)
    return out.reshape(b, -1).max(axis=1).astype(np.float32)
