"""``POST /v1/events``: validate, publish to ``events`` keyed by customer id, answer 202."""

from __future__ import annotations

import uuid

from aiohttp import web as aioweb

from models.errors import InvalidEvent
from models.events import Event, parse_payload
from stream.customers import Customers
from stream.handlers.common import gpc, now_ms
from stream.http import ApiError, check_key, json_response
from stream.metrics import Metrics

__all__ = ["EventsApi"]


class EventsApi:
    """Event intake over HTTP (one event, a JSON array or NDJSON)."""

    def __init__(self, customers: Customers, metrics: Metrics, api_key: str | None) -> None:
        self.customers, self.metrics, self.api_key = customers, metrics, api_key

    async def post(self, request: aioweb.Request) -> aioweb.Response:
        """Publish the valid events; list the invalid ones by index (400 if none is valid)."""
        check_key(request, self.api_key)
        try:
            items = parse_payload(await request.read())
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
