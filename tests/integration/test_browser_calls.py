"""Browser calls on real workers (issue 16, item 3): customer tokens, 401/403, CORS, nothing stored.

Two workers of one group run with access keys, ``OFFERSTREAM_TOKEN_KEY`` and one allowed origin.
A token call needs no key; it may score for, and send events of, its own customer only; another
customer id gets a 403, an expired, forged or malformed token a 401, and in neither case is
anything stored (checked with a sentinel event sent afterwards: the customer's partition applies
events in order, so when the sentinel is in the profile, a stored forbidden event would be too).
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.tokens import mint
from stream.embedded.process import EmbeddedBroker
from tests.integration.workers import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

TOKEN_KEY = "browser-calls-token-key-0123456789"  # noqa: S105 - a test key
ORIGIN = "https://shop.example"
KEYS = {"OFFERSTREAM_API_KEY": "bc-api-key-0123456789", "OFFERSTREAM_SCORE_KEY": "bc-score-key-0123456789"}
ENV = {**KEYS, "OFFERSTREAM_TOKEN_KEY": TOKEN_KEY, "OFFERSTREAM_CORS_ORIGINS": f"{ORIGIN}, http://localhost:9"}
TS = 1_780_000_000_000


def call(url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], Any]:
    """One request with exactly ``headers`` (no key unless given); ``(status, headers, body)``."""
    data = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
    req = urllib.request.Request(url + path, data=data, method=method)  # noqa: S310
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310
            status, got, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, got, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, got, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return status, got, raw.decode(errors="replace")


def token(customer: str, ttl: int = 300, key: str = TOKEN_KEY, now: float | None = None) -> dict[str, str]:
    return {"X-Offerstream-Token": mint(customer, key.encode(), ttl_s=ttl, now_s=now)}


def event(customer: str | None, kind: str = "product_view", **extra: Any) -> dict[str, Any]:
    out = {"event_id": f"bc-{uuid.uuid4().hex}", "type": kind, "ts": TS, "item_id": "i1", "category": "shoes",
           "price": 10.0, **extra}
    if customer is not None:
        out["customer_id"] = customer
    return out


@pytest.fixture(scope="module")
def workers(broker: EmbeddedBroker, trained_registry: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    data = tmp_path_factory.mktemp("browser-calls")
    first = WorkerProcess(broker.url, data, app_id="browser-calls", registry=trained_registry, env=ENV).start()
    second = WorkerProcess(broker.url, data, app_id="browser-calls", registry=trained_registry, env=ENV)
    try:
        second.start()
        first.client.json("PUT", "/v1/offers/bc-shoes", {"title": "10% off shoes", "category": "shoes",
                                                        "kind": "discount", "discount_pct": 10})
        wait_until(lambda: all(w.client.request("GET", "/v1/offers/bc-shoes")[0] == 200 for w in (first, second)),
                   what="the offer on both workers")
        yield [first, second]
    finally:
        second.stop()
        first.stop()


def profile_events(w: WorkerProcess, customer: str) -> int:
    status, body = w.client.request("GET", f"/v1/customers/{customer}")
    if status == 404:
        return 0
    assert status == 200, body
    return int((body.get("profile") or {}).get("n_events", 0))


def grant_profile(w: WorkerProcess, customer: str) -> None:
    w.client.json("PUT", f"/v1/customers/{customer}/consent", {"flags": {"profile": True, "personalize": True}})


def sentinel_applied(w: WorkerProcess, customer: str, expected: int) -> None:
    """Send one event with the API key; wait until the profile holds exactly ``expected`` events."""
    w.client.json("POST", "/v1/events", event(customer), expect=202)
    wait_until(lambda: profile_events(w, customer) >= expected, what=f"{expected} events of {customer}")
    assert profile_events(w, customer) == expected


def test_a_token_call_needs_no_key_and_is_bound_to_its_customer(workers: list[WorkerProcess]) -> None:
    a = f"bc-a-{uuid.uuid4().hex[:6]}"
    grant_profile(workers[0], a)
    for w in workers:  # any worker answers: the owner gets the token with the forwarded call
        status, _, body = call(w.url, "POST", "/v1/score", {"k": 2}, token(a))
        assert status == 200, body
        assert body["customer_id"] == a  # taken from the token
    status, _, body = call(workers[0].url, "POST", "/v1/score", {"customer_id": a, "k": 1}, token(a))
    assert status == 200 and body["customer_id"] == a
    status, _, body = call(workers[1].url, "POST", "/v1/events", [event(None), event(a), event(None, "page_view")],
                           token(a))
    assert (status, body["accepted"]) == (202, 3), body
    wait_until(lambda: profile_events(workers[0], a) == 3, what="the token's three events in A's profile")
    # NDJSON from a page, and a consent event (how the page sends consent changes)
    lines = b"\n".join(orjson.dumps(e) for e in [event(None), event(None, "consent", consent={"gpc": True})])
    status, _, body = call(workers[0].url, "POST", "/v1/events", lines, token(a))
    assert (status, body["accepted"]) == (202, 2), body
    wait_until(lambda: workers[0].client.json("GET", f"/v1/customers/{a}")["consent"]["sources"]["sharing"] == "gpc",
               what="the page's consent event applied")
    # without a token the keys are still required
    assert call(workers[0].url, "POST", "/v1/score", {"customer_id": a})[0] == 401
    assert call(workers[0].url, "POST", "/v1/events", event(a))[0] == 401


def test_another_customer_is_403_and_nothing_is_stored(workers: list[WorkerProcess]) -> None:
    a, b = f"bc-a-{uuid.uuid4().hex[:6]}", f"bc-b-{uuid.uuid4().hex[:6]}"
    for c in (a, b):
        grant_profile(workers[0], c)
    workers[0].client.json("POST", "/v1/events", [event(b), event(b)], expect=202)
    wait_until(lambda: profile_events(workers[0], b) == 2, what="B's two events")
    b_before = workers[0].client.json("GET", f"/v1/customers/{b}")
    forbidden = [
        ("/v1/score", {"customer_id": b, "k": 3}, "customer_id"),
        ("/v1/events", event(b), "customer_id"),
        ("/v1/events", [event(a), event(None), event(b)], "[2].customer_id"),  # one foreign event refuses all
        ("/v1/events", [event(None, "consent", consent={"flags": {"profile": False}}, customer_id=b)],
         "[0].customer_id"),
    ]
    for w in workers:
        for path, body, field in forbidden:
            status, _, answer = call(w.url, "POST", path, body, token(a))
            assert status == 403, (path, answer)
            assert answer["error"] == "forbidden" and answer["field"] == field
    # the token grants nothing on other calls, even with the right customer
    for method, path in [("GET", f"/v1/customers/{b}"), ("GET", f"/v1/customers/{a}"),
                         ("DELETE", f"/v1/customers/{b}"), ("GET", "/v1/offers")]:
        status, _, answer = call(workers[0].url, method, path, None, token(a))
        assert status == 403 and "permits only" in answer["detail"], (method, path, answer)
    status, _, answer = call(workers[0].url, "PUT", f"/v1/customers/{a}/consent", {"flags": {"profile": False}},
                             token(a))
    assert status == 403
    sentinel_applied(workers[0], b, 3)
    sentinel_applied(workers[0], a, 1)
    b_after = workers[0].client.json("GET", f"/v1/customers/{b}")
    assert b_after["consent"] == b_before["consent"]


@pytest.mark.parametrize("case", ["expired", "forged", "other-key", "malformed", "empty"])
def test_a_bad_token_is_401_and_nothing_is_stored(workers: list[WorkerProcess], case: str) -> None:
    a = f"bc-a-{uuid.uuid4().hex[:6]}"
    grant_profile(workers[0], a)
    good = token(a)["X-Offerstream-Token"]
    bad = {
        "expired": mint(a, TOKEN_KEY.encode(), ttl_s=60, now_s=1_700_000_000),
        "forged": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "other-key": token(a, key="another-key-of-enough-length")["X-Offerstream-Token"],
        "malformed": "not-a-token",
        "empty": "",
    }[case]
    for w in workers:
        for path, body in [("/v1/score", {"k": 1}), ("/v1/events", [event(None), event(None)]),
                           ("/v1/events", event(None, "consent", consent={"flags": {"sharing": True}}))]:
            status, headers, answer = call(w.url, "POST", path, body, {"X-Offerstream-Token": bad})
            assert status == 401, (case, path, answer)
            assert answer["error"] == "invalid_token" and (not bad or bad not in answer["detail"])
            assert "WWW-Authenticate" in headers
    sentinel_applied(workers[0], a, 1)
    assert workers[0].client.json("GET", f"/v1/customers/{a}")["consent"]["flags"]["sharing"] is False


def test_cors_only_for_listed_origins(workers: list[WorkerProcess]) -> None:
    a = f"bc-a-{uuid.uuid4().hex[:6]}"
    w = workers[0]
    for path in ("/v1/score", "/v1/events"):
        status, headers, _ = call(w.url, "OPTIONS", path, None, {
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-offerstream-token"})
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert headers["Access-Control-Allow-Methods"] == "POST"
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-offerstream-token"} <= allowed
        status, headers, answer = call(w.url, "OPTIONS", path, None, {"Origin": "https://evil.example"})
        assert status == 403 and answer["error"] == "origin_not_allowed"
        assert not any(h.startswith("Access-Control-Allow") for h in headers)
    # answers (errors too) carry the header for a listed origin only, so the page can read them
    status, headers, _ = call(w.url, "POST", "/v1/score", {"k": 1}, {**token(a), "Origin": ORIGIN})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN
    status, headers, _ = call(w.url, "POST", "/v1/score", {"customer_id": "x"}, {**token(a), "Origin": ORIGIN})
    assert status == 403 and headers["Access-Control-Allow-Origin"] == ORIGIN
    status, headers, _ = call(w.url, "POST", "/v1/score", {"k": 1}, {**token(a), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers
    # no CORS on any other call
    status, headers, _ = call(w.url, "OPTIONS", f"/v1/customers/{a}", None, {"Origin": ORIGIN})
    assert status == 405 and "Access-Control-Allow-Origin" not in headers


def test_the_kit_is_served(workers: list[WorkerProcess]) -> None:
    status, headers, body = call(workers[1].url, "GET", "/sdk/offerstream.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "__tcfapi" in body and "X-Offerstream-Token" in body
    status, _, _ = call(workers[1].url, "GET", "/sdk/offerstream.js", None, {"If-None-Match": headers["ETag"]})
    assert status == 304


def test_openapi_describes_the_browser_calls(workers: list[WorkerProcess]) -> None:
    doc = call(workers[0].url, "GET", "/openapi.json")[2]
    assert "/sdk/offerstream.js" in doc["paths"]
    assert "customerToken" in doc["components"]["securitySchemes"]
    for path in ("/v1/score", "/v1/events"):
        assert {"customerToken": []} in doc["paths"][path]["post"]["security"]
        assert {"403", "401"} <= set(doc["paths"][path]["post"]["responses"])
