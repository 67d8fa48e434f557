"""The OpenAPI document: valid OpenAPI 3.0.3, and in step with the routes and parsers it describes."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis

from models.catalog import KINDS
from models.consent import FLAGS, GCM_RESTRICTS
from models.decision import MAX_CANDIDATES, MAX_K
from models.events import CHANNELS, EVENT_TYPES, TS_MAX_MS, TS_MIN_MS
from stream.openapi import MAX_BODY, ROUTES, build_openapi

STREAM = Path(__file__).resolve().parents[2] / "stream"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi("http://127.0.0.1:6066")


def views_routes() -> dict[tuple[str, str], str | None]:
    """``{(method, path): key setting checked or None}`` read from the route table's source.

    ``stream/routes.py``'s ``route_table`` names each handler as ``area.method``; the area's
    class (its parameter's annotation) is found in ``stream/handlers/``, and the key setting is
    the attribute its method passes to ``check_key``.
    """
    table = next(n for n in ast.walk(ast.parse((STREAM / "routes.py").read_text()))
                 if isinstance(n, ast.FunctionDef) and n.name == "route_table")
    classes = {a.arg: ast.unparse(a.annotation) for a in table.args.args if a.annotation is not None}
    methods: dict[tuple[str, str], ast.AsyncFunctionDef] = {}
    for source in (STREAM / "handlers").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AsyncFunctionDef):
                        methods[(node.name, item.name)] = item
    found: dict[tuple[str, str], str | None] = {}
    for call in ast.walk(table):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Route":
            method, path = call.args[0].value, call.args[1].value  # type: ignore[attr-defined]
            if "." not in ast.unparse(call.args[2]):  # a plain function (the browser kit): no key
                found[(method.lower(), path)] = None
                continue
            area, name = ast.unparse(call.args[2]).split(".")
            found[(method.lower(), path)] = _key_checked(methods, classes[area], name)
    return found


def _key_checked(methods: dict[tuple[str, str], ast.AsyncFunctionDef], cls: str, name: str) -> str | None:
    """The key setting a handler method (or a ``self._helper`` it awaits) passes to ``check_key``."""
    for inner in ast.walk(methods[(cls, name)]):
        if isinstance(inner, ast.Call) and getattr(inner.func, "id", "") == "check_key":
            return ast.unparse(inner.args[1]).rsplit(".", 1)[-1]
        helper = getattr(inner.func, "attr", None) if isinstance(inner, ast.Call) else None
        if helper is not None and helper != name and (cls, helper) in methods \
                and ast.unparse(inner.func).startswith("self."):
            key = _key_checked(methods, cls, helper)
            if key is not None:
                return key
    return None


def test_document_is_valid_openapi_3_0(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.0.3"
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # the OpenAPI 3.0 meta-schema bundled with schemathesis
    assert len(list(schema.get_all_operations())) == len(ROUTES)
    json.dumps(doc)  # plain JSON data only


def test_the_validator_really_rejects_a_broken_document(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    del broken["paths"]["/health"]["get"]["responses"]
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_route_of_the_route_table_is_documented(doc: dict[str, Any]) -> None:
    routes = views_routes()
    assert len(routes) >= 12, routes
    assert set(routes) == set(ROUTES), "stream/openapi.py ROUTES is out of step with stream/routes.py"
    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert documented == set(ROUTES)


def test_security_matches_the_key_checks_of_the_handlers(doc: dict[str, Any]) -> None:
    scheme = {"api_key": "apiKey", "score_key": "scoreKey", None: None}
    for (method, path), key in views_routes().items():
        op = doc["paths"][path][method]
        if scheme[key] is None:
            assert not op.get("security"), (method, path)
            assert "401" not in op["responses"], (method, path)
        else:
            # the key applies only when configured: the empty requirement {} makes it optional;
            # the two calls a shop's page makes also take a customer token instead
            token = [{"customerToken": []}] if path in ("/v1/score", "/v1/events") else []
            assert op["security"] == [{scheme[key]: []}, *token, {}], (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"], (method, path)
    assert set(doc["components"]["securitySchemes"]) == {"apiKey", "scoreKey", "customerToken"}
    assert doc["components"]["securitySchemes"]["customerToken"]["name"] == "X-Offerstream-Token"
    for s in (doc["components"]["securitySchemes"][name] for name in ("apiKey", "scoreKey")):
        assert s["type"] == "http" and s["scheme"] == "bearer" and "only when" in s["description"]


def test_every_ref_resolves_and_every_error_uses_the_error_schema(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ref in walk(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"] and "field" in error["properties"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and path != "/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_enums_and_limits_match_the_parsers(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    event = schemas["Event"]
    assert event["required"] == ["event_id", "type", "customer_id", "ts"]
    assert event["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert event["properties"]["channel"]["enum"] == list(CHANNELS)
    number_ts = schemas["Timestamp"]["oneOf"][1]
    assert (number_ts["minimum"], number_ts["maximum"]) == (TS_MIN_MS, TS_MAX_MS - 1)
    score = schemas["ScoreRequest"]["properties"]
    assert (score["k"]["minimum"], score["k"]["maximum"]) == (1, MAX_K)
    assert score["candidates"]["maxItems"] == MAX_CANDIDATES
    assert schemas["Context"]["properties"]["channel"]["enum"] == list(CHANNELS)
    assert list(schemas["ConsentUpdate"]["properties"]["flags"]["properties"]) == list(FLAGS)
    assert list(schemas["ConsentUpdate"]["properties"]["gcm"]["properties"]) == list(GCM_RESTRICTS)
    assert schemas["OfferInput"]["properties"]["kind"]["enum"] == list(KINDS)
    assert schemas["OfferInput"]["properties"]["requires"]["items"]["enum"] == list(FLAGS)


def test_body_limit_matches_the_web_server() -> None:
    source = (STREAM / "app.py").read_text()
    assert '"client_max_size": 4 * 1024 * 1024' in source and MAX_BODY == 4 * 1024 * 1024
    op = build_openapi("http://x")["paths"]["/v1/events"]["post"]
    assert set(op["responses"]) == {"202", "400", "401", "403", "413"}  # 403: a token for another customer
    assert set(op["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}


def test_server_url_is_the_workers_own(doc: dict[str, Any]) -> None:
    assert doc["servers"] == [{"url": "http://127.0.0.1:6066"}]
    assert build_openapi("http://10.0.0.5:7000")["servers"] == [{"url": "http://10.0.0.5:7000"}]
