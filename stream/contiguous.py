"""Reads that never skip an offset, for the bundled broker.

Measured on the bundled broker (Tansu 0.6, memory storage; issue 18): while two producers write the
same partition, a consumer reading at the end of the partition is sometimes answered with a later
record batch before an earlier one is readable. The consumer's position then moves past the
earlier batch and it never reads it, although the broker acknowledged it and a later read from the
start returns it. In one run of two producers sending 10,000 records each to one partition at
2,000/s, a tail consumer never saw 5 of the 20,000 (offsets 15,493-15,497, one whole batch):
``tests/integration/test_contiguous_reads.py`` runs that scenario.

On ``events`` that lost acknowledged events whenever one partition had two writers: a shop's
producer with librdkafka's CRC32 partitioner and a worker re-routing an event to its owner's
partition, or two shop producers. faust made the loss final: it takes an offset jump for a gap of
compacted records and commits past it.

Apache Kafka makes a record readable only when everything before it is, and it numbers records
without holes except where transaction markers or compaction leave them. On the bundled broker
neither exists (it cannot run transactions and never compacts), so a hole there always means
records that are not readable *yet*. :func:`read_contiguously` makes every aiokafka consumer of
the process stop a fetch's records at the first hole, so the consumer's position stays on the
hole and the next fetch asks for it again. A hole still there after :data:`GAP_WAIT_S` is logged
as an error and passed over, so a broker that really has holes cannot stall a worker for good.
It is for the bundled broker only: on Apache Kafka the holes are real and reading them again
would only wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import aiokafka.consumer.fetcher as _fetcher

__all__ = ["ContiguousPartitionRecords", "read_contiguously", "GAP_WAIT_S", "holes"]

log = logging.getLogger("offerstream.contiguous")

#: How long a hole may stay unreadable before it is passed over (logged as an error).
GAP_WAIT_S = 10.0

#: Holes seen in this process: ``seen`` (each read again), ``passed_over`` (never filled).
holes = {"seen": 0, "passed_over": 0}
_waiting: dict[Any, tuple[int, float]] = {}  # partition -> (offset of its hole, first seen)


class ContiguousPartitionRecords(_fetcher.PartitionRecords):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's records of one fetched partition, cut at the first offset hole.

    aiokafka moves the consumer's position to ``next_fetch_offset`` as it hands records out; here
    it stays at the first offset of a hole, so the next fetch starts there.
    """

    def _unpack_records(self) -> Iterator[Any]:
        records = self._records
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise _fetcher.Errors.CorruptRecordException(f"Invalid CRC - {self._tp}")
            if batch.is_control_batch:  # none on the bundled broker; as aiokafka does
                self.next_fetch_offset = batch.next_offset
                continue
            if batch.base_offset > self.next_fetch_offset and not _pass_over(
                    self._tp, self.next_fetch_offset, batch.base_offset):
                return  # the hole is read again by the next fetch
            _waiting.pop(self._tp, None)
            for record in batch:
                if record.offset < self.next_fetch_offset:
                    continue  # the part of a batch before the fetch offset
                consumer_record = self._consumer_record(self._tp, record)
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
            self.next_fetch_offset = batch.next_offset


def _pass_over(tp: Any, hole: int, found: int, clock: Any = time.monotonic) -> bool:
    """True once the hole at ``hole`` has waited :data:`GAP_WAIT_S`; it is then let through."""
    now = clock()
    waiting = _waiting.get(tp)
    if waiting is None or waiting[0] != hole:
        _waiting[tp] = (hole, now)
        holes["seen"] += 1
        log.info("%s: offset %d returned where %d was expected; reading from %d again", tp, found, hole, hole)
        return False
    if now - waiting[1] < GAP_WAIT_S:
        return False
    holes["passed_over"] += 1
    del _waiting[tp]
    log.error("offsets %d-%d of %s never became readable in %.0f s; passing over them",
              hole, found - 1, tp, GAP_WAIT_S)
    return True


def read_contiguously() -> None:
    """Make every aiokafka consumer of this process read without skipping offsets (idempotent).

    For the bundled broker only (see the module docstring). aiokafka builds each fetched
    partition's records with the class named ``PartitionRecords`` in its fetcher module; this
    names :class:`ContiguousPartitionRecords` there.
    """
    _fetcher.PartitionRecords = ContiguousPartitionRecords
