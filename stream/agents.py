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
from typing import TYPE_CHECKING, Any

import orjson

from models.customer_state import apply_event
from models.errors import InvalidConsent, InvalidEvent
from models.events import Event, parse_payload
from stream.ingest_state import FLUSH_INTERVAL_S

if TYPE_CHECKING:
    from stream.worker import Runtime

__all__ = ["register_agents"]

log = logging.getLogger("offerstream.ingest")
MAX_DEAD_LETTER_RAW = 64 * 1024


RESTORED_HEADER = "offerstream-restored"


async def _dead_letter(rt: Runtime, key: bytes | None, raw: Any, error: InvalidEvent,
                       message: Any, index: int | None) -> None:
    rt.metrics.inc("dead_letters_total")
    text = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    record = {
        "reason": str(error), "field": error.field, "index": index,
        "source": {"topic": message.topic, "partition": message.partition, "offset": message.offset},
        "raw": text[:MAX_DEAD_LETTER_RAW].decode("utf-8", "replace"),
        "truncated": len(text) > MAX_DEAD_LETTER_RAW,
    }
    rt.record_dead_letter(record)
    await rt.topology.send_dead_letter(key, orjson.dumps(record))


async def _handle_message(rt: Runtime, key: bytes | None, value: bytes | None, message: Any) -> None:
    try:
        items = parse_payload(value or b"")
    except InvalidEvent as exc:
        await _dead_letter(rt, key, value or b"", exc, message, None)
        return
    envelope = isinstance(value, bytes) and value.lstrip()[:1] == b"["
    applied: list[Event] = []
    live, ledger = rt.live, rt.ledger
    partition, offset = message.partition, message.offset
    owner_of, already_applied = rt.events_partition, live.already_applied
    live.begin(offset)
    outcomes: dict[str, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, InvalidEvent):
            raw = orjson.loads(value or b"")[index] if envelope else value
            await _dead_letter(rt, key, raw, item, message, index if envelope else None)
            continue
        cid = item.customer_id
        if owner_of(cid) != partition:
            rt.metrics.inc("events_rerouted_total")
            await rt.topology.reroute(item)  # acknowledged with this message, after the broker has it
            continue
        if already_applied(cid, offset):
            outcome = "replayed"  # the stored profile already holds this message
        else:
            try:
                result = apply_event(live, item, ledger)  # the one event rule (models/customer_state.py)
            except InvalidConsent as exc:
                await _dead_letter(rt, key, item.data, InvalidEvent(f"consent.{exc.field}", exc.reason),
                                   message, index if envelope else None)
                continue
            if result.stored:
                applied.append(item)  # only what was stored is archived
            outcome = result.value
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    for outcome, n in outcomes.items():
        rt.metrics.inc(f'events_processed_total{{outcome="{outcome}"}}', n)
    if applied and not _restored(message):
        rt.archive_events(applied, value if not envelope and len(applied) == 1 else None)


def _restored(message: Any) -> bool:
    """True for events replayed from the local archive at start (already archived)."""
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(k == RESTORED_HEADER for k, _ in pairs)


def register_agents(rt: Runtime) -> None:
    """Attach the ingest agent to the runtime's app."""

    # Benchmark-only switch: OFFERSTREAM_WRITE_BEHIND=0 runs the naive baseline (one table write
    # per event, faust's automatic acks), so benchmarks/ can compare both in the same run.
    if os.environ.get("OFFERSTREAM_WRITE_BEHIND", "1") == "0":
        rt.live.write_behind = False

        @rt.app.agent(rt.topology.events, name="offerstream.ingest")
        async def ingest_naive(stream: Any) -> None:
            async for event in stream.events():
                await _handle_message(rt, event.key, event.value, event.message)
                rt.processed[event.message.partition] = event.message.offset + 1
        return

    @rt.app.agent(rt.topology.events, name="offerstream.ingest")
    async def ingest(stream: Any) -> None:
        # Manual acknowledgement: a message is acked by the flush that made its effect durable.
        async for event in stream.noack().events():
            async with rt.live.lock:
                await _handle_message(rt, event.key, event.value, event.message)
                rt.live.defer_ack(event)
            rt.metrics.gauges["ingest_dirty_customers"] = rt.live.dirty
            rt.processed[event.message.partition] = event.message.offset + 1

    @rt.app.timer(FLUSH_INTERVAL_S)
    async def flush_profiles() -> None:
        written = await rt.live.flush()
        rt.metrics.inc("profiles_flushed_total", written)
        rt.metrics.gauges["ingest_dirty_customers"] = rt.live.dirty

    @rt.app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
    async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
        await rt.live.flush()  # hand over what we applied before another worker takes over
        rt.live.clear()

    @rt.app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: Any, assigned: Any, **_: Any) -> None:
        rt.live.clear()  # the tables may have moved on while another worker owned a partition
