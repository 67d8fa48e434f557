"""Write-behind customer state for the ingest agent: live objects in memory, flushed to the tables.

Why: every table write is one changelog message (~0.1-0.25 ms through faust), so writing a profile
per event caps a worker at ~2,400 events/s (shared BROKER-NOTES). Here the agent applies events to
live :class:`~models.profile.Profile` objects and a flush writes each dirty customer's profile once
per interval. Reads (the ingest path itself, ``POST /v1/score``, ``GET /v1/customers``) see the
live objects, so nothing waits for a flush to become visible.

Guarantees kept:

- **At least once.** The agent does not acknowledge messages itself; :meth:`LiveState.flush`
  writes the dirty profiles, waits until the broker has acknowledged every record produced on
  behalf of the messages it acknowledges (profile and consent changelogs, events re-routed to
  their owner's partition, dead letters) and the event archive is fsync'd, and only then
  acknowledges those messages, so faust never commits an offset whose effect could still be lost.
  The rule holds whatever a message did: the wait is for *every* record sent before the flush
  took its messages, not only for the profiles it writes.
- **No double counting.** Each stored profile carries the offset of the last message applied to it
  (``Profile.to_bytes(offset)``, schema v4; ``OFFSET_FIELD`` in the older JSON form); a message
  at or below it is skipped on replay, however long the replay (the profile's own window of
  recent event ids stays as a second line of defence).
- **Consent is exact.** Consent is written to its table at once (rare, and effective on return);
  the cache is dropped whenever anything else writes it (:meth:`LiveState.consent_changed`), and an
  erased profile is dropped from memory (:meth:`LiveState.erase_profile`) so a flush can never
  bring it back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from models.consent import ConsentState
from models.profile import STORED_OFFSET_FIELD, Profile

__all__ = ["LiveState", "OFFSET_FIELD", "FLUSH_INTERVAL_S", "FLUSH_CHUNK"]

log = logging.getLogger("offerstream.ingest")
# The offset of the last events-topic message applied to a stored profile is stored with it
# (``Profile.to_bytes(offset)``; in the v3 JSON form still read, this field).
OFFSET_FIELD = STORED_OFFSET_FIELD
# Every dirty customer is one changelog message per flush: at 25k events/s over 10k customers a
# 0.5 s interval rewrites ~14k profiles/s, 1 s ~9k/s (the flush and its changelog sends were about
# a quarter of the worker's samples in py-spy).
FLUSH_INTERVAL_S = 1.0
FLUSH_CHUNK = 128  # profiles written per turn of the event loop (keeps score/ingest latency low)
# With record batches (no faust send per profile) a chunk is encoding and a RocksDB put only,
# ~0.1 ms per profile on the shared box: 32 keeps each turn of the loop near 3 ms.
STAGE_CHUNK = 32
MAX_CACHED = 200_000  # clean cached customers beyond this are dropped after a flush


class LiveState:
    """The owner's live profiles and consent, with the table interface of ``Topology``.

    ``read_consent``/``write_consent``/``read_profile``/``write_profile``/``erase_profile``
    behave like the table methods of :class:`stream.topology.Topology`, so the one update function
    (:func:`models.customer_state.apply_event`) runs on either. ``offset`` is the events-topic offset of the
    message being applied; ``write_profile`` records it for the customer.
    """

    def __init__(self, topology: Any, acknowledged: Any = None, archive_sync: Any = None, *,
                 partition_of: Any = None, write_behind: bool = True,
                 kafka_producer: Any = None) -> None:
        self.topology = topology
        self._partition_of = partition_of  # customer id -> its partition (Runtime.events_partition)
        self.write_behind = write_behind  # False: the naive baseline, every call goes to the tables
        # awaitable: returns once the broker has acknowledged every record produced so far (table
        # writes, re-routed events, dead letters); raises if one was refused
        self._acknowledged = acknowledged
        self._archive_sync = archive_sync  # fsyncs the event archive (awaitable)
        # () -> the aiokafka producer: the flush then writes each chunk's changelog records as whole
        # record batches (Topology.stage_profiles) instead of one faust send per profile.
        self._kafka_producer = kafka_producer
        self._erased_in_flush: set[str] = set()  # erased while the flush in progress runs
        self._profiles: dict[str, Profile | None] = {}
        self._offsets: dict[str, int] = {}
        self._consent: dict[str, ConsentState] = {}
        self._dirty: set[str] = set()
        self._pending: list[Any] = []  # stream events to acknowledge after the next flush
        self.lock = asyncio.Lock()  # held while a message is applied or a flush writes a chunk
        self._flush_lock = asyncio.Lock()
        self._flushing: set[str] = set()  # customers of the flush in progress (not yet durable)
        self.offset = -1
        self._touched: set[str] = set()  # customers written while applying the current message
        self.flushes = 0
        self.profiles_written = 0

    # ---- the table interface ---------------------------------------------------------------
    def read_consent(self, customer_id: str) -> ConsentState:
        """The customer's consent (cached; unknown = everything off)."""
        if not self.write_behind:
            return self.topology.read_consent(customer_id)
        state = self._consent.get(customer_id)
        if state is None:
            state = self._consent[customer_id] = self.topology.read_consent(customer_id)
        return state

    def write_consent(self, customer_id: str, state: ConsentState) -> None:
        """Store consent now (not write-behind: consent is effective at once)."""
        self.topology.write_consent(customer_id, state)
        self._consent[customer_id] = state

    def read_profile(self, customer_id: str) -> Profile | None:
        """The live profile, or the stored one (then cached), or ``None``."""
        if not self.write_behind:
            return self.topology.read_profile(customer_id)
        if customer_id in self._profiles:
            return self._profiles[customer_id]
        raw = self.topology.profiles.get(customer_id.encode())
        profile = None
        if raw:
            # stored as schema v4 with the offset; v1-v3 JSON (offset as "_o") still read
            profile, self._offsets[customer_id] = Profile.from_stored(raw)
        self._profiles[customer_id] = profile
        return profile

    def peek_consent(self, customer_id: str) -> ConsentState:
        """Consent for a view: the live copy if the agent holds one, else the table, *not* cached.

        Views run while a worker may still be recovering partitions it was just given; caching
        what they read then would pin a stale copy that the agent later builds on.
        """
        state = self._consent.get(customer_id)
        return state if state is not None else self.topology.read_consent(customer_id)

    def peek_profile(self, customer_id: str) -> Profile | None:
        """Profile for a view: the live copy if the agent holds one, else the table, not cached."""
        if customer_id in self._profiles:
            return self._profiles[customer_id]
        return self.topology.read_profile(customer_id)

    def write_profile(self, customer_id: str, profile: Profile) -> None:
        """Mark the profile dirty; the next flush stores it with the current message offset."""
        if not self.write_behind:
            self.topology.write_profile(customer_id, profile)
            return
        self._profiles[customer_id] = profile
        self._offsets[customer_id] = self.offset
        self._touched.add(customer_id)
        self._dirty.add(customer_id)

    def erase_profile(self, customer_id: str) -> bool:
        """Drop the profile from memory and the table; True if one existed in either."""
        live = self._profiles.pop(customer_id, None) is not None
        self._dirty.discard(customer_id)
        if customer_id in self._flushing:
            # its record may be staged in a batch not yet handed to the producer, i.e. behind
            # the tombstone below in the changelog: the flush sends another tombstone after it
            self._erased_in_flush.add(customer_id)
        return self.topology.erase_profile(customer_id) or live

    # ---- agent and view hooks --------------------------------------------------------------
    def begin(self, offset: int) -> None:
        """Start applying the events-topic message at ``offset``."""
        self.offset = offset
        self._touched = set()

    def already_applied(self, customer_id: str, offset: int) -> bool:
        """True if the stored or live profile already contains the message at ``offset``."""
        if customer_id in self._touched or not self.write_behind:
            return False  # an earlier event of the same envelope, not a replay
        if customer_id not in self._profiles:
            self.read_profile(customer_id)
        return offset <= self._offsets.get(customer_id, -1)

    def consent_changed(self, customer_id: str) -> None:
        """Forget cached consent after someone else wrote the consent table."""
        self._consent.pop(customer_id, None)

    def defer_ack(self, event: Any) -> None:
        """Acknowledge ``event`` after the next durable flush."""
        self._pending.append(event)

    def clear(self) -> None:
        """Forget every cached customer (ownership changed); dirty state is flushed first."""
        keep = self._dirty | self._flushing
        self._profiles = {c: p for c, p in self._profiles.items() if c in keep}
        self._offsets = {c: o for c, o in self._offsets.items() if c in keep}
        self._consent.clear()

    @property
    def dirty(self) -> int:
        """Profile writes not yet durable: dirty customers plus those of the flush in progress.

        O(1) (read after every message): a customer changed again during a flush counts twice.
        """
        return len(self._dirty) + len(self._flushing)

    async def flush(self) -> int:
        """Write dirty profiles, wait until the changelog has them, then acknowledge; return count.

        The profiles are written in chunks of :data:`FLUSH_CHUNK`, each under :attr:`lock` (so a
        chunk never stores half of a message), with the event loop free between chunks: the
        agent and the views go on while a flush of thousands of customers runs. A profile that
        changes again before its chunk is written is simply stored newer (with that message's
        offset); it is dirty again, so the next flush stores it too and acknowledges that
        message. Only the messages applied before this flush began are acknowledged by it.
        """
        async with self._flush_lock:  # one flush at a time (timer, partition revocation)
            async with self.lock:
                dirty, self._dirty = self._dirty, set()
                pending, self._pending = self._pending, []
                self._flushing = dirty
            try:
                await self._write_profiles(list(dirty))
                if (dirty or pending) and self._acknowledged is not None:
                    # Every record the acknowledged messages produced: consent writes, tombstones,
                    # re-routed events and dead letters (faust's buffer). Also when no profile is
                    # dirty: a message may have written only consent, or only re-routed its events.
                    await self._acknowledged()
                if pending and self._archive_sync is not None:
                    await self._archive_sync()  # the archived lines of these messages are on disk
            except BaseException:
                self._dirty |= dirty  # nothing is acknowledged; the next flush tries again
                self._pending[:0] = pending
                raise
            finally:
                self._flushing = set()
                self._erased_in_flush = set()
            for event in pending:
                event.ack()
            if len(self._profiles) > MAX_CACHED:
                async with self.lock:
                    self.clear()
        self.flushes += 1
        self.profiles_written += len(dirty)
        return len(dirty)

    async def _write_profiles(self, order: list[str]) -> None:
        """Write the profiles of a flush, chunk by chunk, and wait until the broker has them all."""
        producer = self._kafka_producer() if self._kafka_producer is not None else None
        sent: list[tuple[int, int, Any]] = []
        batches: dict[int, Any] = {}  # partition -> changelog record batch being filled
        chunk = FLUSH_CHUNK if producer is None else STAGE_CHUNK
        for start in range(0, len(order), chunk):
            if start:
                await asyncio.sleep(0)
            if producer is None:
                async with self.lock:
                    self._write_chunk(order[start:start + chunk])
                continue
            async with self.lock:
                full = self._stage_chunk(producer, order[start:start + chunk], batches)
            if full:
                sent += await self.topology.send_profile_batches(producer, full)
        if batches:
            sent += await self.topology.send_profile_batches(producer, self.topology.close_batches(batches))
        if self._erased_in_flush:
            self._retombstone()
        if sent:
            results = await asyncio.gather(*(future for _, _, future in sent))
            last: dict[int, int] = {}
            for (partition, count, _), metadata in zip(sent, results, strict=True):
                last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
            for partition, offset in last.items():
                self.topology.profiles_persisted(partition, offset)

    def _encode(self, customer_ids: list[str]) -> list[tuple[str, int, bytes]]:
        """``(customer_id, partition, stored bytes)`` for each customer still live (not erased)."""
        partition_of, profiles, offsets = self._partition_of, self._profiles, self._offsets
        items = []
        for customer_id in customer_ids:
            profile = profiles.get(customer_id)
            if profile is None:
                continue  # erased since it was changed
            items.append((customer_id, partition_of(customer_id), profile.to_bytes(offsets.get(customer_id, -1))))
        return items

    def _write_chunk(self, customer_ids: list[str]) -> None:
        write = self.topology.write_profile_bytes
        for customer_id, partition, value in self._encode(customer_ids):
            write(customer_id, partition, value)

    def _stage_chunk(self, producer: Any, customer_ids: list[str], batches: dict[int, Any]) -> list[tuple[int, Any]]:
        """Encode a chunk, store it locally and add it to the changelog batches; the full ones."""
        items = self._encode(customer_ids)
        return self.topology.stage_profiles(producer, items, batches) if items else []

    def _retombstone(self) -> None:
        """Send one more tombstone for customers erased while their record was being staged.

        Their staged record can reach the producer after the erasure's tombstone; this one goes
        through faust's buffer now, behind every batch already handed over, so the changelog
        ends with the erasure. Not for a customer written again since (then dirty, stored anew).
        """
        for customer_id in self._erased_in_flush:
            if customer_id not in self._profiles:
                self.topology.profiles.send_changelog(
                    self._partition_of(customer_id), customer_id.encode(), None, value_serializer="raw")
