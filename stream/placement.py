"""Which partition and which worker own a customer, and forwarding a request to its owner.

A customer's partition is Kafka's default (murmur2) partitioner on the UTF-8 customer id, the rule
every table and every routed request follows; :class:`Placement` knows which of those partitions
this worker owns now and relays a request for any other customer to the worker that owns it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

import aiohttp
from aiohttp import web as aioweb
from aiokafka.partitioner import DefaultPartitioner

from stream.http import FORWARDED_HEADER, Unavailable
from stream.metrics import Metrics
from stream.readiness import Readiness
from stream.topics import CONSENT_TABLE, EVENTS_TOPIC

__all__ = ["Placement", "FORWARD_HEADERS"]

FORWARD_HEADERS = ("authorization", "content-type", "sec-gpc", "x-offerstream-token")
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)
PARTITION_CACHE = 1_000_000  # customers whose events partition is remembered


class Placement:
    """Owner of each customer, for one worker.

    Parameters
    ----------
    app : faust.App
        The worker's app (its consumer's assignment, its router's table metadata, its HTTP client).
    url : str
        This worker's own base URL.
    partitions : int
        Partitions of ``events`` (the same on every worker).
    readiness : Readiness
        Consulted before a request is answered here.
    metrics : Metrics
        Counts forwarded requests.
    """

    def __init__(self, app: Any, url: str, partitions: int, readiness: Readiness, metrics: Metrics) -> None:
        self.app, self.url, self.readiness, self.metrics = app, url, readiness, metrics
        self._partitioner = DefaultPartitioner()
        self._partitions = list(range(partitions))
        self._partition_of: dict[str, int] = {}
        self._owned: frozenset[int] = frozenset()
        self._owned_for: object = None  # the client's assignment set that ``_owned`` was read from

    def events_partition(self, customer_id: str) -> int:
        """The partition that owns a customer: Kafka's default partitioner on the UTF-8 id."""
        partition = self._partition_of.get(customer_id)
        if partition is None:  # murmur2 in Python costs ~3 us; a customer's answer never changes
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            partition = self._partition_of[customer_id] = int(
                self._partitioner(customer_id.encode(), self._partitions, self._partitions))
        return partition

    def owns(self, customer_id: str) -> bool:
        """True if this worker actively owns the customer's partition now."""
        return self.events_partition(customer_id) in self.owned_partitions()

    def owned_partitions(self) -> frozenset[int]:
        """The ``events`` partitions assigned to this worker now, recomputed per assignment.

        faust's ``consumer.assignment()`` builds a new set of ``TP`` tuples from every assigned
        partition on each call (~10 % of the score view under cProfile). The Kafka client keeps
        one immutable set per group assignment and replaces it on every rebalance, so the answer
        is cached against that very object: a new assignment is a new object and is read at
        once, with no window in which a stale answer could route a request.
        """
        current = self._client_assignment()
        if current is not self._owned_for:
            self._owned = frozenset(tp.partition for tp in current if tp.topic == EVENTS_TOPIC)
            self._owned_for = current
        return self._owned

    def _client_assignment(self) -> Collection[Any]:
        """aiokafka's own assignment set (the same object until the group reassigns)."""
        consumer = getattr(getattr(self.app.consumer, "_thread", None), "_consumer", None)
        if consumer is None:  # not started, or another driver: faust's copy, recomputed per call
            return cast(Collection[Any], self.app.consumer.assignment())
        return cast(Collection[Any], consumer.assignment())

    def owner_url(self, customer_id: str, changelog: str) -> str:
        """Base URL of the worker that owns ``customer_id`` (503 if nobody is known to).

        ``changelog`` is the name of a table changelog topic partitioned like ``events``.
        """
        if self.owns(customer_id):
            return self.url
        partition = self.events_partition(customer_id)
        for host, topics in self.app.router.table_metadata(CONSENT_TABLE.name).items():
            if partition in topics.get(changelog, ()):
                return str(host).rstrip("/")
        raise Unavailable("the owner of this customer is not known yet (group rebalancing)")

    async def forward_if_remote(self, request: aioweb.Request, customer_id: str,
                                changelog: str) -> aioweb.Response | None:
        """Relay the request to the owning worker, or return ``None`` to handle it here.

        Handling it here requires this worker's state to be complete (503 otherwise).
        """
        if request.headers.get(FORWARDED_HEADER):
            if not self.owns(customer_id):
                raise Unavailable("ownership of this customer is moving between workers")
            self.readiness.require_ready()
            return None
        owner = self.owner_url(customer_id, changelog)
        if owner == self.url:
            self.readiness.require_ready()
            return None
        return await self._forward(request, owner)

    async def _forward(self, request: aioweb.Request, owner: str) -> aioweb.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_HEADERS}
        headers[FORWARDED_HEADER] = "1"
        self.metrics.inc("requests_forwarded_total")
        try:
            async with self.app.http_client.request(
                request.method, owner + request.path_qs, data=await request.read(),
                headers=headers, timeout=FORWARD_TIMEOUT,
            ) as response:
                body = await response.read()
                extra = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else None
                return aioweb.Response(body=body, status=response.status, headers=extra,
                                       content_type=response.content_type)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unavailable(f"the owning worker did not answer ({type(exc).__name__})") from None
