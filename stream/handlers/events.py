"""``POST /v1/events``: validate, publish to ``events`` keyed by customer id, answer 202.

A call with a customer token (``X-Offerstream-Token``, a shop's page) needs no API key, but every
event must be the token's customer's: a missing ``customer_id`` is filled in from the token, and
any event naming another customer refuses the whole call with a 403 before anything is published.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web as aioweb

from models.errors import InvalidEvent
from models.events import Event, parse_payload
from models.tokens import claim, claim_all
from stream.customers import Customers
from stream.handlers.common import gpc, now_ms
from stream.http import ApiError, check_key, json_response, token_customer
from stream.metrics import Metrics

__all__ = ["EventsApi"]


class EventsApi:
    """Event intake over HTTP (one event, a JSON array or NDJSON)."""

    def __init__(self, customers: Customers, metrics: Metrics, api_key: str | None,
                 token_key: bytes | None = None) -> None:
        self.customers, self.metrics, self.api_key, self.token_key = customers, metrics, api_key, token_key

    async def post(self, request: aioweb.Request) -> aioweb.Response:
        """Publish the valid events; list the invalid ones by index (400 if none is valid)."""
        customer = token_customer(request, self.token_key)  # 401 for a bad token, before reading
        if customer is None:
            check_key(request, self.api_key)
            body = await request.read()
        else:
            body = _claimed(await request.read(), customer)  # 403 for another customer's event
        try:
            items = parse_payload(body)
        except InvalidEvent as exc:
            raise ApiError(400, "invalid", str(exc)) from None
        good = [item for item in items if isinstance(item, Event)]
        rejected = [{"index": i, "field": e.field, "error": str(e)}
                    for i, e in enumerate(items) if isinstance(e, InvalidEvent)]
        if not good:
            return json_response({"error": "invalid", "detail": rejected[0]["error"],
                                  "field": rejected[0]["field"], "accepted": 0,
                                  "rejected": rejected}, 400)
        if gpc(request):  # Global Privacy Control on the call: sharing off for these customers
            good = [*_gpc_events(good), *good]
        await self.customers.publish_events(good)
        self.metrics.inc("events_accepted_total", len(good))
        self.metrics.inc("events_rejected_total", len(rejected))
        return json_response({"accepted": len(good), "rejected": rejected}, 202)


def _claimed(body: bytes, customer_id: str) -> bytes:
    """A token call's body with every event bound to the token's customer (see module docstring)."""
    if not body.strip():
        return body  # parse_payload names the problem
    values: Any
    try:
        values = claim(orjson.loads(body), customer_id)
    except orjson.JSONDecodeError:
        lines = [line for line in body.split(b"\n") if line.strip()]
        try:
            values = [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid", f"body is not JSON, a JSON array, or NDJSON: {exc}") from None
    if isinstance(values, list):
        values = claim_all(values, customer_id)
    return orjson.dumps(values)


def _gpc_events(events: list[Event]) -> list[Event]:
    """One ``consent`` event with ``gpc: true`` per customer of a call that carried ``Sec-GPC: 1``."""
    now = now_ms()
    out = []
    for cid in dict.fromkeys(e.customer_id for e in events):
        event_id = f"gpc-{uuid.uuid4().hex}"
        data = {"event_id": event_id, "type": "consent", "customer_id": cid, "ts": now,
                "consent": {"gpc": True}, "source": "Sec-GPC header"}
        out.append(Event(event_id=event_id, type="consent", customer_id=cid, ts=now, data=data))
    return out
