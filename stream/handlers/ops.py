"""``/health``, ``/metrics``, ``/openapi.json`` and the demo page: the operator's calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web as aioweb

from models.errors import NotFound
from stream.http import json_response
from stream.openapi import build_openapi
from stream.readiness import Readiness

__all__ = ["OpsApi"]


class OpsApi:
    """Readiness, metrics, the API document and the demo page.

    ``render_metrics`` returns the Prometheus text; ``static_dir`` holds ``demo.html`` and its
    assets (``None``: no demo page).
    """

    def __init__(self, readiness: Readiness, render_metrics: Callable[[], str], url: str,
                 static_dir: Path | None) -> None:
        self.readiness, self.render_metrics, self.url, self.static_dir = readiness, render_metrics, url, static_dir

    async def health(self, request: aioweb.Request) -> aioweb.Response:
        """200 when ready, else 503; the body says why either way."""
        report: dict[str, Any] = self.readiness.health()
        return json_response(report, 200 if report["ready"] else 503)

    async def metrics(self, request: aioweb.Request) -> aioweb.Response:
        """Prometheus text."""
        return aioweb.Response(text=self.render_metrics(), content_type="text/plain")

    async def openapi(self, request: aioweb.Request) -> aioweb.Response:
        """The OpenAPI 3.0 document of this API."""
        return json_response(build_openapi(self.url))

    async def demo(self, request: aioweb.Request) -> aioweb.Response:
        """The demo shop page."""
        page = self.static_dir / "demo.html" if self.static_dir is not None else None
        if page is None or not page.is_file():
            raise NotFound("the demo page is not installed")
        return aioweb.Response(body=page.read_bytes(), content_type="text/html", charset="utf-8")
