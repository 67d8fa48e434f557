"""Workers on a real 3-broker Apache Kafka 4.x cluster (issue 13, first part).

The cluster is started by the test itself (``tests/kafka_cluster.py``: the jars from Maven Central,
KRaft, three combined broker+controller nodes on loopback). On it:

- ``offerstream topics`` creates every topic with replication 3 and ``min.insync.replicas`` 2,
  compacts the table changelogs, reports a missing topic with exit 1 and refuses a wrong
  partition count with exit 2, naming the topic;
- the worker detects Apache Kafka by itself and runs the stock faust/aiokafka paths (no Tansu
  workaround), with a 10 s group session (Kafka refuses less than 6 s by default);
- two workers share the partitions; a shop's producer (confluent-kafka, default CRC32
  partitioner, one event per message) sends events and every profile counts them exactly; consent
  revocation is effective on return, on either worker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.integration.workers import REPO, WorkerProcess, group_settled, wait_until
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration

ALL = {"profile": True, "personalize": True, "marketing": True, "measurement": True, "training": True}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(tmp_path_factory.mktemp("kafka") / "cluster", brokers=3) as running:
        yield running


def _topics(cluster: KafkaCluster, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "offerstream.cli", "topics", "--broker", cluster.url, "--data-dir", str(tmp), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "OFFERSTREAM_APP_ID": "kw", "OFFERSTREAM_HASH_KEY": "k"})


def test_topics_are_created_replicated_and_checked(cluster: KafkaCluster, tmp_path: Path) -> None:
    missing = _topics(cluster, tmp_path, "--check")
    assert missing.returncode == 1 and "missing  events" in missing.stdout, missing
    created = _topics(cluster, tmp_path)
    assert created.returncode == 0, created.stderr
    assert "created  events" in created.stdout and "created  kw-profiles-changelog" in created.stdout
    checked = _topics(cluster, tmp_path, "--check")
    assert checked.returncode == 0 and "missing" not in checked.stdout, checked

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert all(len(p.replicas) == 3 for p in metadata.topics["events"].partitions.values())
    names = ["events", "events-dead-letter", "decisions", "offers", "erasures", "kw-profiles-changelog",
             "kw-consent-changelog"]
    configs = admin.describe_configs([ConfigResource("topic", name) for name in names])
    got = {resource.name: future.result(timeout=10) for resource, future in configs.items()}
    week = str(7 * 24 * 3600 * 1000)
    assert all(got[name]["min.insync.replicas"].value == "2" for name in names)
    for name in ("events", "events-dead-letter", "decisions"):  # facts: deleted by age
        assert got[name]["cleanup.policy"].value == "delete", name
    assert got["events"]["retention.ms"].value == week
    assert got["decisions"]["retention.ms"].value == str(30 * 24 * 3600 * 1000)
    for name in ("offers", "erasures", "kw-profiles-changelog", "kw-consent-changelog"):  # state: compacted
        assert got[name]["cleanup.policy"].value == "compact", name
    for name in ("offers", "kw-profiles-changelog", "kw-consent-changelog"):  # tombstones reach everyone
        assert got[name]["delete.retention.ms"].value == week, name

    wrong = _topics(cluster, tmp_path, "--check", "--partitions", "8")
    assert wrong.returncode == 2 and "'events' has 4 partitions, offerstream needs 8" in wrong.stderr, wrong


def test_two_workers_count_a_shop_producers_events_exactly(cluster: KafkaCluster, tmp_path: Path) -> None:
    workers = [WorkerProcess(cluster.url, tmp_path / f"w{i}", app_id="kw2") for i in range(2)]
    try:
        for worker in workers:
            worker.start(timeout=120)
        wait_until(lambda: group_settled(workers), timeout=120, interval=0.5, what="two workers on Kafka")
        assert "broker kind kafka (replication 3, min.insync.replicas 2)" in workers[0].log_path.read_text()
        a, b = workers
        customers = [f"kc-{i}" for i in range(50)]
        for c in customers:
            a.client.json("PUT", f"/v1/customers/{c}/consent", {"flags": ALL})
        now = int(time.time() * 1000) - 60_000
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})  # default partitioner
        for i in range(1_000):
            c = customers[i % len(customers)]
            producer.produce("events", (f'{{"event_id": "kev-{i}", "type": "page_view", "customer_id": "{c}", '
                                        f'"ts": {now + i}, "category": "shoes"}}').encode(), key=c.encode())
        assert producer.flush(30) == 0

        def counts() -> list[int]:
            return [(b.client.request("GET", f"/v1/customers/{c}")[1].get("profile") or {}).get("n_events", 0)
                    for c in customers]

        wait_until(lambda: counts() == [20] * len(customers), timeout=60, interval=0.5,
                   what="every profile to count its 20 events")
        answer = b.client.json("POST", "/v1/score", {"customer_id": customers[0], "k": 3})
        assert answer["personalized"] is True
        a.client.json("PUT", f"/v1/customers/{customers[0]}/consent", {"flags": {"personalize": False}})
        assert b.client.json("POST", "/v1/score", {"customer_id": customers[0], "k": 3})["personalized"] is False
    finally:
        for worker in workers:
            worker.stop()


def test_a_transactional_producers_events_count_once_and_offsets_commit_past_its_markers(
        cluster: KafkaCluster, tmp_path: Path) -> None:
    """A shop producing in transactions: committed ones count, aborted ones never do, and the
    group's committed offsets reach the end of each partition (offsets of transaction markers
    hold no record; the events reader acknowledges them too, or the commit would stop there)."""
    worker = WorkerProcess(cluster.url, tmp_path / "w", app_id="ktx")
    try:
        worker.start(timeout=120)
        wait_until(lambda: group_settled([worker]), timeout=120, interval=0.5, what="a worker on Kafka")
        customers = [f"tx-{i}" for i in range(20)]
        for c in customers:
            worker.client.json("PUT", f"/v1/customers/{c}/consent", {"flags": ALL})
        now = int(time.time() * 1000) - 60_000
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "shop-tx"})
        producer.init_transactions(30)
        for txn, commit in enumerate((True, False, True)):  # the second transaction is aborted
            producer.begin_transaction()
            for i in range(200):
                c = customers[i % len(customers)]
                producer.produce("events", (f'{{"event_id": "tx{txn}-{i}", "type": "page_view", "customer_id": '
                                            f'"{c}", "ts": {now + i}, "category": "shoes"}}').encode(), key=c.encode())
            (producer.commit_transaction if commit else producer.abort_transaction)(30)

        def counts() -> list[int]:
            return [(worker.client.request("GET", f"/v1/customers/{c}")[1].get("profile") or {}).get("n_events", 0)
                    for c in customers]

        wait_until(lambda: counts() == [20] * len(customers), timeout=60, interval=0.5,
                   what="every profile to count the 20 events of its two committed transactions")
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "ktx"})
        try:
            partitions = [TopicPartition("events", p) for p in range(4)]

            def behind() -> list[tuple[int, int, int]]:
                committed = consumer.committed(partitions, timeout=10)
                ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
                return [(tp.partition, tp.offset, end) for tp, end in zip(committed, ends, strict=True)
                        if end > 0 and tp.offset != end]

            wait_until(lambda: behind() == [], timeout=60, interval=1.0,
                       what="the group's committed offsets to reach every partition's end")
        finally:
            consumer.close()
        time.sleep(2.0)
        assert counts() == [20] * len(customers)  # and the aborted transaction never shows up
    finally:
        worker.stop()
