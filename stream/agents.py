"""The ingest agent: decode, call the core, write state, send. Nothing is dropped silently.

A message on ``events`` is one event or an envelope (a JSON array) of events of customers in the
message's partition. Each event is applied where its customer's state lives; an event that arrived
on another partition (a producer keyed it differently) is re-sent with the right key instead of
being applied to a table partition this worker does not own. Malformed events go to
``events-dead-letter`` with the reason and where they came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from faust.types import TP

from models.consent import DEFAULT_TCF_BASIS, TCF_BASIS_FIELD
from models.customer_state import apply_event
from models.errors import InvalidConsent, InvalidEvent
from models.events import Event, parse_payload
from models.ledger import ErasureLedger
from stream.events_reader import EventsReader
from stream.ingest_state import FLUSH_INTERVAL_S, LiveState
from stream.local_log import LocalLog
from stream.metrics import Metrics
from stream.topology import Topology

__all__ = ["Ingest", "register_agents", "RESTORED_HEADER"]

log = logging.getLogger("offerstream.ingest")
MAX_DEAD_LETTER_RAW = 64 * 1024


RESTORED_HEADER = "offerstream-restored"


@dataclass
class Tally:
    """What a run of messages did: outcome counts and archive lines, recorded once for the run."""

    outcomes: dict[str, int] = field(default_factory=dict)
    archive: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class Ingest:
    """What the ingest agent works with, and its handling of one message.

    ``owner_of`` maps a customer id to the ``events`` partition that owns it
    (:meth:`stream.placement.Placement.events_partition`); ``processed`` is the next offset to
    process per partition (:attr:`stream.readiness.Readiness.processed`); ``tcf_basis`` is the
    installation's ``OFFERSTREAM_TCF_BASIS``, under which ``consent`` events' TC strings are read.
    """

    topology: Topology
    live: LiveState
    ledger: ErasureLedger
    owner_of: Callable[[str], int]
    local_log: LocalLog
    metrics: Metrics
    processed: dict[int, int]
    tcf_basis: str = DEFAULT_TCF_BASIS

    async def handle(self, key: bytes | None, value: bytes | None, message: Any, tally: Tally | None = None) -> None:
        """Decode a message and apply, re-route or dead-letter each of its events.

        ``tally``: count and archive into it (the caller records a whole batch at once with
        :meth:`record`); by default this message is recorded on its own.
        """
        try:
            items = parse_payload(value or b"")
        except InvalidEvent as exc:
            await self._dead_letter(key, value or b"", exc, message, None)
            return
        own = tally is None
        tally = Tally() if tally is None else tally
        envelope = isinstance(value, bytes) and value.lstrip()[:1] == b"["
        applied: list[Event] = []
        partition, offset = message.partition, message.offset
        self.live.begin(offset)
        outcomes = tally.outcomes
        for index, item in enumerate(items):
            if isinstance(item, InvalidEvent):
                raw = orjson.loads(value or b"")[index] if envelope else value
                await self._dead_letter(key, raw, item, message, index if envelope else None)
                continue
            if self.owner_of(item.customer_id) != partition:
                self.metrics.inc("events_rerouted_total")
                await self.topology.reroute(item)  # acknowledged with this message, after the broker has it
                continue
            outcome = await self._apply(key, item, message, index if envelope else None, applied)
            if outcome is not None:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if applied and not _restored(message):
            raw = value if not envelope and len(applied) == 1 and TCF_BASIS_FIELD not in applied[0].data else None
            tally.archive.extend(self.local_log.lines(applied, raw))
        if own:
            self.record(tally)

    def record(self, tally: Tally) -> None:
        """Count the outcomes of ``tally`` and archive its applied events."""
        for outcome, n in tally.outcomes.items():
            self.metrics.inc(f'events_processed_total{{outcome="{outcome}"}}', n)
        if tally.archive:
            self.local_log.append_lines(tally.archive)

    async def _apply(self, key: bytes | None, item: Event, message: Any, index: int | None,
                     applied: list[Event]) -> str | None:
        """Apply one event of the customer's own partition; its outcome (None: dead-lettered)."""
        if self.live.already_applied(item.customer_id, message.offset):
            return "replayed"  # the stored profile already holds this message
        try:
            # the one event rule (models/customer_state.py)
            result = apply_event(self.live, item, self.ledger, tcf_basis=self.tcf_basis)
        except InvalidConsent as exc:
            await self._dead_letter(key, item.data, InvalidEvent(f"consent.{exc.field}", exc.reason), message, index)
            return None
        if result.stored:  # only what was stored is archived; a TC string with the basis it was read under
            tc = item.get("consent").get("tcf") if item.type == "consent" else None
            applied.append(replace(item, data={**item.data, TCF_BASIS_FIELD: self.tcf_basis}) if tc else item)
        return result.value

    async def _dead_letter(self, key: bytes | None, raw: Any, error: InvalidEvent, message: Any,
                           index: int | None) -> None:
        self.metrics.inc("dead_letters_total")
        text = raw if isinstance(raw, bytes) else orjson.dumps(raw)
        record = {
            "reason": str(error), "field": error.field, "index": index,
            "source": {"topic": message.topic, "partition": message.partition, "offset": message.offset},
            "raw": text[:MAX_DEAD_LETTER_RAW].decode("utf-8", "replace"),
            "truncated": len(text) > MAX_DEAD_LETTER_RAW,
        }
        self.local_log.dead_letter(record)
        await self.topology.send_dead_letter(key, orjson.dumps(record))


class _OffsetAck:
    """Acknowledges one offset of an ``events`` partition to faust's consumer, which commits it.

    faust's ``Consumer.ack`` reads ``acked``, ``tp``, ``topic`` and ``offset`` of what it acks.
    """

    __slots__ = ("consumer", "acked", "tp", "topic", "offset", "__weakref__")  # faust keeps a WeakSet of them

    def __init__(self, consumer: Any, tp: TP, offset: int) -> None:
        self.consumer, self.acked, self.tp, self.topic, self.offset = consumer, False, tp, tp.topic, offset

    def ack(self) -> bool:
        return bool(self.consumer.ack(self))


def _ack_holes(live: LiveState, metrics: Metrics, consumer: Any, tp: TP, start: int, stop: int) -> None:
    """Acknowledge offsets without a record (transaction markers, aborted records) with the next
    flush, or faust's commit, which needs every offset acknowledged, would stop at the first."""
    if stop <= start:
        return
    metrics.inc("events_offsets_without_record_total", stop - start)
    log.info("%s[%d]: offsets %d..%d hold no record", tp.topic, tp.partition, start, stop - 1)
    for offset in range(start, stop):
        live.defer_ack(_OffsetAck(consumer, tp, offset))


def _restored(message: Any) -> bool:
    """True for events replayed from the local archive at start (already archived)."""
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(k == RESTORED_HEADER for k, _ in pairs)


def register_agents(app: Any, ingest: Ingest, reader: EventsReader) -> None:
    """Attach the ingest agent, its flush timer and its rebalance hooks to ``app``.

    The owned ``events`` partitions are read in batches by ``reader``
    (:mod:`stream.events_reader`), each record applied by :meth:`Ingest.handle` and acknowledged
    after the flush that made its effect durable. The faust agent on ``events`` stays: its
    subscription is what makes the group assign the partitions (and the tables with them).
    """
    live, metrics = ingest.live, ingest.metrics
    consumer: Any = app.consumer  # an OffloadingConsumer (stream/events_reader.py)
    if os.environ.get("OFFERSTREAM_WRITE_BEHIND", "1") == "0":
        _register_naive(app, ingest, consumer)  # the benchmarks' baseline
        return
    consumer.offloaded = frozenset({reader.topic})  # faust's fetch loop leaves events to the reader
    apply_records = _batch_apply(ingest, reader, consumer)

    @app.agent(ingest.topology.events, name="offerstream.ingest")
    async def ingest_write_behind(stream: Any) -> None:
        # faust's fetch loop leaves ``events`` to the reader (OffloadingConsumer): nothing arrives
        # here. Were a message handed over, applying it would break the reader's offset order.
        async for _event in stream.noack().events():
            metrics.inc("events_handed_over_by_faust_total")
            log.error("faust handed over an events message; the events reader applies them")

    @app.task
    async def read_events() -> None:
        await reader.run(apply_records)

    @app.timer(FLUSH_INTERVAL_S)
    async def flush_profiles() -> None:
        written = await live.flush()
        metrics.inc("profiles_flushed_total", written)
        metrics.gauges["ingest_dirty_customers"] = live.dirty

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        reader.revoked()  # before the flush: nothing is applied after it
        await live.flush()  # hand over what we applied before another worker takes over
        live.clear()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        live.clear()  # the tables may have moved on while another worker owned a partition
        reader.assigned(tp.partition for tp in app.consumer.assignment() if tp.topic == reader.topic)


def _batch_apply(ingest: Ingest, reader: EventsReader, consumer: Any) -> Any:
    """The reader's ``apply`` (:data:`stream.events_reader.ApplyBatch`) for ``ingest``."""
    live, metrics, processed = ingest.live, ingest.metrics, ingest.processed

    async def apply_records(partition: int, records: list[Any], generation: int, end: int) -> bool:
        """Apply what the reader read, in order, unless a rebalance began since it read it."""
        tp = TP(reader.topic, partition)
        async with live.lock:
            if reader.generation != generation:
                return False
            tally, expected = Tally(), reader.position[partition]
            for record in records:  # an aiokafka record has what handle() reads of a message
                _ack_holes(live, metrics, consumer, tp, expected, record.offset)
                await ingest.handle(record.key, record.value, record, tally)
                live.defer_ack(_OffsetAck(consumer, tp, record.offset))
                expected = record.offset + 1
            _ack_holes(live, metrics, consumer, tp, expected, end)
            ingest.record(tally)
            reader.position[partition] = processed[partition] = max(expected, end)
        metrics.gauges["ingest_dirty_customers"] = live.dirty
        return True

    return apply_records


def _register_naive(app: Any, ingest: Ingest, consumer: Any) -> None:
    """Benchmark-only (``OFFERSTREAM_WRITE_BEHIND=0``): the naive baseline, one table write per
    event and faust's automatic acks, faust handing over every message, so benchmarks/ can compare
    both in the same run."""
    ingest.live.write_behind = False
    consumer.offloaded = frozenset()
    processed = ingest.processed

    @app.agent(ingest.topology.events, name="offerstream.ingest")
    async def ingest_naive(stream: Any) -> None:
        async for event in stream.events():
            await ingest.handle(event.key, event.value, event.message)
            processed[event.message.partition] = event.message.offset + 1
