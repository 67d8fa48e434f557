"""Topics every worker reads whole: the offer catalogue (``offers``) and the erasure ledger.

The ``offers`` topic (key = offer id, value = offer JSON, empty value = delete) is the catalogue's
source of truth: ``PUT /v1/offers/{id}`` writes to it and so may any Kafka producer. Each worker
reads all partitions of such a topic from the start with a plain consumer outside the consumer
group (:class:`TopicMirror`), so every worker holds all of it. An invalid offer on the topic is
logged (without its content) and counted, never applied. The catalogue keeps a snapshot file so
the embedded default can restore it after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.catalog import Offer, parse_offer
from models.errors import InvalidOffer
from stream.embedded.kafka_wire import default_security
from stream.embedded.transport import FETCH_MAX_WAIT_MS
from stream.topics import OFFERS_TOPIC

__all__ = ["Catalogue", "TopicMirror", "write_snapshot"]

log = logging.getLogger("offerstream.catalogue")


class Catalogue:
    """The in-memory catalogue of one worker, kept current from the ``offers`` topic."""

    def __init__(self, bootstrap: str, snapshot: Path | None = None) -> None:
        self.offers: dict[str, Offer] = {}
        self.raw: dict[str, bytes] = {}
        self.invalid = 0
        self.snapshot = snapshot
        self.mirror = TopicMirror(bootstrap, OFFERS_TOPIC, self.apply, on_batch=self._save)

    @property
    def ready(self) -> asyncio.Event:
        """Set once every offer that existed at start has been read."""
        return self.mirror.ready

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the ``offers`` topic."""
        if key is None:
            self.invalid += 1
            log.warning("offers record without a key ignored")
            return
        offer_id = key.decode("utf-8", "replace")
        if not value:
            self.offers.pop(offer_id, None)
            self.raw.pop(offer_id, None)
            return
        try:
            self.offers[offer_id] = parse_offer(orjson.loads(value), offer_id)
            self.raw[offer_id] = value
        except (InvalidOffer, orjson.JSONDecodeError) as exc:
            self.invalid += 1
            log.warning("invalid offer %r on topic %s ignored: %s", offer_id, OFFERS_TOPIC, exc)

    def _save(self) -> None:
        if self.snapshot is not None:
            write_snapshot(self.snapshot, self.raw)

    async def wait_applied(self, partition: int, offset: int, timeout: float = 10.0) -> None:
        """Wait until the record at ``(partition, offset)`` has been applied here."""
        await self.mirror.wait_applied(partition, offset, timeout)

    async def run(self) -> None:
        """Consume the ``offers`` topic for ever (a worker task)."""
        await self.mirror.run()


class TopicMirror:
    """Reads every partition of a topic from the start, for ever, calling ``apply`` per record.

    ``security``: aiokafka TLS/SASL options (``stream.brokers.client_security``); by default those
    of the process (``stream.embedded.kafka_wire.set_default_security``), read when it starts.
    """

    def __init__(self, bootstrap: str, topic: str, apply: Callable[[bytes | None, bytes | None], None],
                 on_batch: Callable[[], None] | None = None, *, security: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.apply = apply
        self.on_batch = on_batch
        self.ready = asyncio.Event()
        self._applied: dict[int, int] = {}  # partition -> next offset to apply
        self._progress = asyncio.Condition()

    async def wait_applied(self, partition: int, offset: int, timeout: float = 10.0) -> None:
        """Wait until the record at ``(partition, offset)`` has been applied here."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self._applied.get(partition, 0) > offset), timeout
            )

    async def run(self) -> None:
        """Consume the topic for ever (a worker task)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **(default_security() if self.security is None else self.security),
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                await self._apply_batch(batch)
                if not self.ready.is_set() and await self._caught_up(consumer, partitions):
                    self.ready.set()
                    log.info("topic %s loaded", self.topic)
        finally:
            await consumer.stop()

    async def _apply_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        if not batch:
            return
        for tp, records in batch.items():
            for record in records:
                self.apply(record.key, record.value)
            self._applied[tp.partition] = records[-1].offset + 1
        if self.on_batch is not None:
            self.on_batch()
        async with self._progress:
            self._progress.notify_all()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(100):
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            await consumer._client.force_metadata_update()  # noqa: SLF001 - topic may be new
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {self.topic!r} does not exist on {self.bootstrap}")

    async def _caught_up(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
        # The bundled broker's ListOffsets answer can be one past the real end, so trust the
        # high watermark that Fetch responses carry (BROKER-NOTES).
        for tp in partitions:
            high = consumer.highwater(tp)
            if high is None or await consumer.position(tp) < high:
                return False
        return True


def write_snapshot(path: Path, raw: dict[str, bytes]) -> None:
    """Replace ``path`` with the records of a mirrored topic, one JSON line per key (sorted).

    The embedded default refills its new broker from such a file after a restart
    (``stream/embedded/restore.py``). Written beside it under a name of this process, then
    renamed, so a reader never sees half a file and two workers sharing a data dir never write
    the same temporary file.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(v.rstrip(b"\n") + b"\n" for _, v in sorted(raw.items())))
    os.replace(tmp, path)
