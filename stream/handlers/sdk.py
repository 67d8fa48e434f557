"""``GET /sdk/offerstream.js``: the browser kit a shop's page loads (``stream/static/offerstream.js``).

Served from the installed package (package data), so every worker serves the same script as the
version it runs; cached by browsers for a short while and revalidated by ``ETag``.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from aiohttp import web as aioweb

from models.errors import NotFound

__all__ = ["serve_sdk", "SDK_FILE"]

SDK_FILE = Path(__file__).resolve().parent.parent / "static" / "offerstream.js"


@cache
def _script() -> tuple[bytes, str]:
    if not SDK_FILE.is_file():
        raise NotFound(f"the browser kit is not installed ({SDK_FILE.name} is missing from the package)")
    body = SDK_FILE.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def serve_sdk(request: aioweb.Request) -> aioweb.Response:
    """The kit as ``text/javascript`` (304 when the browser's copy is current)."""
    body, etag = _script()
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if request.headers.get("If-None-Match") == etag:
        return aioweb.Response(status=304, headers=headers)
    return aioweb.Response(body=body, content_type="text/javascript", charset="utf-8", headers=headers)
