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
from stream.handlers.experiments import ExperimentsApi
from stream.handlers.offers import OffersApi
from stream.handlers.ops import OpsApi
from stream.handlers.score import ScoreApi
from stream.handlers.sdk import serve_sdk
from stream.http import Cors, error_response, route_handler

__all__ = ["Route", "route_table", "mount"]

Handler = Callable[[aioweb.Request], Awaitable[aioweb.Response]]


@dataclass(frozen=True)
class Route:
    """One method on one path, and the handler that answers it."""

    method: str
    path: str
    handler: Handler


def route_table(events: EventsApi, score: ScoreApi, customers: CustomersApi, offers: OffersApi,
                ops: OpsApi, experiments: ExperimentsApi) -> list[Route]:
    """The whole HTTP API of DESIGN.md, path by path."""
    return [
        Route("PUT", "/v1/experiments/{experiment_id}", experiments.put),
        Route("GET", "/v1/experiments", experiments.list),
        Route("GET", "/v1/experiments/{experiment_id}/results", experiments.results),
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
        Route("GET", "/sdk/offerstream.js", serve_sdk),
    ]


# the calls a shop's page makes with a customer token: CORS headers and an OPTIONS preflight
BROWSER_PATHS = ("/v1/score", "/v1/events")


def mount(web_app: aioweb.Application, routes: list[Route], static_dir: Path | None = None,
          cors: Cors | None = None) -> None:
    """Add ``routes`` to ``web_app`` (and the demo page's assets under ``/demo/static/``).

    ``cors`` (``OFFERSTREAM_CORS_ORIGINS``) adds CORS headers and a preflight to :data:`BROWSER_PATHS`.
    """
    allowed: dict[str, list[str]] = {}
    cors = cors or Cors()
    for route in routes:
        handler = route_handler(route.handler)
        web_app.router.add_route(route.method, route.path,
                                 cors.wrap(handler) if route.path in BROWSER_PATHS else handler)
        allowed.setdefault(route.path, []).append(route.method)
    for path in BROWSER_PATHS:
        web_app.router.add_route("OPTIONS", path, route_handler(cors.preflight))
        allowed.setdefault(path, []).append("OPTIONS")
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
