"""The events reader: owned partitions from the group's committed offsets, in order, in batches.

``stream.events_reader.EventsReader`` on the bundled broker, with records produced by
confluent-kafka (its default partitioner is not involved: partitions are named) and offsets
committed by a consumer of the group. Checks where each partition starts, that every record
arrives once and in order, that nothing is applied while faust's flow is stopped, and that a
rebalance (``revoked``/``assigned``) drops what was read under the old assignment and starts the
new one from the committed offsets again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Producer

from stream.embedded.kafka_wire import create_topics
from stream.embedded.process import EmbeddedBroker
from stream.events_reader import EventsReader

pytestmark = pytest.mark.integration

GROUP = "reader-test"


def _produce(bootstrap: str, n: int, partitions: int = 2) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(n):
        producer.produce("events", f"e{i}".encode(), key=b"c", partition=i % partitions)
    assert producer.flush(30) == 0


async def _commit(bootstrap: str, partition: int, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition("events", partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


class _Applied:
    """What the reader handed over, per partition (the worker's apply is ``stream.agents``)."""

    def __init__(self, reader: EventsReader) -> None:
        self.reader = reader
        self.offsets: dict[int, list[int]] = {0: [], 1: []}
        self.values: dict[int, list[bytes]] = {0: [], 1: []}
        self.calls = 0
        self.on_call: Any = None

    async def __call__(self, partition: int, records: list[Any], generation: int, end: int) -> bool:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self)
        if generation != self.reader.generation:
            return False
        self.offsets[partition].extend(r.offset for r in records)
        self.values[partition].extend(r.value for r in records)
        self.reader.position[partition] = end
        return True

    async def until(self, predicate: Any, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, f"timed out; applied {self.offsets}"
            await asyncio.sleep(0.02)


async def _scenario(bootstrap: str) -> None:
    await create_topics(bootstrap, {"events": 2})
    _produce(bootstrap, 40)  # 20 records per partition, offsets 0..19
    await _commit(bootstrap, 0, 5)
    flowing = {"on": False}
    reader = EventsReader(lambda: flowing["on"], bootstrap, "events", GROUP, security={})
    applied = _Applied(reader)
    task = asyncio.create_task(reader.run(applied))
    try:
        reader.assigned([0, 1])
        await asyncio.sleep(0.5)
        assert applied.calls == 0  # faust's flow is stopped (rebalance, recovery): nothing is read
        flowing["on"] = True
        # partition 0 from its committed offset, partition 1 (nothing committed) from its first
        await applied.until(lambda: len(applied.offsets[0]) == 15 and len(applied.offsets[1]) == 20)
        assert applied.offsets[0] == list(range(5, 20)) and applied.offsets[1] == list(range(20))
        assert applied.values[0][0] == b"e10" and applied.values[1][-1] == b"e39"
        assert reader.position == {0: 20, 1: 20} and reader.batches >= 2

        # a rebalance: partition 1 moves away, partition 0 stays; the group committed 12 meanwhile
        reader.revoked()
        await _commit(bootstrap, 0, 12)
        reader.assigned([0])
        applied.offsets = {0: [], 1: []}
        _produce(bootstrap, 4)  # offsets 20, 21 on both partitions
        await applied.until(lambda: applied.offsets[0][-1:] == [21])
        # read again from the committed offset, only the partition still owned
        assert applied.offsets[0] == list(range(12, 22)) and applied.offsets[1] == []

        # a batch read before a rebalance began is not applied: apply sees the old generation
        def rebalance_now(state: _Applied) -> None:
            reader.revoked()
            state.on_call = None

        applied.on_call = rebalance_now
        applied.offsets = {0: [], 1: []}
        _produce(bootstrap, 2)  # offset 22 on both partitions
        await applied.until(lambda: reader.dropped >= 1)
        assert applied.offsets == {0: [], 1: []}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_reader_starts_at_committed_offsets_and_drops_batches_of_an_old_assignment(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        asyncio.run(_scenario(broker.bootstrap))
