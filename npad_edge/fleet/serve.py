"""Serve a fleet over HTTP with Ray Serve: one ingress, a pool of multiplexed model replicas.

    POST /v1/parts/{part}/predict   body: a PNG/JPEG/BMP file, or raw uint8 RGB with ?shape=H,W,3
                                    ?maps=1 adds the heat map and mask as base64 PNG
    GET  /v1/parts                  the servable parts
    GET  /healthz                   {"status": "ok", ...} with the resident parts of the replica asked

Two deployments: ``FleetIngress`` (FastAPI: checks and decodes the request, 0 CPUs) and
``PartReplica`` (``num_replicas`` replicas, ``cpus_per_replica`` each). Each replica loads a part's
``Detector`` on first use through ``@serve.multiplexed`` (LRU, at most ``max_resident`` per
replica; Serve routes a part's requests to a replica that has it loaded) and shares one compiled
backbone between parts of a backbone group (``CompiledModelCache``). Requests for one part are
batched (``max_batch_size``, ``batch_wait_ms``; ``@serve.batch``, split by part).

Every bad request gets a 4xx and a one-line JSON body ``{"error": "..."}``: unknown part (404),
unknown route (404), wrong method (405), undecodable image / bad shape / bad parameter (400),
body over ``max_body_bytes`` (413). A model directory that fails to load is the server's
problem and answers 503 with its one-line reason; nothing else should reach 500.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations
# (``request: Request``) as objects, and Request is imported inside build_app.
import base64
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageDecodeError, InvalidInputError, ModelFormatError, NpadError
from . import index as fx

__all__ = ["ServeSettings", "build_app", "serve_fleet", "APP_NAME"]

log = logging.getLogger(__name__)

APP_NAME = "npad_edge_fleet"


@dataclass
class ServeSettings:
    """Settings of a fleet server.

    ``num_replicas`` model replicas of ``cpus_per_replica`` CPUs each (OpenVINO uses that many
    threads); ``max_resident`` parts loaded per replica (LRU); ``max_batch_size`` requests of
    one part scored together, waiting at most ``batch_wait_ms`` for a batch to fill (1 = no
    batching); ``max_ongoing_requests`` per replica; ``max_body_bytes`` and ``max_pixels``
    bound a request's image.
    """

    num_replicas: int = 1
    cpus_per_replica: float = 1.0
    threads: int | None = None
    max_resident: int = 32
    max_batch_size: int = 1
    batch_wait_ms: float = 5.0
    max_ongoing_requests: int = 16
    max_body_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    device: str = "CPU"

    def __post_init__(self) -> None:
        for name in ("num_replicas", "max_resident", "max_batch_size", "max_ongoing_requests",
                     "max_body_bytes", "max_pixels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive int, got {v!r}")
        if not self.cpus_per_replica > 0:
            raise InvalidInputError(f"cpus_per_replica must be > 0, got {self.cpus_per_replica!r}")
        if self.threads is None:
            self.threads = max(1, int(self.cpus_per_replica))


# --------------------------------------------------------------------------- request parsing (no Ray)


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"H,W,3"`` (or ``HxWx3``) -> (H, W, 3); raises RequestError(400)."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise RequestError(400, f"shape must be H,W,3 (integers), got {text!r}") from None
    if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
        raise RequestError(400, f"shape must be H,W,3 with H, W >= 1 (RGB uint8), got {text!r}")
    return shape  # type: ignore[return-value]


def decode_body(body: bytes, shape: str | None, max_pixels: int) -> np.ndarray:
    """The request body as an ``(H, W, 3) uint8`` C-contiguous RGB array; raises RequestError(400)."""
    if not body:
        raise RequestError(400, "empty body: send a PNG/JPEG image, or raw uint8 RGB bytes with ?shape=H,W,3")
    if shape is not None:
        h, w, c = parse_shape(shape)
        if h * w > max_pixels:
            raise RequestError(413, f"image of {h}x{w} pixels is over the limit of {max_pixels}")
        if len(body) != h * w * c:
            raise RequestError(400, f"raw body is {len(body)} bytes, shape {h},{w},{c} needs {h * w * c}")
        return np.frombuffer(body, dtype=np.uint8).reshape(h, w, c).copy()
    from ..data import decode_image

    try:
        return decode_image(body, name="request body", max_pixels=max_pixels)
    except (ImageDecodeError, InvalidInputError) as e:
        raise RequestError(400, f"{e} (send PNG/JPEG/BMP, or raw uint8 RGB with ?shape=H,W,3)") from None


def prediction_json(part: str, pred, threshold: float, maps: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "part": part, "score": pred.score, "is_anomalous": pred.is_anomalous,
        "decision": "anomalous" if pred.is_anomalous else "good", "threshold": threshold,
        "image_size": list(pred.anomaly_map.shape), "timings": {k: round(v, 3) for k, v in pred.timings.items()},
    }
    if maps:
        from ..viz import apply_colormap, map_range, to_png_bytes

        lo, hi = map_range(threshold)
        heat = apply_colormap(pred.anomaly_map, vmin=lo, vmax=hi)
        mask = np.repeat((pred.mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
        out["heatmap_png"] = base64.b64encode(to_png_bytes(heat)).decode("ascii")
        out["mask_png"] = base64.b64encode(to_png_bytes(mask)).decode("ascii")
    return out


# --------------------------------------------------------------------------- Ray Serve


def build_app(fleet: str | os.PathLike, settings: ServeSettings | None = None):
    """The Serve application (bound deployments) for ``fleet``; ``serve.run`` it."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from ray import serve
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    root = str(Path(os.fspath(fleet)).resolve())
    if not (Path(root) / fx.INDEX_NAME).is_file():
        raise InvalidInputError(f"{root} has no {fx.INDEX_NAME}; fit a fleet first (npad-edge fit-many)")

    @serve.deployment(num_replicas=settings.num_replicas, max_ongoing_requests=settings.max_ongoing_requests,
                      ray_actor_options={"num_cpus": settings.cpus_per_replica})
    class PartReplica:
        def __init__(self, fleet_root: str, cfg: dict) -> None:
            from .models import PartModels

            self.cfg = ServeSettings(**cfg)
            self.models = PartModels(fleet_root, max_resident=self.cfg.max_resident, device=self.cfg.device,
                                     threads=self.cfg.threads)
            self.resident: dict[str, int] = {}  # part -> id() of its _Resident
            self._batched.set_max_batch_size(self.cfg.max_batch_size)
            self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_ms / 1000.0)

        @serve.multiplexed(max_num_models_per_replica=settings.max_resident)
        async def get_model(self, part: str):
            import asyncio

            self.models.reload()
            det = await asyncio.get_running_loop().run_in_executor(None, self.models.load, part)
            model = _Resident(part, det, self.resident)
            self.resident[part] = id(model)
            return model

        async def predict(self, image: np.ndarray, maps: bool) -> dict:
            part = serve.get_multiplexed_model_id()
            try:
                if self.cfg.max_batch_size > 1:
                    res = await self._batched((image, maps))
                else:
                    model = await self.get_model(part)
                    import asyncio

                    pred = await asyncio.get_running_loop().run_in_executor(None, model.detector.predict, image)
                    res = prediction_json(part, pred, model.detector.threshold, maps)
            except RequestError as e:
                return {"_status": e.status, "error": e.message}
            except NpadError as e:
                status = 404 if isinstance(e, KeyError) else 503 if isinstance(e, ModelFormatError) else 400
                return {"_status": status, "error": " ".join(str(e).split())}
            return res

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def _batched(self, items: list) -> list:
            import asyncio

            part = serve.get_multiplexed_model_id()
            model = await self.get_model(part)
            images = [im for im, _ in items]
            preds = await asyncio.get_running_loop().run_in_executor(None, model.detector.predict_batch, images)
            return [prediction_json(part, p, model.detector.threshold, mp) for p, (_, mp) in zip(preds, items)]

        def status(self) -> dict:
            return {"resident": sorted(self.resident), "loads": self.models.loads,
                    "compiled_backbones": len(self.models.cache) if self.models.cache is not None else None,
                    "pid": os.getpid()}

    app = FastAPI(title="npad_edge fleet", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        text = {404: f"no route {request.method} {request.url.path}; see GET /v1/parts, "
                     "POST /v1/parts/{part}/predict, GET /healthz",
                405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, text)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error(400, f"bad request: {exc.errors()[0].get('msg', 'invalid parameter') if exc.errors() else exc}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # the last resort: still one line
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error {type(exc).__name__}: {exc}")

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                      max_ongoing_requests=max(64, settings.max_ongoing_requests * settings.num_replicas))
    @serve.ingress(app)
    class FleetIngress:
        def __init__(self, replica, fleet_root: str, cfg: dict) -> None:
            self.replica = replica
            self.root = Path(fleet_root)
            self.cfg = ServeSettings(**cfg)
            self._index_mtime = None
            self._index = None

        def _parts(self) -> dict:
            path = self.root / fx.INDEX_NAME
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                mtime = None
            if self._index is None or mtime != self._index_mtime:
                self._index = fx.read_index(self.root)
                self._index_mtime = mtime
            return self._index.complete()

        @app.get("/healthz")
        async def healthz(self):
            st = await self.replica.status.remote()
            return {"status": "ok", "parts": len(self._parts()), "replica": st}

        @app.get("/v1/parts")
        async def parts(self):
            out = []
            for k, e in sorted(self._parts().items()):
                m = e.get("metrics") or {}
                out.append({"part": k, "method": e.get("method"), "kind": e.get("kind"),
                            "precision": e.get("precision"), "threshold": m.get("threshold"),
                            "input_size": m.get("input_size")})
            return {"parts": out}

        @app.post("/v1/parts/{part}/predict")
        async def predict(self, part: str, request: Request):
            try:
                if part not in self._parts():
                    raise RequestError(404, f"unknown part {part!r}; GET /v1/parts lists the "
                                            f"{len(self._parts())} parts of this fleet")
                q = request.query_params
                unknown = sorted(set(q) - {"shape", "maps"})
                if unknown:
                    raise RequestError(400, f"unknown query parameter(s) {', '.join(unknown)}; "
                                            "accepted: shape=H,W,3 (raw uint8 body), maps=1")
                maps_q = q.get("maps", "0").lower()
                if maps_q not in ("0", "1", "true", "false"):
                    raise RequestError(400, f"maps must be 0 or 1, got {q.get('maps')!r}")
                limit = self.cfg.max_body_bytes
                declared = request.headers.get("content-length")
                if declared is not None:
                    try:
                        n = int(declared)
                    except ValueError:
                        raise RequestError(400, f"bad Content-Length {declared!r}") from None
                    if n > limit:
                        raise RequestError(413, f"body of {n} bytes is over the limit of {limit} bytes")
                body = bytearray()
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise RequestError(413, f"body is over the limit of {limit} bytes")
                image = decode_body(bytes(body), q.get("shape"), self.cfg.max_pixels)
            except RequestError as e:
                return error(e.status, e.message)
            res = await self.replica.options(multiplexed_model_id=part).predict.remote(
                image, maps_q in ("1", "true"))
            status = res.pop("_status", 200)
            return JSONResponse(res, status_code=status)

    cfg = asdict(settings)
    return FleetIngress.bind(PartReplica.bind(root, cfg), root, cfg)


class _Resident:
    """What ``serve.multiplexed`` caches per part; Serve calls ``__del__`` when it evicts it."""

    def __init__(self, part: str, detector, resident: dict) -> None:
        self.part, self.detector, self._resident = part, detector, resident

    def __del__(self) -> None:
        # Serve calls this on eviction, the garbage collector once more later: only the entry of
        # this very object is removed (the part may have been loaded again since).
        if self._resident.get(self.part) == id(self):
            del self._resident[self.part]


def serve_fleet(fleet: str | os.PathLike, settings: ServeSettings | None = None, *, host: str = "127.0.0.1",
                port: int = 8000, address: str | None = None, num_cpus: int | None = None):
    """Start (or join) Ray and Serve, deploy the fleet app at ``http://host:port/`` and return its
    handle. ``address`` as in :func:`npad_edge.fleet.connect`."""
    from ray import serve

    from .fit import connect

    if not (Path(os.fspath(fleet)) / fx.INDEX_NAME).is_file():  # before starting anything
        raise InvalidInputError(f"{fleet} has no {fx.INDEX_NAME}; fit a fleet first (npad-edge fit-many)")
    connect(address, num_cpus=num_cpus)
    app = build_app(fleet, settings)
    serve.start(http_options={"host": host, "port": int(port)})
    return serve.run(app, name=APP_NAME, route_prefix="/")
