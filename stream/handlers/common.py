"""Small helpers the handlers share: the clock and the Global Privacy Control header."""

from __future__ import annotations

import time

from aiohttp import web as aioweb

__all__ = ["now_ms", "gpc"]


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


def gpc(request: aioweb.Request) -> bool:
    """True if the call carries ``Sec-GPC: 1`` (Global Privacy Control)."""
    return request.headers.get("Sec-GPC", "").strip() == "1"
