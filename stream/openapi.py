"""The OpenAPI document of the HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_openapi"]


def build_openapi(server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document for a worker at ``server_url``."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "offerstream", "version": "0.1.0"},
        "servers": [{"url": server_url}],
        "paths": {},
    }
