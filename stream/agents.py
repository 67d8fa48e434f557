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
from dataclasses import dataclass, replace
from typing import Any

import orjson

from models.consent import DEFAULT_TCF_BASIS
from models.customer_state import apply_event
from models.errors import InvalidConsent, InvalidEvent
from models.events import Event, parse_payload
from models.ledger import ErasureLedger
from stream.delivery_order import DeliveryOrder
from stream.ingest_state import FLUSH_INTERVAL_S, LiveState
from stream.local_log import LocalLog
from stream.metrics import Metrics
from stream.topology import Topology

__all__ = ["Ingest", "register_agents", "RESTORED_HEADER"]

log = logging.getLogger("offerstream.ingest")
MAX_DEAD_LETTER_RAW = 64 * 1024


RESTORED_HEADER = "offerstream-restored"
TCF_BASIS_FIELD = "tcf_basis"  # named in the archived record of a consent event with a TC string


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

    async def handle(self, key: bytes | None, value: bytes | None, message: Any) -> None:
        """Decode a message and apply, re-route or dead-letter each of its events."""
        try:
            items = parse_payload(value or b"")
        except InvalidEvent as exc:
            await self._dead_letter(key, value or b"", exc, message, None)
            return
        envelope = isinstance(value, bytes) and value.lstrip()[:1] == b"["
        applied: list[Event] = []
        partition, offset = message.partition, message.offset
        self.live.begin(offset)
        outcomes: dict[str, int] = {}
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
        for outcome, n in outcomes.items():
            self.metrics.inc(f'events_processed_total{{outcome="{outcome}"}}', n)
        if applied and not _restored(message):
            raw = value if not envelope and len(applied) == 1 and TCF_BASIS_FIELD not in applied[0].data else None
            self.local_log.append(applied, raw)

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


class _LogAck:
    """Acknowledges a record read from the log by :class:`DeliveryOrder` like a stream event."""

    def __init__(self, consumer: Any, message: Any) -> None:
        self.consumer, self.message = consumer, message

    def ack(self) -> bool:
        return bool(self.consumer.ack(self.message))


def _as_message(record: Any) -> Any:
    """A faust message of an aiokafka record read from the log."""
    from faust.types import Message

    return Message(record.topic, record.partition, record.offset, record.timestamp / 1000.0,
                   record.timestamp_type, record.headers, record.key, record.value, record.checksum)


async def _catch_up(app: Any, order: DeliveryOrder, event: Any, apply: Any, live: LiveState,
                    metrics: Metrics) -> bool:
    """Apply what is missing before ``event``'s message; True if the message itself is to be applied."""
    message = event.message
    try:
        missing = await order.admit(message.topic, message.partition, message.offset)
    except Exception as exc:  # noqa: BLE001 - neither applied nor acknowledged: asked again
        log.error("events partition %d: could not read the records before offset %d: %r",
                  message.partition, message.offset, exc)
        metrics.inc("events_order_errors_total")
        return False
    if missing is None:
        # applied already; acknowledged after the next flush, like the copy that was applied
        live.defer_ack(event)
        return False
    for record in missing:
        metrics.inc("events_read_from_log_total")
        copy = _as_message(record)
        await apply(record.key, record.value, copy, _LogAck(app.consumer, copy))
    return True


def _restored(message: Any) -> bool:
    """True for events replayed from the local archive at start (already archived)."""
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(k == RESTORED_HEADER for k, _ in pairs)


def register_agents(app: Any, ingest: Ingest, *, order: DeliveryOrder | None = None) -> None:
    """Attach the ingest agent, its flush timer and its rebalance hooks to ``app``.

    ``order``: applies every offset of a partition once, in order, reading from the log what faust
    did not hand over (:mod:`stream.delivery_order`).
    """
    live, metrics, processed = ingest.live, ingest.metrics, ingest.processed

    # Benchmark-only switch: OFFERSTREAM_WRITE_BEHIND=0 runs the naive baseline (one table write
    # per event, faust's automatic acks), so benchmarks/ can compare both in the same run.
    if os.environ.get("OFFERSTREAM_WRITE_BEHIND", "1") == "0":
        live.write_behind = False

        @app.agent(ingest.topology.events, name="offerstream.ingest")
        async def ingest_naive(stream: Any) -> None:
            async for event in stream.events():
                await ingest.handle(event.key, event.value, event.message)
                processed[event.message.partition] = event.message.offset + 1
        return

    async def apply(key: Any, value: Any, message: Any, ack: Any) -> None:
        async with live.lock:
            await ingest.handle(key, value, message)
            live.defer_ack(ack)
        processed[message.partition] = message.offset + 1

    @app.agent(ingest.topology.events, name="offerstream.ingest")
    async def ingest_write_behind(stream: Any) -> None:
        # Manual acknowledgement: a message is acked by the flush that made its effect durable.
        async for event in stream.noack().events():
            if order is not None and not await _catch_up(app, order, event, apply, live, metrics):
                continue
            await apply(event.key, event.value, event.message, event)
            metrics.gauges["ingest_dirty_customers"] = live.dirty

    @app.timer(FLUSH_INTERVAL_S)
    async def flush_profiles() -> None:
        written = await live.flush()
        metrics.inc("profiles_flushed_total", written)
        metrics.gauges["ingest_dirty_customers"] = live.dirty

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await live.flush()  # hand over what we applied before another worker takes over
        live.clear()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        if order is not None:
            order.forget()
        live.clear()  # the tables may have moved on while another worker owned a partition
