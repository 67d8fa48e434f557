"""Replay events into the ``events`` topic with a plain Kafka producer (any client would do).

Each event is one message keyed by its customer id as UTF-8 bytes, so Kafka's default partitioner
sends it where the customer's state lives. Lines that break the event contract are reported with
their file and line number and not sent.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from models.errors import InvalidEvent
from models.events import parse_event
from stream.embedded.kafka_wire import default_security
from stream.topics import EVENTS_TOPIC

__all__ = ["produce_events", "produce_files", "read_event_file"]


def read_event_file(path: Path) -> Iterable[tuple[int, Any]]:
    """Yield ``(line_number, decoded JSON or the raw line)`` of a JSON-lines file (``.gz`` ok)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield number, line


async def produce_events(bootstrap: str, events: Iterable[dict[str, Any]], *, rate: float = 0.0,
                         shift_ms: int = 0, progress_every: int = 0) -> int:
    """Send contract events (already valid) one per message; return how many were sent.

    TLS/SASL: those of the process (``stream.brokers.use_client_security``), plaintext by default.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, **default_security())
    await producer.start()
    sent, started = 0, time.perf_counter()
    try:
        async for event in _paced(events, rate):
            if shift_ms:
                event = {**event, "ts": _as_ms(event["ts"]) + shift_ms}
            await producer.send(EVENTS_TOPIC, orjson.dumps(event), key=event["customer_id"].encode())
            sent += 1
            if progress_every and sent % progress_every == 0:
                elapsed = time.perf_counter() - started
                print(f"  ... {sent} events ({sent / elapsed:.0f}/s)", file=sys.stderr, flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _as_ms(ts: Any) -> int:
    return int(ts) if isinstance(ts, int | float) else parse_event(
        {"event_id": "x", "type": "page_view", "customer_id": "x", "ts": ts}).ts


async def _paced(events: Iterable[dict[str, Any]], rate: float) -> AsyncIterator[dict[str, Any]]:
    started = time.perf_counter()
    for i, event in enumerate(events):
        if rate > 0:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        yield event


async def produce_files(bootstrap: str, files: Sequence[Path], *, rate: float = 0.0,
                        shift_to_now: bool = False) -> dict[str, Any]:
    """Validate and replay event files; report what was sent and what was rejected."""
    valid: list[dict[str, Any]] = []
    rejected = 0
    for path in files:
        for number, value in read_event_file(path):
            try:
                event = parse_event(value)
            except InvalidEvent as exc:
                rejected += 1
                print(f"{path}:{number}: rejected: {exc}", file=sys.stderr)
                continue
            valid.append({**event.data, "ts": event.ts})
    shift = int(time.time() * 1000) - max((e["ts"] for e in valid), default=0) if shift_to_now else 0
    started = time.perf_counter()
    sent = await produce_events(bootstrap, valid, rate=rate, shift_ms=shift, progress_every=10_000)
    seconds = time.perf_counter() - started
    return {"sent": sent, "rejected": rejected, "seconds": seconds, "rate": sent / max(seconds, 1e-9)}
