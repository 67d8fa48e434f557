"""The HTTP API of DESIGN.md. Views stay thin: validate, route to the owner, call the core, reply.

Every customer call is answered by the worker that owns the customer's partition; another worker
forwards the request, body and headers included, and relays the answer.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web as aioweb
from faust.web import View

from models.catalog import parse_offer
from models.consent import ConsentState, apply_update, parse_update
from models.decision import CandidateCache, decide, parse_score_request
from models.errors import InvalidEvent, NotFound
from models.events import Event, parse_payload
from models.profile import Profile
from stream.audit import AuditLog, RecordBatchSender
from stream.gc_tuning import freeze_when_ready
from stream.http import (
    ApiError,
    DirectRoutes,
    check_key,
    handler,
    json_response,
    read_json,
)
from stream.openapi import build_openapi

if TYPE_CHECKING:
    from stream.worker import Runtime

__all__ = ["register_views", "register_score", "decision_id", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _gpc(request: aioweb.Request) -> bool:
    return request.headers.get("Sec-GPC", "").strip() == "1"


def _gpc_events(events: list[Event]) -> list[Event]:
    """One ``consent`` event with ``gpc: true`` per customer of a call that carried ``Sec-GPC: 1``."""
    now = _now_ms()
    customers = dict.fromkeys(e.customer_id for e in events)
    out = []
    for cid in customers:
        event_id = f"gpc-{uuid.uuid4().hex}"
        data = {"event_id": event_id, "type": "consent", "customer_id": cid, "ts": now,
                "consent": {"gpc": True}, "source": "Sec-GPC header"}
        out.append(Event(event_id=event_id, type="consent", customer_id=cid, ts=now, data=data))
    return out


def _why(consent: ConsentState, profile: Profile | None) -> dict[str, str]:
    """Why each stored item is kept, for an access request."""
    why = {"consent": "your consent choices, kept to honour them and to prove that we did"}
    if consent.dismissed or consent.exclude_categories:
        why["choices"] = "offers you dismissed and categories you excluded, so we never show them"
    if profile is not None:
        why["profile"] = (f"built from your activity because you granted 'profile' consent "
                          f"(source: {consent.sources['profile']}, consent epoch {consent.epoch})")
    return why


def decision_id() -> str:
    """A random decision id: ``uuid.uuid4().hex``'s format and bits, without building a ``UUID``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def register_score(rt: Runtime, audit: AuditLog) -> None:
    """``POST /v1/score``, registered on faust's aiohttp app directly (:class:`DirectRoutes`).

    Not a faust ``View``: its dispatch (a method table, ``typing.cast`` calls, the monitor's
    request sensors, one more coroutine) cost CPU on every score and served nothing here (the
    worker's ``/metrics`` count scores themselves). Same path, body limit (the app's
    ``client_max_size``), errors and answers as before.
    """

    web: Any = rt.app.web  # faust's aiohttp driver
    candidates = CandidateCache()  # this route's: the same catalogue objects hit on every request

    @DirectRoutes(web.web_app).page("/v1/score")
    class Score:
        async def post(self, request: aioweb.Request) -> aioweb.Response:
            started, cpu_started = time.perf_counter(), time.thread_time()
            check_key(request, rt.settings.score_key)
            body = await read_json(request)
            score_request = parse_score_request(body, header_gpc=_gpc(request))
            forwarded = await rt.forward_if_remote(request, score_request.customer_id)
            if forwarded is not None:
                return forwarded
            # the live state: what the ingest agent applied, even before its write-behind flush
            consent = rt.live.peek_consent(score_request.customer_id)
            wants_profile = consent.flags["personalize"] and consent.flags["profile"]
            profile = rt.live.peek_profile(score_request.customer_id) if wants_profile else None
            decide_started = time.thread_time()
            response, record = decide(
                score_request, consent, profile, rt.catalogue.offers, rt.model.scorer,
                _now_ms(), decision_id(), rt.settings.hash_key, rt.exploration, cache=candidates,
            )
            decided = time.thread_time()
            audit.add(record["customer_hash"], record)  # batched; sent within a few ms
            rt.metrics.inc(f'decisions_total{{mode="{record["mode"]}"}}')
            reply = json_response(response)
            # thread CPU: the handler's own (it does not wait on a local score) and decide()'s
            rt.metrics.observe_score(time.perf_counter() - started,
                                     time.thread_time() - cpu_started, decided - decide_started)
            return reply


def register_views(rt: Runtime) -> None:  # noqa: C901 - one small class per route
    """Attach every route of the HTTP API to the runtime's app."""
    app = rt.app
    decisions_topic = rt.topology.decisions.get_topic_name()
    # faust's own aiokafka producer, so the audit batches are flushed and stopped with the app
    kafka: Any = app.producer
    audit = AuditLog(RecordBatchSender(lambda: kafka._ensure_producer(), decisions_topic))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
    async def flush_audit(sender: Any, **kwargs: Any) -> None:
        await audit.flush()  # before the app flushes and stops its producer

    freeze_when_ready(app, lambda: rt.recovered() and rt.catalogue.ready.is_set())

    @app.page("/v1/events")
    class Events(View):
        @handler
        async def post(self, request: aioweb.Request) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
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
            if _gpc(request):  # Global Privacy Control on the call: sharing off for these customers
                good = [*_gpc_events(good), *good]
            await rt.publish_events(good)
            rt.metrics.inc("events_accepted_total", len(good))
            rt.metrics.inc("events_rejected_total", len(rejected))
            return json_response({"accepted": len(good), "rejected": rejected}, 202)

    register_score(rt, audit)

    @app.page("/v1/customers/{customer_id}/consent")
    class Consent(View):
        @handler
        async def put(self, request: aioweb.Request, customer_id: str) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            body = await read_json(request)
            update = parse_update(body, header_gpc=_gpc(request))
            forwarded = await rt.forward_if_remote(request, customer_id)
            if forwarded is not None:
                return forwarded
            now = _now_ms()
            if rt.ledger.is_erased(customer_id, now):
                raise ApiError(409, "erased", "this customer was erased at this very millisecond; retry")
            change = apply_update(rt.topology.read_consent(customer_id), update, now)
            rt.topology.write_consent(customer_id, change.state)
            rt.live.consent_changed(customer_id)
            rt.archive_consent_call(customer_id, change, now)
            # through the live state, so a pending write-behind flush cannot bring the profile back
            erased = rt.live.erase_profile(customer_id) if "profile" in change.revoked else False
            await rt.changelogs_acknowledged()  # effective and durable when we answer
            return json_response({
                "customer_id": customer_id, "consent": change.state.basis(),
                "granted": change.granted, "revoked": change.revoked, "ignored": change.ignored,
                "profile_erased": erased,
            })

    @app.page("/v1/customers/{customer_id}")
    class Customer(View):
        @handler
        async def get(self, request: aioweb.Request, customer_id: str) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            forwarded = await rt.forward_if_remote(request, customer_id)
            if forwarded is not None:
                return forwarded
            consent = rt.topology.read_consent(customer_id)
            profile = rt.live.peek_profile(customer_id)
            stored = consent.epoch > 0 or consent.dismissed or consent.exclude_categories or profile
            if not stored:
                raise NotFound(f"nothing is stored about customer {customer_id!r}")
            return json_response({
                "customer_id": customer_id,
                "consent": consent.basis(),
                "choices": {"exclude_categories": consent.exclude_categories,
                            "channels": consent.channels, "dismissed": consent.dismissed},
                "profile": profile.to_dict() if profile is not None else None,
                "why": _why(consent, profile),
            })

        @handler
        async def delete(self, request: aioweb.Request, customer_id: str) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            forwarded = await rt.forward_if_remote(request, customer_id)
            if forwarded is not None:
                return forwarded
            return json_response(await rt.erase(customer_id))

    @app.page("/v1/offers/{offer_id}")
    class OfferView(View):
        @handler
        async def put(self, request: aioweb.Request, offer_id: str) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            offer = parse_offer(await read_json(request), offer_id)
            await rt.publish_offer(offer)
            return json_response(offer.to_dict())

        @handler
        async def get(self, request: aioweb.Request, offer_id: str) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            offer = rt.catalogue.offers.get(offer_id)
            if offer is None:
                raise NotFound(f"no offer {offer_id!r}")
            return json_response(offer.to_dict())

    @app.page("/v1/offers")
    class Offers(View):
        @handler
        async def get(self, request: aioweb.Request) -> aioweb.Response:
            check_key(request, rt.settings.api_key)
            offers = [o.to_dict() for _, o in sorted(rt.catalogue.offers.items())]
            return json_response({"offers": offers, "count": len(offers)})

    @app.page("/health")
    class Health(View):
        @handler
        async def get(self, request: aioweb.Request) -> aioweb.Response:
            report: dict[str, Any] = rt.health()
            return json_response(report, 200 if report["ready"] else 503)

    @app.page("/openapi.json")
    class OpenApi(View):
        @handler
        async def get(self, request: aioweb.Request) -> aioweb.Response:
            return json_response(build_openapi(rt.settings.url))

    @app.page("/demo")
    class Demo(View):
        @handler
        async def get(self, request: aioweb.Request) -> aioweb.Response:
            page = STATIC_DIR / "demo.html"
            if not page.is_file():
                raise NotFound("the demo page is not installed")
            return aioweb.Response(body=page.read_bytes(), content_type="text/html", charset="utf-8")

    app.web.add_static("/demo/static/", STATIC_DIR)

    @app.page("/metrics")
    class MetricsView(View):
        @handler
        async def get(self, request: aioweb.Request) -> aioweb.Response:
            return aioweb.Response(text=rt.render_metrics(), content_type="text/plain")
