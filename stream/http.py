"""HTTP plumbing shared by the handlers: JSON responses, errors, access keys.

HTTP status codes are decided here and nowhere in the core:

=======================================  ======
``models.errors.ValidationError``        400
missing or wrong bearer key              401
expired, forged or malformed token       401 (``models.errors.InvalidToken``)
a token call for another customer        403 (``models.errors.TokenScope``)
a token on a call it does not permit     403
``models.errors.NotFound``               404
body over the size limit                 413
no owner known / recovery in progress    503 with ``Retry-After``
``models.errors.ModelError``             503
a table write not confirmed durable      503 with ``Retry-After``
=======================================  ======
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web as aioweb

from models.errors import InvalidToken, ModelError, NotFound, TokenScope, ValidationError
from models.tokens import verify
from stream.durable import ChangelogNotAcknowledged

__all__ = [
    "ApiError",
    "Unavailable",
    "json_response",
    "error_response",
    "route_handler",
    "failure_response",
    "check_key",
    "read_json",
    "FORWARDED_HEADER",
    "TOKEN_HEADER",
    "token_customer",
    "Cors",
]

FORWARDED_HEADER = "X-Offerstream-Forwarded"
TOKEN_HEADER = "X-Offerstream-Token"  # noqa: S105 - a header name, not a secret
log = logging.getLogger("offerstream.http")


class ApiError(Exception):
    """An error with its HTTP status, raised by views."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


class Unavailable(ApiError):
    """The owner of a key is unknown or still recovering: retry shortly."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "unavailable", detail, {"Retry-After": "1"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> aioweb.Response:
    """An ``application/json`` response serialized with orjson."""
    return aioweb.Response(body=orjson.dumps(body), status=status, headers=headers,
                           content_type="application/json")


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> aioweb.Response:
    """The JSON error shape ``{error, detail}`` of every failed call."""
    return json_response({"error": error, "detail": detail, **extra}, status, headers)


def route_handler(fn: Callable[[aioweb.Request], Awaitable[aioweb.Response]],
                  ) -> Callable[[aioweb.Request], Awaitable[aioweb.Response]]:
    """Wrap a handler ``fn(request)`` so every failure becomes a JSON error with the right status."""

    @functools.wraps(fn)
    async def wrapped(request: aioweb.Request) -> aioweb.Response:
        try:
            return await fn(request)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, or logged and a 500
            return failure_response(exc, request, fn.__qualname__)

    return wrapped


def failure_response(exc: Exception, request: aioweb.Request, where: str) -> aioweb.Response:
    """The JSON error response for an exception a handler raised (see the table above)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.error, exc.detail, exc.headers)
    if isinstance(exc, ValidationError):
        return error_response(400, "invalid", str(exc), field=exc.field)
    if isinstance(exc, InvalidToken):
        return error_response(401, "invalid_token", exc.reason,
                              {"WWW-Authenticate": 'OfferstreamToken realm="offerstream"'})
    if isinstance(exc, TokenScope):
        return error_response(403, "forbidden", str(exc), field=exc.field)
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, ModelError):
        return error_response(503, "model_unavailable", str(exc), {"Retry-After": "5"})
    if isinstance(exc, ChangelogNotAcknowledged):
        log.error("%s: %s", where, exc)
        return error_response(503, "unavailable", f"the change was not confirmed durable: {exc}",
                              {"Retry-After": "1"})
    if isinstance(exc, aioweb.HTTPRequestEntityTooLarge):
        return error_response(413, "too_large", f"body over {request.client_max_size} bytes")
    log.error("unhandled error in %s", where, exc_info=exc)
    return error_response(500, "internal", "unexpected server error; see the worker log")


def check_key(request: aioweb.Request, key: str | None) -> None:
    """Require ``Authorization: Bearer <key>`` when ``key`` is configured (timing-safe).

    A customer token grants nothing here: a call carrying one gets a 403 (only the score and
    event calls take tokens, through :func:`token_customer`).
    """
    if TOKEN_HEADER in request.headers:
        raise ApiError(403, "forbidden", f"a customer token ({TOKEN_HEADER}) permits only POST /v1/score "
                       "and POST /v1/events; this call needs the shop's API key from its backend")
    if key is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # The scheme name is case-insensitive (RFC 9110); the key itself is compared in constant time.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong bearer key",
                       {"WWW-Authenticate": 'Bearer realm="offerstream"'})


def token_customer(request: aioweb.Request, token_key: bytes | None) -> str | None:
    """The customer id of the call's ``X-Offerstream-Token``, or ``None`` when it has no token.

    Raises
    ------
    ApiError
        401 if the call has a token but this installation takes none (``OFFERSTREAM_TOKEN_KEY``
        unset).
    models.errors.InvalidToken
        Malformed, forged or expired (401).
    """
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        return None
    if token_key is None:
        raise ApiError(401, "invalid_token", "this installation takes no customer tokens: "
                       "OFFERSTREAM_TOKEN_KEY is not set on the workers")
    return verify(token, token_key)


class Cors:
    """CORS for the two calls a page makes with a token (score, events), for listed origins only.

    Parameters
    ----------
    origins : tuple of str
        ``OFFERSTREAM_CORS_ORIGINS``: exact origins (``https://shop.example``); empty = no
        cross-origin calls at all.
    """

    ALLOW_HEADERS = f"Content-Type, {TOKEN_HEADER}"
    MAX_AGE_S = "600"

    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.origins = frozenset(origins)

    def wrap(self, fn: Callable[[aioweb.Request], Awaitable[aioweb.Response]],
             ) -> Callable[[aioweb.Request], Awaitable[aioweb.Response]]:
        """``fn`` (already mapping failures to JSON) with CORS headers on its answers, errors included."""

        @functools.wraps(fn)
        async def wrapped(request: aioweb.Request) -> aioweb.Response:
            response = await fn(request)
            origin = request.headers.get("Origin")
            if origin is not None:
                response.headers["Vary"] = "Origin"
                if origin in self.origins:
                    response.headers["Access-Control-Allow-Origin"] = origin
            return response

        return wrapped

    async def preflight(self, request: aioweb.Request) -> aioweb.Response:
        """``OPTIONS``: 204 with the allowed method and headers for a listed origin, else 403."""
        origin = request.headers.get("Origin", "")
        if origin not in self.origins:
            return error_response(403, "origin_not_allowed",
                                  f"origin {origin or '(none)'} is not in OFFERSTREAM_CORS_ORIGINS", {"Vary": "Origin"})
        return aioweb.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": self.ALLOW_HEADERS, "Access-Control-Max-Age": self.MAX_AGE_S,
            "Vary": "Origin"})


async def read_json(request: aioweb.Request) -> Any:
    """Read and decode a JSON body (400 naming the problem if it is not JSON)."""
    body = await request.read()
    if not body.strip():
        raise ApiError(400, "invalid", "empty body: a JSON object is required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid", f"body is not valid JSON: {exc}") from None
