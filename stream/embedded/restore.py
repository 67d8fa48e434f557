"""Restore the embedded default after a restart: the bundled broker keeps nothing, the disk does.

Before the worker starts, the new (empty) broker is refilled from the data dir: the catalogue
snapshot to ``offers``, the experiments snapshot to ``experiments`` (their results are not restored:
the ``decisions`` topic is not), the erasure ledger to ``erasures``, and the event archive to ``events`` in
the order the events were first applied (consent calls included, as ``consent`` events). Replayed
events carry the ``offerstream-restored`` header so they are not archived twice. Customers in the
erasure ledger are not replayed. The worker reports ready only once it has applied all of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from models.archive import read_in_processing_order
from models.ledger import ErasureLedger
from stream.agents import RESTORED_HEADER
from stream.embedded.kafka_wire import create_topics
from stream.settings import Settings
from stream.topics import (
    ERASURES,
    ERASURES_TOPIC,
    EVENTS,
    EVENTS_TOPIC,
    EXPERIMENTS,
    EXPERIMENTS_TOPIC,
    OFFERS,
    OFFERS_TOPIC,
)

__all__ = ["restore_from_disk"]

log = logging.getLogger("offerstream.restore")


async def restore_from_disk(bootstrap: str, settings: Settings) -> dict[str, Any]:
    """Refill an empty broker from the data dir; return counts and the end offsets per partition."""
    topics = (EVENTS, OFFERS, ERASURES, EXPERIMENTS)
    await create_topics(bootstrap, {t.name: t.partitions(settings.partitions) for t in topics},
                        configs={t.name: t.kafka_config() for t in topics})
    ledger = ErasureLedger(settings.data_dir / "erasure-ledger.jsonl", settings.hash_key)
    events = read_in_processing_order(
        settings.archive_dir, skip=lambda e: ledger.is_erased(str(e.get("customer_id")), int(e["ts"])))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[int, int] = {}
    try:
        offers = _snapshot_lines(settings.data_dir / "catalogue.jsonl")
        for raw in offers:
            await producer.send(OFFERS_TOPIC, raw, key=str(orjson.loads(raw)["offer_id"]).encode())
        for raw in _snapshot_lines(settings.data_dir / "experiments.jsonl"):
            await producer.send(EXPERIMENTS_TOPIC, raw, key=str(orjson.loads(raw)["id"]).encode())
        for digest, erased_at in ledger.entries().items():
            await producer.send(ERASURES_TOPIC, orjson.dumps({"erased_at": erased_at}), key=digest.encode())
        headers = [(RESTORED_HEADER, b"1")]
        futures = [await producer.send(EVENTS_TOPIC, orjson.dumps(e), key=str(e["customer_id"]).encode(),
                                       headers=headers) for e in events]
        for future in futures:
            metadata = await future
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
        await producer.flush()
    finally:
        await producer.stop()
    report = {"events": len(events), "offers": len(offers), "erasures": len(ledger.entries()), "ends": ends}
    log.warning("restored from %s: %d events, %d offers, %d erasures", settings.data_dir,
                report["events"], report["offers"], report["erasures"])
    return report


def _snapshot_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [line for line in path.read_bytes().splitlines() if line.strip()]
