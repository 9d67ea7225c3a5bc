"""A small HTTP client of a fleet server (standard library only; no Ray needed).

    from npad_edge.fleet import Client
    c = Client("http://127.0.0.1:8000")
    c.predict("bottle", "frame.png")          # a path, PNG/JPEG bytes or an (H, W, 3) uint8 array
    c.parts(), c.health()

One keep-alive connection per Client: use one Client per thread.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote, urlsplit

import numpy as np

from ..errors import InvalidInputError, NpadError

__all__ = ["Client", "FleetHTTPError"]


class FleetHTTPError(NpadError):
    """The server answered with an error: ``status`` (HTTP code) and its one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Client:
    """Client of ``npad-edge serve``. ``url``: ``http://host:port``; ``timeout`` in seconds."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 60.0) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise InvalidInputError(f"url must be http://host:port, got {url!r}")
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
        """Send one request; returns (status, parsed JSON body). Reconnects once on a dropped
        keep-alive connection."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        try:
            parsed = json.loads(data) if data else {}
        except json.JSONDecodeError:
            parsed = {"error": data[:200].decode("utf-8", "replace")}
        return resp.status, parsed

    def _ok(self, status: int, data: dict) -> dict:
        if status >= 400:
            raise FleetHTTPError(status, str(data.get("error", data)))
        return data

    def health(self) -> dict:
        return self._ok(*self.request("GET", "/healthz"))

    def parts(self) -> list[dict]:
        return self._ok(*self.request("GET", "/v1/parts"))["parts"]

    def predict(self, part: str, image: Union[np.ndarray, bytes, str, "os.PathLike[str]"], *,
                maps: bool = False) -> dict:
        """Score one image with ``part``'s model. ``image``: an ``(H, W, 3) uint8`` array (sent
        raw), encoded PNG/JPEG bytes, or a path to such a file (sent as it is). Returns the JSON
        answer (``score``, ``is_anomalous``, ``decision``, ``threshold``, ``timings``; with
        ``maps`` also ``heatmap`` and ``mask`` decoded to arrays). Raises FleetHTTPError."""
        query = "?maps=1" if maps else ""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise InvalidInputError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
            h, w, _ = image.shape
            query += ("&" if query else "?") + f"shape={h},{w},3"
            body = np.ascontiguousarray(image).tobytes()
            ctype = "application/octet-stream"
        else:
            body = Path(os.fspath(image)).read_bytes() if isinstance(image, (str, os.PathLike)) else bytes(image)
            ctype = "image/png" if body[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        out = self._ok(*self.request("POST", f"/v1/parts/{quote(part, safe='')}/predict{query}", body,
                                     {"Content-Type": ctype}))
        if maps:
            from PIL import Image

            out["heatmap"] = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.pop("heatmap_png")))))
            out["mask"] = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.pop("mask_png")))))[..., 0] > 127
        return out
