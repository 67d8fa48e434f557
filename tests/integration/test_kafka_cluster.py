"""A real 3-node Apache Kafka 4.x cluster (tests/kafka_cluster.py) serves the clients this project uses.

The cluster is started here from Maven Central's jars (``scripts/kafka.sh fetch`` caches them
outside the repository); nothing is skipped: if Java, Maven or the jars are missing, the fixture
errors with the reason.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, Producer

from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    workdir: Path = tmp_path_factory.mktemp("kafka")
    kafka = KafkaCluster(workdir, brokers=3, sasl_ssl=True)
    try:
        kafka.start(timeout=90)
    except Exception as exc:
        pytest.fail(f"the Kafka cluster did not start: {exc}", pytrace=False)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in kafka.timings.items())
    print(f"\nKafka cluster of 3 started in {kafka.startup_seconds:.1f}s ({steps}): {kafka.bootstrap}")
    try:
        yield kafka
    finally:
        kafka.stop()
    assert not kafka.live_nodes()


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _consume_confluent(cluster: KafkaCluster, topic: str, count: int, group: str,
                       timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        got: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value()))
        consumer.commit(asynchronous=False)
        return got
    finally:
        consumer.close()


def test_three_brokers_answer_metadata(cluster: KafkaCluster) -> None:
    ports = [cluster.nodes[i].client.port for i in (1, 2, 3)]
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)
    assert cluster.url == ",".join(f"kafka://127.0.0.1:{p}" for p in ports)
    meta = cluster._admin().list_topics(timeout=10)
    assert {b.id: (b.host, b.port) for b in meta.brokers.values()} == {
        i: ("127.0.0.1", cluster.nodes[i].client.port) for i in (1, 2, 3)}
    assert meta.cluster_id == cluster.cluster_id
    assert cluster.startup_seconds is not None and cluster.startup_seconds < 60


def test_aiokafka_rf3_acks_all_and_consumer_group(cluster: KafkaCluster) -> None:
    topic = _topic("aio")
    group = _topic("aio-group")

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=3)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sent = [await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
                    for i in range(20)]
        finally:
            await producer.stop()
        assert {md.partition for md in sent} <= {0, 1, 2, 3}

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got: list[tuple[bytes, bytes]] = []
            deadline = time.monotonic() + 45  # the first group of a fresh cluster creates __consumer_offsets
            while len(got) < 20 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                got += [(m.key, m.value) for msgs in batches.values() for m in msgs]
            # Commit the end of what was read on every partition (one that got no record included).
            ends = await consumer.end_offsets(list(consumer.assignment()))
            await consumer.commit(ends)
            assignment = consumer.assignment()
            committed = {tp.partition: await consumer.committed(tp) for tp in assignment}
        finally:
            await consumer.stop()
        assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(20)), got
        assert {tp.partition for tp in assignment} == {0, 1, 2, 3}
        expected = dict.fromkeys(range(4), 0)
        for md in sent:
            expected[md.partition] = max(expected[md.partition], md.offset + 1)
        assert committed == expected

    asyncio.run(scenario())
    replicas = cluster._admin().list_topics(topic=topic, timeout=10).topics[topic].partitions
    assert all(sorted(part.replicas) == [1, 2, 3] for part in replicas.values())


def test_confluent_kafka_round_trip(cluster: KafkaCluster) -> None:
    topic = _topic("ck")
    cluster.create_topic(topic, partitions=2, replication=3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    errors: list[object] = []
    for i in range(10):
        producer.produce(topic, key=f"c{i}".encode(), value=f"e{i}".encode(),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    del producer  # librdkafka would keep reconnecting (and logging) until the cluster is gone
    assert errors == []
    got = _consume_confluent(cluster, topic, 10, _topic("ck-group"))
    assert sorted(got) == sorted((f"c{i}".encode(), f"e{i}".encode()) for i in range(10))


def test_java_console_producer_keyed_lines(cluster: KafkaCluster) -> None:
    topic = _topic("console")
    cluster.create_topic(topic, partitions=1, replication=3)
    cmd = cluster.console_producer_cmd(topic, key_separator=":")
    assert "org.apache.kafka.tools.ConsoleProducer" in cmd
    done = subprocess.run(cmd, input="cust-1:first\ncust-2:second\ncust-1:third\n",  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    got = _consume_confluent(cluster, topic, 3, _topic("console-group"))
    assert got == [(b"cust-1", b"first"), (b"cust-2", b"second"), (b"cust-1", b"third")]


def test_sigkill_of_a_partition_leader_keeps_acks_all_producing(cluster: KafkaCluster) -> None:
    topic = _topic("failover")
    cluster.create_topic(topic, partitions=2, replication=3)
    leader = cluster.leaders(topic)[0]
    assert leader in (1, 2, 3)
    survivors = [n for n in (1, 2, 3) if n != leader]

    async def scenario() -> tuple[float, list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True,
                                    request_timeout_ms=10000, retry_backoff_ms=200)
        await producer.start()
        try:
            before = [await producer.send_and_wait(topic, f"before-{i}".encode(), partition=0) for i in range(5)]
            killed_at = time.monotonic()
            cluster.kill(leader, signal.SIGKILL)
            first_ok: float | None = None
            after = []
            for i in range(10):
                md = await asyncio.wait_for(producer.send_and_wait(topic, f"after-{i}".encode(), partition=0), 40)
                first_ok = first_ok or time.monotonic() - killed_at
                after.append(md.offset)
        finally:
            await producer.stop()
        assert first_ok is not None
        return first_ok, [md.offset for md in before] + after

    failover_s, offsets = asyncio.run(scenario())
    print(f"\nnode {leader} (leader of {topic}/0) SIGKILLed; the first acks=all write after it took {failover_s:.1f}s")
    assert offsets == list(range(15))
    new_leader = cluster.leaders(topic)[0]
    assert new_leader in survivors
    assert sorted(cluster.isr(topic)[0]) == survivors

    cluster.restart(leader)
    deadline = time.monotonic() + 30
    while len(cluster.isr(topic)[0]) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.isr(topic)[0] == [1, 2, 3]

    async def read_back() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            values: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(values) < 15 and time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                values += [m.value for m in batch.get(tp, [])]
            return values
        finally:
            await consumer.stop()

    values = asyncio.run(read_back())
    assert values == [f"before-{i}".encode() for i in range(5)] + [f"after-{i}".encode() for i in range(10)]


def test_sasl_ssl_listener_with_plain_and_scram(cluster: KafkaCluster) -> None:
    topic = _topic("secure")
    cluster.create_topic(topic, partitions=1, replication=3)
    conf = cluster.client_config("SCRAM-SHA-512")
    assert conf["security.protocol"] == "SASL_SSL"
    assert set(conf["bootstrap.servers"].split(",")).isdisjoint(cluster.bootstrap.split(","))
    producer = Producer({**conf, "acks": "all"})
    producer.produce(topic, key=b"scram", value=b"over-tls")
    assert producer.flush(30) == 0
    del producer

    async def scenario() -> list[bytes]:
        kwargs = {"bootstrap_servers": conf["bootstrap.servers"], "security_protocol": "SASL_SSL",
                  "ssl_context": create_ssl_context(cafile=conf["ssl.ca.location"]), "sasl_mechanism": "PLAIN",
                  "sasl_plain_username": conf["sasl.username"], "sasl_plain_password": conf["sasl.password"]}
        wrong = AIOKafkaProducer(**{**kwargs, "sasl_plain_password": "wrong"}, request_timeout_ms=5000)
        with pytest.raises(KafkaError):
            await wrong.start()
        await wrong.stop()
        aio = AIOKafkaProducer(acks="all", **kwargs)
        await aio.start()
        try:
            await aio.send_and_wait(topic, b"plain-aiokafka", key=b"plain")
        finally:
            await aio.stop()
        consumer = AIOKafkaConsumer(topic, group_id=_topic("secure-group"), auto_offset_reset="earliest",
                                    **{**kwargs, "sasl_mechanism": "SCRAM-SHA-256"})
        await consumer.start()
        try:
            values: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(values) < 2 and time.monotonic() < deadline:
                values += [m.value for msgs in (await consumer.getmany(timeout_ms=1000)).values() for m in msgs]
            return values
        finally:
            await consumer.stop()

    assert asyncio.run(scenario()) == [b"over-tls", b"plain-aiokafka"]
