"""``PUT /v1/offers/{id}``, ``GET /v1/offers/{id}`` and ``GET /v1/offers``: the catalogue."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web as aioweb

from models.catalog import parse_offer
from models.errors import NotFound
from stream.catalogue import Catalogue
from stream.http import check_key, json_response, read_json

__all__ = ["OffersApi"]


class OffersApi:
    """Catalogue calls. Every worker holds the whole catalogue, read from the ``offers`` topic."""

    def __init__(self, offers_topic: Any, catalogue: Catalogue, api_key: str | None) -> None:
        self.offers_topic, self.catalogue, self.api_key = offers_topic, catalogue, api_key

    async def put(self, request: aioweb.Request) -> aioweb.Response:
        """Write an offer to ``offers``; answer once this worker's catalogue has it."""
        check_key(request, self.api_key)
        offer = parse_offer(await read_json(request), request.match_info["offer_id"])
        future = await self.offers_topic.send(key=offer.offer_id, value=orjson.dumps(offer.to_dict()))
        metadata = await future
        await self.catalogue.wait_applied(metadata.partition, metadata.offset)
        return json_response(offer.to_dict())

    async def get(self, request: aioweb.Request) -> aioweb.Response:
        """One offer (404 if unknown)."""
        check_key(request, self.api_key)
        offer_id = request.match_info["offer_id"]
        offer = self.catalogue.offers.get(offer_id)
        if offer is None:
            raise NotFound(f"no offer {offer_id!r}")
        return json_response(offer.to_dict())

    async def list(self, request: aioweb.Request) -> aioweb.Response:
        """The whole catalogue, by offer id."""
        check_key(request, self.api_key)
        offers = [o.to_dict() for _, o in sorted(self.catalogue.offers.items())]
        return json_response({"offers": offers, "count": len(offers)})
