"""``PUT /v1/customers/{id}/consent``, ``GET`` and ``DELETE /v1/customers/{id}``, on the owner."""

from __future__ import annotations

from aiohttp import web as aioweb

from models.consent import DEFAULT_TCF_BASIS, parse_update
from stream.customers import Customers
from stream.handlers.common import gpc
from stream.http import check_key, json_response, read_json
from stream.placement import Placement

__all__ = ["CustomersApi"]


class CustomersApi:
    """Consent, access and erasure calls; another worker's customer is forwarded to its owner.

    ``changelog`` names a table changelog partitioned like ``events`` (owner look-up); a TC string
    of a consent call is read under ``tcf_basis`` (``OFFERSTREAM_TCF_BASIS``).
    """

    def __init__(self, customers: Customers, placement: Placement, api_key: str | None, changelog: str,
                 tcf_basis: str = DEFAULT_TCF_BASIS) -> None:
        self.customers, self.placement, self.api_key, self.changelog = customers, placement, api_key, changelog
        self.tcf_basis = tcf_basis

    async def put_consent(self, request: aioweb.Request) -> aioweb.Response:
        """Change consent; effective and durable when it returns (a bad body: 400 on any worker)."""
        check_key(request, self.api_key)
        customer_id = request.match_info["customer_id"]
        update = parse_update(await read_json(request), header_gpc=gpc(request), basis=self.tcf_basis)
        forwarded = await self.placement.forward_if_remote(request, customer_id, self.changelog)
        if forwarded is not None:
            return forwarded
        return json_response(await self.customers.change_consent(customer_id, update))

    async def get(self, request: aioweb.Request) -> aioweb.Response:
        """What is stored about the customer, and why (404 if nothing)."""
        customer_id, forwarded = await self._owner_only(request)
        if forwarded is not None:
            return forwarded
        return json_response(self.customers.access_report(customer_id))

    async def delete(self, request: aioweb.Request) -> aioweb.Response:
        """Erase the customer everywhere; the receipt."""
        customer_id, forwarded = await self._owner_only(request)
        if forwarded is not None:
            return forwarded
        return json_response(await self.customers.erase(customer_id))

    async def _owner_only(self, request: aioweb.Request) -> tuple[str, aioweb.Response | None]:
        """The customer id, and the owner's answer if another worker owns the customer."""
        check_key(request, self.api_key)
        customer_id = request.match_info["customer_id"]
        return customer_id, await self.placement.forward_if_remote(request, customer_id, self.changelog)
