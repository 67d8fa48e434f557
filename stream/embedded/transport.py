"""The faust transport for the bundled broker: true end offsets, and a short fetch wait.

Tansu 0.6 answers ListOffsets(LATEST) with a value that can be too low, and holds every fetch for
the whole fetch wait. :class:`TansuSafeTransport` gives faust a consumer that corrects end offsets
from Fetch high watermarks (:func:`fetch_high_watermarks`) and waits at most
:data:`FETCH_MAX_WAIT_MS` per fetch. The third quirk, a later record batch readable before an
earlier one, is guarded against in :mod:`stream.contiguous` (every consumer of the process reads
offset holes again instead of skipping them). See the shared BROKER-NOTES.

Install the transport on the app before the worker starts (before anything touches
``app.consumer``)::

    app.transport = TansuSafeTransport(app.conf.broker_consumer, app)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Transport
from faust.types import TP

from stream.events_reader import OffloadingConsumer

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "TansuSafeConsumer",
    "TansuSafeConsumerThread",
    "TansuSafeTransport",
    "fetch_high_watermarks",
]

log = logging.getLogger(__name__)

#: Longest a fetch may wait for records, for every consumer of the project (see
#: :meth:`TansuSafeConsumerThread._create_worker_consumer`).
FETCH_MAX_WAIT_MS: Final = 20


async def fetch_high_watermarks(client: Any, listed: Mapping[TP, int | None]) -> dict[TP, int]:
    """Read the true end offset (high watermark) of partitions from Fetch responses.

    Tansu 0.6 answers ListOffsets(LATEST) with *base offset of the newest record batch + 1*,
    which is too low when that batch holds several records; its Fetch responses carry the
    correct high watermark. This sends one small Fetch per leader, at the listed offset (which
    is never beyond the real end, so never out of range), and returns the high watermarks.

    Parameters
    ----------
    client : aiokafka.client.AIOKafkaClient
        A started client (e.g. ``AIOKafkaConsumer._client``), used from its own event loop.
    listed : mapping of TP to int or None
        The end offsets that ListOffsets returned, per partition (``None`` counts as 0).

    Returns
    -------
    dict of TP to int
        High watermark per partition; partitions whose leader is unknown or whose Fetch
        failed are left out (callers keep the listed value for those).

    Notes
    -----
    ``max_wait_time`` is 1 ms, not 0: Tansu answers a Fetch with ``max_wait_time=0`` with an
    empty response (no partitions at all). Fetching at the listed offset returns at most one
    record batch (``max_bytes`` 1 byte per partition), measured at ~0.5 ms per request.
    """
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    refreshed = False
    for tp, offset in listed.items():
        ktp = TopicPartition(tp.topic, tp.partition)
        node = client.cluster.leader_for_partition(ktp)
        if (node is None or node < 0) and not refreshed:
            await client.force_metadata_update()
            refreshed = True
            node = client.cluster.leader_for_partition(ktp)
        if node is None or node < 0:
            continue
        fetch_at = max(int(offset or 0), 0)
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, fetch_at, 1))
    highwaters: dict[TP, int] = {}
    for node, topics in by_node.items():
        request = FetchRequest(1, 0, 1, 0, list(topics.items()))
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if error_code == 0 and highwater is not None and highwater >= 0:
                    highwaters[TP(topic, partition)] = int(highwater)
    return highwaters


class TansuSafeConsumerThread(AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, with end offsets corrected by Fetch high watermarks.

    faust's table recovery takes changelog end offsets from ``highwaters()``, i.e. aiokafka's
    ``end_offsets()`` (ListOffsets LATEST). Against Tansu that value can be too low, which made a
    RocksDB-backed worker restarting with local state crash with ``ConsistencyError: persisted
    offset ... higher than the last offset`` (measured: 737 > 734). The corrected value is
    ``max(listed, fetched high watermark)``, so a broker that answers correctly (real Kafka) is
    unaffected apart from one extra small Fetch per recovery.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes a 1.5 s fetch wait. The bundled broker holds every fetch for the whole
        # wait even when records arrive (measured: 702 ms from produce to consume at 1.5 s, 5 ms
        # at 20 ms), which made every event wait up to 1.5 s before its profile changed. A real
        # broker answers as soon as data is there, so a short wait only adds idle fetches.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed: dict[TP, int] = dict(await super()._highwaters(partitions))
        if self.consumer.in_transaction or not listed:
            return listed
        fetched = await fetch_high_watermarks(self._ensure_consumer()._client, listed)
        for tp, value in listed.items():
            highwater = fetched.get(tp)
            if highwater is not None and (value is None or highwater > value):
                log.info("end offset of %s corrected from %s to %s", tp, value, highwater)
                listed[tp] = highwater
        return listed


class TansuSafeConsumer(OffloadingConsumer):
    """faust aiokafka ``Consumer`` that uses :class:`TansuSafeConsumerThread`."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return TansuSafeConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuSafeTransport(Transport):
    """faust aiokafka ``Transport`` whose consumer corrects end offsets (see above).

    Install it on the app before the worker starts (before anything touches ``app.consumer``)::

        app.transport = TansuSafeTransport(app.conf.broker_consumer, app)
    """

    Consumer = TansuSafeConsumer
