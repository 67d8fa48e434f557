"""The embedded broker really works as a Kafka broker for plain Kafka clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from stream.embedded.kafka_wire import create_topics, kafka_metadata
from stream.embedded.host import free_port
from stream.embedded.process import EmbeddedBroker
from stream.embedded.transport import fetch_high_watermarks
from tests.integration.workers import running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """This module tests the bundled broker itself: Tansu only (Kafka's own checks are in test_kafka_cluster)."""
    with running_broker("tansu", tmp_path_factory.mktemp("broker")) as embedded:
        yield embedded


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_broker_answers_metadata_with_its_own_address(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    meta = kafka_metadata("127.0.0.1", broker.port)
    assert meta.cluster_id == broker.cluster_id
    assert [(host, port) for _, host, port in meta.brokers] == [("127.0.0.1", broker.port)]


def test_produce_and_consume_round_trip(broker: EmbeddedBroker) -> None:
    topic = _topic("roundtrip")

    async def scenario() -> None:
        created = await create_topics(broker.bootstrap, {topic: 4})
        assert created == {topic: True}
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b'{"event_id":"e1"}', key=b"cust-1")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, sent.partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=5000), timeout=10)
        finally:
            await consumer.stop()
        records = batch.get(tp, [])
        assert [(r.key, r.value, r.offset) for r in records] == [
            (b"cust-1", b'{"event_id":"e1"}', sent.offset)
        ]

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_create_topics_is_idempotent_and_checks_partitions(broker: EmbeddedBroker) -> None:
    topic = _topic("idem")

    async def scenario() -> None:
        assert await create_topics(broker.bootstrap, {topic: 2}) == {topic: True}
        assert await create_topics(broker.url, {topic: 2}) == {topic: False}
        with pytest.raises(RuntimeError, match="2 partitions, expected 3"):
            await create_topics(broker.bootstrap, {topic: 3})

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_taken_port_is_refused(broker: EmbeddedBroker, tmp_path: Path) -> None:
    other = EmbeddedBroker(port=broker.port, log_path=tmp_path / "other.log")
    with pytest.raises(RuntimeError, match="already in use"):
        other.start(timeout=5)
    assert not other.running


def test_failed_start_names_binary_port_and_output(tmp_path: Path) -> None:
    bogus = tmp_path / "not-tansu"
    bogus.write_text("#!/bin/sh\necho 'boom: cannot listen' >&2\nexit 3\n")
    bogus.chmod(0o755)
    port = free_port()
    failing = EmbeddedBroker(port=port, binary=str(bogus), log_path=tmp_path / "b.log")
    with pytest.raises(RuntimeError) as info:
        failing.start(timeout=5)
    message = str(info.value)
    assert str(bogus) in message
    assert str(port) in message
    assert "boom: cannot listen" in message
    failing.stop()  # idempotent on a broker that never ran


def test_context_manager_stops_the_process(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "ctx.log") as embedded:
        pid = embedded.pid
        assert pid is not None
    assert not embedded.running
    embedded.stop()  # second stop is a no-op
    assert "listening on" in (tmp_path / "ctx.log").read_text()


def test_fetch_high_watermarks_corrects_list_offsets(broker: EmbeddedBroker) -> None:
    """Tansu's ListOffsets(LATEST) undercounts multi-record batches; Fetch's watermark is right."""
    topic = _topic("hw")

    async def scenario() -> None:
        await create_topics(broker.bootstrap, {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await producer.start()
        try:
            pending = [await producer.send(topic, b"v%d" % i, key=b"k") for i in range(10)]
            await asyncio.gather(*pending)  # one batch of 10 records
            await producer.send_and_wait(topic, b"last", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            listed = await consumer.end_offsets([tp])
            fetched = await fetch_high_watermarks(consumer._client, {TP(topic, 0): listed[tp]})
        finally:
            await consumer.stop()
        assert fetched == {TP(topic, 0): 11}
        assert listed[tp] <= 11  # Tansu 0.6 answers 11 here only if batching did not happen

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
