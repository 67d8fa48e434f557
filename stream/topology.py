"""Topics and tables of a worker, with one key serializer end to end.

Keys everywhere are plain UTF-8 strings written as raw bytes, as Kafka's string serializer writes
them, so an outside producer's default partitioner, the tables' changelogs and request routing all
agree on which partition (and so which worker) owns a customer. Values are raw bytes that the core
encodes and decodes: consent as orjson JSON, profiles in their binary stored form (schema v4,
``Profile.to_bytes``; older JSON values are still read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP

from models.consent import ConsentState
from models.events import Event
from models.profile import Profile
from stream.durable import TrackedSends, tracked_table, wait_acknowledged
from stream.record_batches import append_record, close_batches
from stream.settings import Settings
from stream.topics import (
    CONSENT_TABLE,
    DECISIONS,
    ERASURES,
    EVENTS,
    EVENTS_DEAD_LETTER,
    EXPERIMENTS,
    OFFERS,
    PROFILES_TABLE,
)

__all__ = ["Topology", "declare"]


@dataclass
class Topology:
    """The topics and tables of one worker."""

    events: Any
    offers: Any
    decisions: Any
    dead_letter: Any
    erasures: Any
    profiles: Any
    consent: Any
    experiments: Any = None  # the experiment configurations (stream/experiments.py)
    # Records the ingest agent produces on behalf of an input message (re-routed events, dead
    # letters): the message is acknowledged only after the broker has acknowledged them too.
    outputs: TrackedSends = field(default_factory=lambda: TrackedSends("ingest outputs"))

    async def reroute(self, event: Event) -> None:
        """Send an event to the partition that owns its customer (keyed by the customer id)."""
        await self.outputs.send(self.events, key=event.customer_id, value=orjson.dumps(event.data))

    async def send_dead_letter(self, key: bytes | None, record: bytes) -> None:
        """Send a dead-letter record to ``events-dead-letter``."""
        await self.outputs.send(self.dead_letter, key=key, value=record)

    async def changelogs_acknowledged(self, producer: Any) -> None:
        """Wait until the broker has acknowledged every table write made so far.

        faust's producer flush hands buffered records to the Kafka client but is no barrier (it
        can return with records still buffered: ``stream/durable.py``), so after it the tables'
        own records are waited for one by one. Raises ``ChangelogNotAcknowledged``.
        """
        await producer.flush()
        await wait_acknowledged((self.profiles, self.consent))

    async def writes_acknowledged(self, producer: Any) -> None:
        """Wait until the broker has acknowledged every record ingest has produced so far.

        That is every table write (:meth:`changelogs_acknowledged`) and every record sent on
        behalf of an input message (re-routed events, dead letters): the write-behind flush
        acknowledges input messages only after this returns. Raises ``ChangelogNotAcknowledged``.
        """
        await producer.flush()
        await wait_acknowledged((self.profiles, self.consent, self.outputs))

    def read_consent(self, customer_id: str) -> ConsentState:
        """The customer's consent; unknown = everything off."""
        raw = self.consent.get(customer_id.encode())
        return ConsentState.from_dict(orjson.loads(raw) if raw else None)

    def write_consent(self, customer_id: str, state: ConsentState) -> None:
        """Store consent (a changelog message is produced)."""
        self.consent[customer_id.encode()] = orjson.dumps(state.to_dict())

    def read_profile(self, customer_id: str) -> Profile | None:
        """The customer's profile, or ``None`` if none is stored."""
        raw = self.profiles.get(customer_id.encode())
        return Profile.from_bytes(raw) if raw else None

    def write_profile(self, customer_id: str, profile: Profile) -> None:
        """Store a profile in its compact stored form (a changelog message is produced)."""
        self.profiles[customer_id.encode()] = profile.to_bytes()

    def write_profile_bytes(self, customer_id: str, partition: int, value: bytes) -> None:
        """Store an encoded profile whose partition the caller knows (the write-behind flush).

        The same changelog message and local write as ``profiles[key] = value``, without what
        faust's ``Table.__setitem__`` adds per key: the partitioner run twice (murmur2 in Python),
        table sensors, and window TTL bookkeeping (these tables have no windows). ``partition``
        must be the key's own: Kafka's default partitioner on the UTF-8 id, as everywhere.
        """
        key = customer_id.encode()
        self.profiles.send_changelog(partition, key, value)
        store = self.profiles.data
        set_in_partition = getattr(store, "set_in_partition", None)
        if set_in_partition is not None:
            set_in_partition(key, value, partition)
        else:
            store[key] = value

    def stage_profiles(self, kafka_producer: Any, items: list[tuple[str, int, bytes]],
                       open_batches: dict[int, Any]) -> list[tuple[int, Any]]:
        """Store encoded profiles locally and append their changelog records to record batches.

        ``items`` are ``(customer_id, partition, value)``. The local write is the one of
        :meth:`write_profile_bytes` (one RocksDB write batch per partition for the chunk); the
        changelog records are appended to aiokafka record batches (``open_batches``: partition ->
        batch being filled, kept by the caller across calls) instead of going one by one through
        faust's producer buffer (a FutureMessage, a buffer turn and a ``producer.send`` per
        record: ~0.4-0.5 ms each here). The records are
        the ones ``send_changelog`` produces for these tables: key and value are the raw bytes
        (``key_type``/``value_type`` ``bytes`` mean the raw codec), no headers, the producer's
        timestamp, the given partition of the table's changelog topic. Returns the batches that
        filled up, closed, as ``(partition, batch)`` for :meth:`send_profile_batches`;
        :meth:`close_batches` gives the rest.
        """
        keys = [customer_id.encode() for customer_id, _, _ in items]
        self._store_profiles(keys, items)
        full: list[tuple[int, Any]] = []
        for key, (_, partition, value) in zip(keys, items, strict=True):
            filled = append_record(open_batches, partition, key, value, kafka_producer.create_batch)
            if filled is not None:
                full.append((partition, filled))
        return full

    def _store_profiles(self, keys: list[bytes], items: list[tuple[str, int, bytes]]) -> None:
        """The local writes of :meth:`stage_profiles`: one RocksDB write batch per partition."""
        store = self.profiles.data
        set_many = getattr(store, "set_many_in_partitions", None)
        if set_many is not None:
            set_many([(key, value, partition)
                      for key, (_, partition, value) in zip(keys, items, strict=True)])
            return
        for key, (_, _, value) in zip(keys, items, strict=True):  # another store (memory, tests)
            store[key] = value

    close_batches = staticmethod(close_batches)  # the batches still being filled, closed

    async def send_profile_batches(self, kafka_producer: Any,
                                   staged: list[tuple[int, Any]]) -> list[tuple[int, int, Any]]:
        """Hand staged batches to the producer; ``(partition, records, delivery future)`` each."""
        topic = self.profiles.changelog_topic.get_topic_name()
        sent = []
        for partition, batch in staged:
            future = await kafka_producer.send_batch(batch, topic, partition=partition)
            sent.append((partition, batch.record_count(), future))
        return sent

    def profiles_persisted(self, partition: int, last_offset: int) -> None:
        """Record the changelog offset the local store has, as faust's ``_on_changelog_sent`` does.

        RocksDB keeps it per partition; on restart, recovery reads the changelog from there.
        """
        set_persisted = getattr(self.profiles.data, "set_persisted_offset", None)
        if set_persisted is not None:
            set_persisted(TP(self.profiles.changelog_topic.get_topic_name(), partition), last_offset)

    def erase_profile(self, customer_id: str) -> bool:
        """Delete a stored profile (a tombstone goes to the changelog); True if one existed."""
        key = customer_id.encode()
        if self.profiles.get(key) is None:
            return False
        del self.profiles[key]
        return True

    def erase_consent(self, customer_id: str) -> bool:
        """Delete stored consent and choices (a tombstone goes to the changelog)."""
        key = customer_id.encode()
        if self.consent.get(key) is None:
            return False
        del self.consent[key]
        return True


def declare(app: faust.App, settings: Settings) -> Topology:
    """Declare the topics and tables on ``app``."""
    raw: dict[str, Any] = {"key_type": str, "key_serializer": "raw", "value_serializer": "raw"}
    # Tables derive their serializers from the types: bytes means raw, so keys are the UTF-8
    # bytes of the customer id, exactly what an outside producer's string serializer writes.
    table_opts: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "partitions": settings.partitions,
                  "use_partitioner": True}
    return Topology(
        events=app.topic(EVENTS.name, **EVENTS.faust_options(settings.partitions), **raw),
        offers=app.topic(OFFERS.name, **OFFERS.faust_options(settings.partitions), **raw),
        decisions=app.topic(DECISIONS.name, **DECISIONS.faust_options(settings.partitions), **raw),
        dead_letter=app.topic(EVENTS_DEAD_LETTER.name, **EVENTS_DEAD_LETTER.faust_options(settings.partitions),
                              **raw),
        erasures=app.topic(ERASURES.name, **ERASURES.faust_options(settings.partitions), **raw),
        # tables that keep their changelog records until the broker acknowledges them: what
        # ``Runtime.changelogs_acknowledged`` waits for before anything is acknowledged
        profiles=tracked_table(app, PROFILES_TABLE.name, **table_opts),
        consent=tracked_table(app, CONSENT_TABLE.name, **table_opts),
        experiments=app.topic(EXPERIMENTS.name, **EXPERIMENTS.faust_options(settings.partitions), **raw),
    )
