"""The ingest agent's order guard reads what faust did not hand over from the log (issue 18).

``stream.delivery_order`` with a real :class:`stream.log_reader.LogReader` on the bundled broker:
records produced by confluent-kafka, an offset committed by a consumer group, then the guard is
handed offsets out of order the way faust handed them to the agent in CI (a later offset before
an earlier one, old offsets again after a re-read, a new assignment).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Producer

from stream.delivery_order import DeliveryOrder
from stream.embedded.kafka_wire import create_topics
from stream.embedded.process import EmbeddedBroker
from stream.log_reader import LogReader, ReadTimeout

pytestmark = pytest.mark.integration

GROUP = "order-test"


def _produce(bootstrap: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(n):
        producer.produce("events", f"e{i}".encode(), key=b"c", partition=i % 2)
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


async def _scenario(bootstrap: str) -> None:
    await create_topics(bootstrap, {"events": 2})
    _produce(bootstrap, 40)  # 20 records per partition, offsets 0..19
    await _commit(bootstrap, 0, 5)
    reader = LogReader(bootstrap, GROUP)
    order = DeliveryOrder(reader)
    try:
        # partition 0 starts at the committed offset: 5 is handed over first, nothing is missing
        assert await order.admit("events", 0, 5) == []
        assert await order.admit("events", 0, 6) == []
        # 9 before 7 and 8: those two are read from the log, to be applied first, in order
        missing = await order.admit("events", 0, 9)
        assert [(r.offset, r.value) for r in missing] == [(7, b"e14"), (8, b"e16")]
        assert order.filled == 2 and order.expected("events", 0) == 10
        # faust hands 7 and 8 (and 9) over later after all: applied already, passed over
        assert [await order.admit("events", 0, o) for o in (7, 8, 9)] == [None, None, None]
        assert order.passed_over == 3 and await order.admit("events", 0, 10) == []
        # below the committed offset after an assignment: applied already
        order.forget()
        assert await order.admit("events", 0, 4) is None
        # partition 1 has no committed offset: it starts at the partition's first offset, so a
        # first message at 3 brings 0, 1 and 2 with it
        assert [r.offset for r in await order.admit("events", 1, 3)] == [0, 1, 2]
        # a range past the end of the log does not arrive: the read fails, nothing is assumed
        with pytest.raises(ReadTimeout):
            await reader.read("events", 1, 19, 25, timeout=1.0)
        assert [r.offset for r in await reader.read("events", 1, 18, 20)] == [18, 19]
    finally:
        await reader.stop()


def test_missing_offsets_are_read_from_the_log_and_old_ones_passed_over(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        asyncio.run(_scenario(broker.bootstrap))
