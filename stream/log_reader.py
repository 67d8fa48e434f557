"""Read a range of one partition straight from the broker, and a consumer group's committed offset.

The ingest agent's order guard (:mod:`stream.delivery_order`) uses it when faust hands the agent a
message without the ones before it: the missing records are read here, from the log itself, so
they do not depend on faust's fetch buffers, read offsets or flow control (issue 18).

One aiokafka consumer, started on first use and without a group (it never joins or commits); a
second consumer with the group's id answers committed offsets (it never subscribes, so it never
joins the group either). One read at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.embedded.kafka_wire import default_security

__all__ = ["LogReader", "ReadTimeout"]

#: How long a range read may take before it fails (the agent then tries again on its next message).
READ_TIMEOUT_S = 10.0


class ReadTimeout(TimeoutError):
    """The records of a range did not all arrive in time."""


class LogReader:
    """Range reads and committed offsets of ``group`` on the broker at ``bootstrap``."""

    def __init__(self, bootstrap: str, group: str, *, security: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.group, self.security = bootstrap, group, security
        self._reader: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=20,
            **(default_security() if self.security is None else self.security),
        )

    async def _started(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        if self._reader is None:
            reader, offsets = self._consumer(None), self._consumer(self.group)
            await reader.start()
            try:
                await offsets.start()
            except BaseException:
                await reader.stop()
                raise
            self._reader, self._offsets = reader, offsets
        assert self._offsets is not None
        return self._reader, self._offsets

    async def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset of the partition; its first offset if nothing is committed."""
        async with self._lock:
            reader, offsets = await self._started()
            tp = TopicPartition(topic, partition)
            committed = await offsets.committed(tp)
            if committed is not None and committed >= 0:
                return int(committed)
            return int((await reader.beginning_offsets([tp]))[tp])

    async def read(self, topic: str, partition: int, start: int, stop: int,
                   timeout: float = READ_TIMEOUT_S) -> list[Any]:
        """Every record of the partition with ``start <= offset < stop``, in order.

        Offsets without a record (Apache Kafka's transaction markers) are simply absent: the read
        ends at the first record at or past ``stop``, or when the log's end has reached ``stop``.
        Raises :class:`ReadTimeout` if that is not seen within ``timeout`` seconds.
        """
        if stop <= start:
            return []
        async with self._lock:
            reader, _ = await self._started()
            tp = TopicPartition(topic, partition)
            reader.assign([tp])
            reader.seek(tp, start)
            found: list[Any] = []
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReadTimeout(f"{topic}[{partition}]: offsets {start}..{stop - 1} not all read "
                                      f"in {timeout:.0f} s ({len(found)} records)")
                batch = await reader.getmany(tp, timeout_ms=int(min(left, 0.5) * 1000), max_records=1000)
                for record in batch.get(tp, []):
                    if record.offset >= stop:
                        return found
                    found.append(record)  # the seek makes every record at or past ``start``
                if await reader.position(tp) >= stop:
                    return found

    async def stop(self) -> None:
        """Close both consumers (if started)."""
        for consumer in (self._reader, self._offsets):
            if consumer is not None:
                await consumer.stop()
        self._reader = self._offsets = None
