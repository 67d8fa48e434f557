"""The HTTP plumbing: decision ids, handlers mapped to JSON errors, and the one route table."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import make_mocked_request

from models.errors import ModelError, NotFound, ValidationError
from stream.handlers.score import decision_id
from stream.http import ApiError, Unavailable, route_handler


def test_decision_ids_have_uuid4_hex_format_and_bits() -> None:
    ids = {decision_id() for _ in range(2000)}
    assert len(ids) == 2000
    for d in ids:
        parsed = uuid.UUID(hex=d)
        assert len(d) == 32 and parsed.hex == d
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


FAILURES = [
    (ApiError(401, "unauthorized", "no key", {"WWW-Authenticate": "Bearer"}), 401, "unauthorized"),
    (Unavailable("moving"), 503, "unavailable"),
    (ValidationError("k", "bad k"), 400, "invalid"),
    (NotFound("nope"), 404, "not_found"),
    (ModelError("no model"), 503, "model_unavailable"),
    (aioweb.HTTPRequestEntityTooLarge(max_size=10, actual_size=20), 413, "too_large"),
    (RuntimeError("bug"), 500, "internal"),
]


@pytest.mark.parametrize(("exc", "status", "error"), FAILURES)
def test_route_handler_maps_failures_to_json_errors(exc: Exception, status: int, error: str) -> None:
    async def plain(request: aioweb.Request) -> aioweb.Response:
        raise exc

    async def main() -> aioweb.Response:
        return await route_handler(plain)(make_mocked_request("POST", "/v1/score"))

    reply = asyncio.run(main())
    assert reply.status == status and reply.content_type == "application/json"
    assert isinstance(reply.body, bytes) and orjson.loads(reply.body)["error"] == error
    if isinstance(exc, ApiError):
        assert all(reply.headers[k] == v for k, v in exc.headers.items())


def test_route_handler_passes_answers_through() -> None:
    async def plain(request: aioweb.Request) -> aioweb.Response:
        return aioweb.Response(body=b"{}", content_type="application/json")

    reply = asyncio.run(route_handler(plain)(make_mocked_request("POST", "/v1/score")))
    assert reply.status == 200 and reply.body == b"{}"


def test_mounted_routes_serve_their_methods_with_json_errors_and_the_body_limit() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from stream.http import read_json
    from stream.routes import Route, mount

    web_app = aioweb.Application(client_max_size=1024)

    async def echo(request: aioweb.Request) -> aioweb.Response:
        body = await read_json(request)
        if body.get("bad"):
            raise ValidationError("bad", "is bad")
        return aioweb.Response(body=orjson.dumps({"name": request.match_info["name"], **body}),
                               content_type="application/json")

    mount(web_app, [Route("POST", "/v1/echo/{name}", echo)])

    async def main() -> list[tuple[int, bytes, str | None]]:
        async with TestClient(TestServer(web_app)) as client:
            out = []
            for method, body in (("POST", b'{"a": 1}'), ("POST", b'{"bad": 1}'), ("POST", b"[1,"),
                                 ("POST", b'{"x": "' + b"y" * 2000 + b'"}'), ("GET", b"")):
                response = await client.request(method, "/v1/echo/n1", data=body)
                out.append((response.status, await response.read(), response.headers.get("Allow")))
            return out

    ok, bad, not_json, too_large, get = asyncio.run(main())
    assert ok[:2] == (200, orjson.dumps({"name": "n1", "a": 1}))
    assert bad[0] == 400 and orjson.loads(bad[1])["field"] == "bad"
    assert not_json[0] == 400 and orjson.loads(not_json[1])["error"] == "invalid"
    assert too_large[0] == 413 and orjson.loads(too_large[1])["error"] == "too_large"
    # another method: a JSON 405 naming the allowed ones
    assert get[0] == 405 and orjson.loads(get[1])["error"] == "method_not_allowed" and get[2] == "POST"
