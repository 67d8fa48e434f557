"""A small synchronous client for the HTTP API (stdlib only), used by the CLI and the demo."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

import orjson

__all__ = ["ApiClient"]


class ApiClient:
    """Calls one worker's HTTP API.

    Parameters
    ----------
    base_url : str
        ``http://host:port`` of any worker.
    api_key : str, optional
        Bearer key for write calls; default ``$OFFERSTREAM_API_KEY``.
    score_key : str, optional
        Bearer key for ``POST /v1/score``; default ``$OFFERSTREAM_SCORE_KEY``.
    """

    def __init__(self, base_url: str, api_key: str | None = None, score_key: str | None = None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OFFERSTREAM_API_KEY")
        self.score_key = score_key or os.environ.get("OFFERSTREAM_SCORE_KEY")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return ``(status, decoded JSON body or text)``."""
        data = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        key = self.score_key if path.startswith("/v1/score") else self.api_key
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def json(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = 200) -> Any:
        """Like :meth:`request`, but raise ``RuntimeError`` unless the status is expected."""
        status, payload = self.request(method, path, body)
        if status not in ((expect,) if isinstance(expect, int) else expect):
            raise RuntimeError(f"{method} {path} answered {status}: {payload}")
        return payload


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
