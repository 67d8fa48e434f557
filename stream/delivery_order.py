"""Every message of a partition reaches the ingest agent, in order: a missing one is read from the log.

Measured in CI (issue 18): after the other fixes, one acknowledged event in ~40 crash runs was
never applied. The guard that came before this one logged why: around the group rebalance that
follows a kill, faust handed the agent offset 1921 of a partition without 1920. faust can drop a
message on its way to the agent in more than one place -- its fetch loop abandons a message whose
hand-over is interrupted by a suspended flow and still advances its read offset; a stream passes
over a message taken while flow control is inactive or from an older generation -- and its commit
accepts one unacknowledged offset right after the committed one (``Consumer._new_offset``'s head
check), so a dropped message followed by an acknowledged one is committed past, for good.

Asking faust to read the partition again did not help: its read offset, moved on by the messages
already in flight, dropped the re-read message as "already read" (9,027 seeks, no progress).

So the agent does not depend on faust for this. :class:`DeliveryOrder` knows, per partition, the
next offset the agent must apply, starting (after every assignment) from the group's committed
offset on the broker. A message below it was applied already and is passed over; a message past it
brings the records in between, read straight from the log (:class:`stream.log_reader.LogReader`),
to be applied first, each acknowledged like any other message. The agent thus applies every
offset from the committed one up, once, in order -- on any broker and from any producer.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = ["DeliveryOrder", "Log"]

log = logging.getLogger("offerstream.ingest")


class Log(Protocol):
    """What the guard reads (implemented by :class:`stream.log_reader.LogReader`)."""

    async def committed(self, topic: str, partition: int) -> int: ...

    async def read(self, topic: str, partition: int, start: int, stop: int) -> list[Any]: ...


class DeliveryOrder:
    """Per partition, the next offset the ingest agent must apply."""

    def __init__(self, source: Log) -> None:
        self._source = source
        self._next: dict[tuple[str, int], int] = {}
        self.passed_over = 0  # messages below the expected offset (applied already)
        self.filled = 0  # records read from the log because faust skipped them

    async def admit(self, topic: str, partition: int, offset: int) -> list[Any] | None:
        """``None``: the message was applied already, pass over it. Else the records (possibly none)
        that must be applied before it, in order; the message is then the expected one.

        Raises what the log read raises (the message is then neither applied nor expected: the
        next message of the partition asks again).
        """
        key = (topic, partition)
        expected = self._next.get(key)
        if expected is None:
            expected = await self._source.committed(topic, partition)
            self._next[key] = expected
        if offset < expected:
            self.passed_over += 1
            return None
        missing: list[Any] = []
        if offset > expected:
            missing = await self._source.read(topic, partition, expected, offset)
            if missing:
                self.filled += len(missing)
                log.warning("events partition %d: offset %d handed over before %d; read %d missing "
                            "record(s) from the log", partition, offset, expected, len(missing))
        self._next[key] = offset + 1
        return missing

    def expected(self, topic: str, partition: int) -> int | None:
        """The next offset expected on the partition (``None``: unknown until its next message)."""
        return self._next.get((topic, partition))

    def forget(self) -> None:
        """Forget every expectation (partitions were assigned: they start again from the committed offsets)."""
        self._next.clear()
