"""The ``events`` partitions a worker owns, read in batches straight from the broker (issue 17).

Why: faust hands an agent one message at a time, and its per-message machinery (the fetch loop's
hand-over, the conductor, the stream, the event object) cost ~110 of the ~145 us of worker CPU per
event when a shop's producer sends one event per message (py-spy, ``benchmarks.ingest``'s
``write_behind_single``). Envelopes of 500 events paid it once per 500.

How, keeping every guarantee of the agent:
- faust still subscribes to ``events`` (its group assigns the partitions, and the tables are
  co-partitioned with them) and still commits their offsets, but its fetch loop no longer takes
  their records (:class:`OffloadingConsumer`).
- :class:`EventsReader` reads the owned partitions with a consumer of its own (no group), from the
  group's committed offset after every assignment and once faust's recovery has ended, and hands
  the records to the ingest agent's batch apply (:mod:`stream.agents`), which applies each one as
  before and acknowledges it to faust's consumer after the flush that makes it durable. Offsets
  are applied once, in order, from the committed one up (the reader is the only path: the same
  property the delivery-order guard gave the per-message path, by construction).
- A rebalance bumps :attr:`EventsReader.generation`; a batch read under an older generation is
  dropped unapplied (its records are read again by whoever owns the partition next).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import Consumer, Transport

from stream.contiguous import GAP_WAIT_S
from stream.embedded.kafka_wire import default_security

__all__ = ["EventsReader", "OffloadingConsumer", "OffloadingTransport", "MAX_BATCH"]

log = logging.getLogger("offerstream.ingest")

#: Records applied per hold of the live-state lock (a flush chunk or a consent call waits at most
#: this many events, ~15 ms).
MAX_BATCH = 500
#: Longest a read waits for new records (freshness: an event is applied at most this long after it
#: is readable, plus the apply).
READ_WAIT_MS = 5

#: ``await apply(partition, records, generation, end)``: apply ``records`` (in offset order), count
#: every offset before ``end`` as done (offsets without a record: Kafka's transaction markers,
#: aborted records) and return True; or return False, applying nothing, if ``generation`` is no
#: longer the reader's.
ApplyBatch = Callable[[int, list[Any], int, int], Awaitable[bool]]


class OffloadingConsumer(Consumer):
    """faust's aiokafka consumer, whose fetch loop leaves the topics in :attr:`offloaded` alone.

    faust keeps assigning, tracking and committing those partitions; their records are read by
    :class:`EventsReader` instead of being handed to an agent one by one.
    """

    offloaded: frozenset[str] = frozenset()

    def offloaded_readable(self) -> bool:
        """True while faust would let an agent read the offloaded partitions: flow is active and
        faust has not paused them. faust resumes its flow *during* table recovery (to read the
        changelogs) with the stream partitions still paused, and resumes those only once every
        table is restored; events applied before then would meet half-restored profiles."""
        return bool(self.flow_active) and not any(tp.topic in self.offloaded for tp in self._paused_partitions)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        if active_partitions and self.offloaded:
            active_partitions = {tp for tp in active_partitions if tp.topic not in self.offloaded}
            if not active_partitions:
                await asyncio.sleep(min(timeout, 0.1))  # nothing else to read: do not spin
                return {}
        return await super()._getmany(active_partitions, timeout)


class OffloadingTransport(Transport):
    """The aiokafka transport with :class:`OffloadingConsumer`."""

    Consumer = OffloadingConsumer


class EventsReader:
    """Reads the owned partitions of ``topic`` for the consumer group ``group``, in batches.

    Parameters
    ----------
    flowing : callable
        ``flowing()`` is True while faust lets streams run (no rebalance or table recovery in
        progress): :meth:`OffloadingConsumer.offloaded_readable` of the app's consumer.
    bootstrap : str
        ``host:port[,...]`` of the broker.
    topic, group : str
        The ``events`` topic, and the group whose committed offsets a partition starts from.
    holes_are_real : bool
        True on Apache Kafka (an offset without a record is a transaction marker or an aborted
        record); False on the bundled broker, where it is a record not readable yet (read again).
    security : dict, optional
        aiokafka security options (default: the worker's, :func:`default_security`).
    """

    def __init__(self, flowing: Callable[[], bool], bootstrap: str, topic: str, group: str,
                 *, holes_are_real: bool = True, security: dict[str, Any] | None = None) -> None:
        self.flowing, self.bootstrap, self.topic, self.group = flowing, bootstrap, topic, group
        self.holes_are_real = holes_are_real
        self._holes: dict[int, tuple[int, float]] = {}  # partition -> (offset not readable yet, since)
        self.holes_seen = 0
        self.security = default_security() if security is None else security
        self.generation = 0
        self._owned: frozenset[int] = frozenset()
        self._positioned = False
        #: per owned partition, the next offset to apply (set where reading starts, moved on by the apply)
        self.position: dict[int, int] = {}
        self.batches = 0  # batches applied
        self.dropped = 0  # batches read but not applied: a rebalance began in between

    def assigned(self, partitions: Iterable[int]) -> None:
        """The group gave this worker ``partitions`` (all of them, not a difference)."""
        self.generation += 1
        self._owned = frozenset(partitions)
        self._positioned = False

    def revoked(self) -> None:
        """Partitions are being taken away: apply nothing more until the next assignment."""
        self.generation += 1
        self._owned = frozenset()
        self._positioned = False

    def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=READ_WAIT_MS, isolation_level="read_committed",
            max_partition_fetch_bytes=4 << 20, **self.security)

    async def run(self, apply: ApplyBatch) -> None:
        """Read and hand every batch to ``apply`` (see :data:`ApplyBatch`) until cancelled."""
        # records come from a consumer without a group; the group's committed offsets are asked
        # of one with the group's id that never subscribes (so it never joins the group)
        reader, offsets = self._consumer(None), self._consumer(self.group)
        await reader.start()
        try:
            await offsets.start()
            try:
                while True:
                    await self._step(reader, offsets, apply)
            finally:
                await offsets.stop()
        finally:
            await reader.stop()

    async def _step(self, reader: AIOKafkaConsumer, offsets: AIOKafkaConsumer, apply: ApplyBatch) -> None:
        generation = self.generation
        if not self._owned or not self.flowing():
            await asyncio.sleep(0.01)  # no partitions, or faust is rebalancing or recovering
            return
        if not self._positioned:
            await self._position(reader, offsets, generation)
            return
        records = await reader.getmany(timeout_ms=READ_WAIT_MS, max_records=MAX_BATCH * 4)
        for tp in reader.assignment():
            batch = records.get(tp, [])
            # the next offset to read: past the batch and any offsets without a record after it
            end = await reader.position(tp)
            if not batch and end <= self.position.get(tp.partition, end):
                continue
            batch, end = self._contiguous(reader, tp, batch, end)
            chunks = [batch[i:i + MAX_BATCH] for i in range(0, len(batch), MAX_BATCH)] or [[]]
            for n, chunk in enumerate(chunks):
                upto = end if n == len(chunks) - 1 else chunks[n + 1][0].offset
                if self.generation != generation or not await apply(tp.partition, chunk, generation, upto):
                    self.dropped += 1
                    return  # a rebalance began: the owner reads again from the committed offsets
                self.batches += 1

    def _contiguous(self, reader: AIOKafkaConsumer, tp: TopicPartition, batch: list[Any],
                    end: int) -> tuple[list[Any], int]:
        """``batch`` and ``end`` cut at the first offset without a record, unless holes are real.

        On the bundled broker an offset without a record is one not readable *yet* (it has no
        transactions and never compacts; BROKER-NOTES, ``stream/contiguous.py``): the records up to
        it are applied and the partition is read again from it. Only a hole still there after
        :data:`stream.contiguous.GAP_WAIT_S` is passed over, logged as an error.
        """
        if self.holes_are_real:
            return batch, end
        expected, n = self.position[tp.partition], 0
        while n < len(batch) and batch[n].offset == expected:  # the records without a hole before them
            expected, n = expected + 1, n + 1
        if n == len(batch) and end <= expected:
            self._holes.pop(tp.partition, None)
            return batch, end
        first_seen = self._holes.setdefault(tp.partition, (expected, time.monotonic()))
        if first_seen[0] != expected:
            self._holes[tp.partition] = first_seen = (expected, time.monotonic())
        if time.monotonic() - first_seen[1] >= GAP_WAIT_S:
            log.error("%s[%d]: offset %d never became readable in %.0f s; passing over it",
                      tp.topic, tp.partition, expected, GAP_WAIT_S)
            self._holes.pop(tp.partition, None)
            return batch, end
        self.holes_seen += 1
        log.info("%s[%d]: offset %d not readable yet; reading from it again", tp.topic, tp.partition, expected)
        reader.seek(tp, expected)
        return batch[:n], expected

    async def _position(self, reader: AIOKafkaConsumer, offsets: AIOKafkaConsumer, generation: int) -> None:
        """Read the owned partitions from the group's committed offsets (the first offset if none)."""
        tps = [TopicPartition(self.topic, p) for p in sorted(self._owned)]
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = await offsets.committed(tp)
            starts[tp] = committed if committed is not None and committed >= 0 else -1
        fresh = [tp for tp, at in starts.items() if at < 0]
        if fresh:
            starts.update(await reader.beginning_offsets(fresh))
        if self.generation != generation:
            return  # assigned again meanwhile: start over
        reader.assign(tps)
        for tp, at in starts.items():
            reader.seek(tp, at)
        self.position = {tp.partition: at for tp, at in starts.items()}
        self._positioned = True
        log.info("events partitions %s: reading from offsets %s", [tp.partition for tp in tps],
                 [starts[tp] for tp in tps])
