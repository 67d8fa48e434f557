"""The decision audit log: every decision's record goes to the ``decisions`` topic, in batches.

Why batches: sending each record on its own cost one produce request (a socket write, a request
encode and a broker round trip) per decision, ~20% of a score request's time in a py-spy profile
under load. Records are still one Kafka message each, keyed by the hashed customer id, exactly as
before; they are only held for at most ``delay_s`` (10 ms) so that the producer puts every record
of that window into one produce request: ~5 decisions per request at 500 req/s, where a 2 ms window
still sent nearly one request per decision.

Why record batches (:class:`RecordBatchSender`): handing records to the producer one by one
(``producer.send``: metadata check, murmur2 in Python, the accumulator's append, per record) was
still ~5 % of a score request's CPU under cProfile. A window's records now go into one aiokafka
record batch per partition (``create_batch``/``send_batch``, as the profile flush does), each
record still its own Kafka message with the same key, value and partition (Kafka's default
partitioner on the key), no headers, the producer's timestamp.

Nothing is dropped: a record is queued before the score response is built, a failed send puts the
records not handed over back at the front of the queue and retries, a batch the broker did not
acknowledge is queued again (so a record may reach the topic twice, never zero times), and
:meth:`AuditLog.flush` runs before the app flushes and stops its producer (``on_before_shutdown``).
A response never implied a durable audit record (the view does not wait for the broker); that is
unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

from stream.record_batches import append_record, close_batches

__all__ = ["AuditLog", "NotHandedOver", "RecordBatchSender", "one_by_one"]

log = logging.getLogger("offerstream.audit")

Record = tuple[bytes, bytes]
OnLost = Callable[[list[Record]], None]
Send = Callable[[list[Record], OnLost], Awaitable[None]]
RETRY_S = 0.2
PARTITION_CACHE = 100_000  # keys whose partition is remembered


class NotHandedOver(Exception):  # noqa: N818 - reads as what happened to ``records``
    """A send failed; ``records`` were not handed to the producer (the others were)."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__(f"{len(records)} audit records not handed to the producer")
        self.records = records


def one_by_one(send: Callable[[bytes, bytes], Awaitable[Any]]) -> Send:
    """A :data:`Send` over a per-record ``await send(key, value)`` (tests, other producers)."""

    async def send_all(records: list[Record], on_lost: OnLost) -> None:
        for i, (key, value) in enumerate(records):
            try:
                await send(key, value)
            except Exception as exc:
                raise NotHandedOver(records[i:]) from exc

    return send_all


class RecordBatchSender:
    """Hand records to an aiokafka producer as one record batch per partition of ``topic``.

    Parameters
    ----------
    producer : callable
        Returns the started ``AIOKafkaProducer`` (faust's, so it is flushed and stopped with it).
    topic : str
        Where the records go; each record's partition is Kafka's default partitioner on its key.
    """

    def __init__(self, producer: Callable[[], Any], topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[bytes, int] = {}
        self._layout: list[int] = []

    def partition(self, key: bytes, partitions: list[int]) -> int:
        """The key's partition, as ``producer.send`` would choose it (cached per key)."""
        if partitions != self._layout:  # the topic changed: forget every cached answer
            self._layout, self._partition_of = list(partitions), {}
        partition = self._partition_of.get(key)
        if partition is None:  # murmur2 in Python costs ~3 us; a key's answer never changes
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            partition = int(self._partitioner(key, partitions, partitions))
            self._partition_of[key] = partition
        return partition

    async def __call__(self, records: list[Record], on_lost: OnLost) -> None:
        """Hand every record over; ``on_lost(records)`` if the broker then fails a batch."""
        producer = self._producer()
        try:
            partitions = sorted(await producer.partitions_for(self.topic))
        except Exception as exc:
            raise NotHandedOver(records) from exc
        open_batches: dict[int, Any] = {}
        held: dict[int, list[Record]] = {}  # partition -> the records of its open batch
        full: list[tuple[int, Any, list[Record]]] = []
        for key, value in records:
            partition = self.partition(key, partitions)
            filled = append_record(open_batches, partition, key, value, producer.create_batch)
            if filled is not None:  # the record started a new batch
                full.append((partition, filled, held.pop(partition)))
            held.setdefault(partition, []).append((key, value))
        full.extend((partition, batch, held[partition]) for partition, batch in close_batches(open_batches))
        for i, (partition, batch, batch_records) in enumerate(full):
            try:
                delivery = await producer.send_batch(batch, self.topic, partition=partition)
            except Exception as exc:
                raise NotHandedOver([r for _, _, rest in full[i:] for r in rest]) from exc
            delivery.add_done_callback(
                lambda done, held=batch_records: _check_delivery(done, held, on_lost))


def _check_delivery(done: asyncio.Future[Any], held: list[Record], on_lost: OnLost) -> None:
    if done.cancelled() or done.exception() is not None:
        log.warning("the broker did not acknowledge %d audit records (%s); sending them again",
                    len(held), "cancelled" if done.cancelled() else done.exception())
        on_lost(held)


class AuditLog:
    """Queue audit records and send them to the producer a few milliseconds later, together.

    Parameters
    ----------
    send : callable
        ``await send(records, on_lost)`` hands records to the producer (not waiting for the
        broker), raising :class:`NotHandedOver` with those it did not hand over, and calls
        ``on_lost(records)`` for any the broker then failed (:class:`RecordBatchSender`,
        or :func:`one_by_one` over a per-record send).
    delay_s : float
        How long the first record of a batch waits for others.
    max_batch : int
        A batch this large is sent at once.
    """

    def __init__(self, send: Send, *, delay_s: float = 0.01, max_batch: int = 256) -> None:
        self._send = send
        self.delay_s = delay_s
        self.max_batch = max_batch
        self._pending: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.batches = 0
        self.errors = 0

    @property
    def pending(self) -> int:
        """Records queued and not yet handed to the producer."""
        return len(self._pending)

    def add(self, key: str, record: dict[str, Any]) -> None:
        """Queue one decision's record (serialized now, so later changes cannot alter it)."""
        self._pending.append((key.encode(), orjson.dumps(record)))
        if len(self._pending) >= self.max_batch:
            self._start()
        elif self._timer is None and self._task is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay_s, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and self._pending:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - the records are back in the queue; retry shortly
            self.errors += 1
            log.exception("sending %d audit records failed; retrying in %.1f s", len(self._pending), RETRY_S)
            self._task = None
            self._timer = asyncio.get_running_loop().call_later(RETRY_S, self._start)
            return
        self._task = None
        if self._pending:  # records added while the last one of a batch was being queued
            self._start()

    async def flush(self) -> None:
        """Hand every queued record to the producer (in one produce request when they fit)."""
        while self._pending:
            batch, self._pending = self._pending, []
            self.batches += 1
            try:
                await self._send(batch, self.requeue)
            except NotHandedOver as exc:
                self._pending[:0] = exc.records
                self.sent += len(batch) - len(exc.records)
                raise
            except BaseException:  # not known which were handed over: all again (twice, not never)
                self._pending[:0] = batch
                raise
            self.sent += len(batch)

    def requeue(self, records: list[Record]) -> None:
        """Queue records again that were handed over but not acknowledged by the broker."""
        self.errors += 1
        self._pending[:0] = records
        if self._timer is None and self._task is None:
            self._timer = asyncio.get_running_loop().call_later(RETRY_S, self._start)
