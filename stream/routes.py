"""Every HTTP route of a worker, in one table, dispatched one way.

:func:`route_table` lists each path and method with its handler, the way starlette's ``Route``
list does; :func:`mount` puts them on faust's aiohttp application directly (no faust ``View``
dispatch: it cost CPU on every call and served nothing here). Every handler is wrapped by
:func:`stream.http.route_handler`, so a failure becomes the JSON ``{error, detail}`` answer with
its status, and a path called with another method gets a JSON 405 naming the allowed ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web as aioweb

from stream.handlers.customers import CustomersApi
from stream.handlers.events import EventsApi
from stream.handlers.offers import OffersApi
from stream.handlers.ops import OpsApi
from stream.handlers.score import ScoreApi
from stream.http import error_response, route_handler

__all__ = ["Route", "route_table", "mount"]

Handler = Callable[[aioweb.Request], Awaitable[aioweb.Response]]


@dataclass(frozen=True)
class Route:
    """One method on one path, and the handler that answers it."""

    method: str
    path: str
    handler: Handler


def route_table(events: EventsApi, score: ScoreApi, customers: CustomersApi, offers: OffersApi,
                ops: OpsApi) -> list[Route]:
    """The whole HTTP API of DESIGN.md, path by path."""
    return [
        Route("POST", "/v1/events", events.post),
        Route("POST", "/v1/score", score.post),
        Route("PUT", "/v1/customers/{customer_id}/consent", customers.put_consent),
        Route("GET", "/v1/customers/{customer_id}", customers.get),
        Route("DELETE", "/v1/customers/{customer_id}", customers.delete),
        Route("PUT", "/v1/offers/{offer_id}", offers.put),
        Route("GET", "/v1/offers/{offer_id}", offers.get),
        Route("GET", "/v1/offers", offers.list),
        Route("GET", "/health", ops.health),
        Route("GET", "/metrics", ops.metrics),
        Route("GET", "/openapi.json", ops.openapi),
        Route("GET", "/demo", ops.demo),
    ]


def mount(web_app: aioweb.Application, routes: list[Route], static_dir: Path | None = None) -> None:
    """Add ``routes`` to ``web_app`` (and the demo page's assets under ``/demo/static/``)."""
    allowed: dict[str, list[str]] = {}
    for route in routes:
        web_app.router.add_route(route.method, route.path, route_handler(route.handler))
        allowed.setdefault(route.path, []).append(route.method)
    for path, methods in allowed.items():  # after the real ones: any other method
        web_app.router.add_route("*", path, _method_not_allowed(methods))
    if static_dir is not None and static_dir.is_dir():
        web_app.router.add_static("/demo/static/", static_dir)


def _method_not_allowed(methods: list[str]) -> Handler:
    allow = ", ".join(sorted(methods))

    async def answer(request: aioweb.Request) -> aioweb.Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}",
                              {"Allow": allow})

    return answer
