"""The batched decision audit log: every record is sent once, in order, none dropped."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from stream.audit import AuditLog, one_by_one
from stream.topics import DECISIONS_TOPIC


class Producer:
    """Records what was handed to it; can be told to fail a number of sends."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.fail = fail

    async def send(self, key: bytes, value: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker gone")
        self.sent.append((key, value))


def test_records_are_batched_within_the_delay_and_all_sent_in_order() -> None:
    async def main() -> Producer:
        producer = Producer()
        log = AuditLog(one_by_one(producer.send), delay_s=0.01, max_batch=1000)
        for i in range(50):
            log.add(f"h{i % 3}", {"decision_id": f"d{i}"})
        assert producer.sent == [] and log.pending == 50  # nothing before the delay
        await asyncio.sleep(0.05)
        assert log.pending == 0 and log.batches == 1
        return producer

    producer = asyncio.run(main())
    assert [orjson.loads(v)["decision_id"] for _, v in producer.sent] == [f"d{i}" for i in range(50)]
    assert [k for k, _ in producer.sent[:3]] == [b"h0", b"h1", b"h2"]


def test_a_full_batch_goes_at_once_and_flush_empties_the_queue() -> None:
    async def main() -> tuple[Producer, AuditLog]:
        producer = Producer()
        log = AuditLog(one_by_one(producer.send), delay_s=60.0, max_batch=10)
        for i in range(25):
            log.add("h", {"i": i})
        await asyncio.sleep(0)  # the full batches start without waiting for the delay
        await asyncio.sleep(0)
        assert len(producer.sent) >= 10
        await log.flush()  # what shutdown does
        return producer, log

    producer, log = asyncio.run(main())
    assert [orjson.loads(v)["i"] for _, v in producer.sent] == list(range(25)) and log.pending == 0


def test_a_failed_send_keeps_the_records_and_retries() -> None:
    async def main() -> tuple[Producer, AuditLog]:
        producer = Producer(fail=1)
        log = AuditLog(one_by_one(producer.send), delay_s=0.001)
        for i in range(5):
            log.add("h", {"i": i})
        await asyncio.sleep(0.5)
        return producer, log

    producer, log = asyncio.run(main())
    assert log.errors == 1 and log.pending == 0
    assert [orjson.loads(v)["i"] for _, v in producer.sent] == list(range(5))


def test_a_record_is_serialized_when_added() -> None:
    async def main() -> Producer:
        producer = Producer()
        log = AuditLog(one_by_one(producer.send), delay_s=0.001)
        record = {"offers": [1]}
        log.add("h", record)
        record["offers"].append(2)  # a later change must not reach the audit log
        await asyncio.sleep(0.02)
        return producer

    assert orjson.loads(asyncio.run(main()).sent[0][1]) == {"offers": [1]}


@pytest.mark.parametrize("n", [1, 300])
def test_sent_counts_every_record(n: int) -> None:
    async def main() -> AuditLog:
        log = AuditLog(one_by_one(Producer().send), delay_s=0.001, max_batch=64)
        for i in range(n):
            log.add("h", {"i": i})
        await asyncio.sleep(0.05)
        return log

    log = asyncio.run(main())
    assert log.sent == n and log.pending == 0


# ---- record batches per partition (what the worker uses) ----------------------------------------
class Batch:
    """aiokafka's BatchBuilder as far as the sender uses it: full after ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.records, self.closed = capacity, [], False

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        assert timestamp is None  # the producer's clock, as producer.send without a timestamp
        if self.closed or (self.records and len(self.records) >= self.capacity):
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class KafkaProducer:
    """An aiokafka producer's batch interface; delivery futures resolved by the test."""

    def __init__(self, partitions: int = 4, capacity: int = 1000,
                 fail_send_at: int | None = None) -> None:
        self.partitions, self.capacity, self.fail_send_at = partitions, capacity, fail_send_at
        self.sent: list[tuple[str, int, Batch, asyncio.Future[None]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> Batch:
        return Batch(self.capacity)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        assert batch.closed
        if self.fail_send_at is not None and len(self.sent) == self.fail_send_at:
            self.fail_send_at = None
            raise ConnectionError("broker gone")
        future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, future))
        return future

    def on_topic(self) -> list[tuple[int, bytes, bytes]]:
        return [(p, k, v) for _, p, b, f in self.sent if f.done() and not f.exception()
                for k, v in b.records]


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"hash{i % 37}".encode(), orjson.dumps({"decision_id": f"d{i}"})) for i in range(n)]


def test_batches_go_to_the_partition_producer_send_would_choose_in_order() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from stream.audit import RecordBatchSender

    producer = KafkaProducer(capacity=7)  # small batches: several per partition

    async def main() -> None:
        sender = RecordBatchSender(lambda: producer, DECISIONS_TOPIC)
        await sender(records(200), lambda lost: pytest.fail("nothing was lost"))
        for _, _, _, future in producer.sent:
            future.set_result(None)

    asyncio.run(main())
    assert {t for t, *_ in producer.sent} == {DECISIONS_TOPIC}
    assert all(len(b.records) <= 7 for *_, b, _ in producer.sent)
    partitioner = DefaultPartitioner()
    got = producer.on_topic()
    assert sorted((k, v) for _, k, v in got) == sorted(records(200))  # each exactly once
    for partition, key, _ in got:
        assert partition == partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
    for p in range(4):  # a partition's records keep the order they were queued in
        values = [v for q, _, v in got if q == p]
        expected = [v for k, v in records(200) if partitioner(k, [0, 1, 2, 3], [0, 1, 2, 3]) == p]
        assert values == expected


def test_a_batch_the_broker_fails_is_queued_again_and_sent() -> None:
    from stream.audit import RecordBatchSender

    producer = KafkaProducer()

    async def main() -> AuditLog:
        log = AuditLog(RecordBatchSender(lambda: producer, DECISIONS_TOPIC), delay_s=0.001)
        for key, value in records(40):
            log.add(key.decode(), orjson.loads(value))
        await asyncio.sleep(0.02)
        first = list(producer.sent)
        assert len(first) == 4 and log.pending == 0
        first[0][3].set_exception(ConnectionError("not acknowledged"))
        for _, _, _, future in first[1:]:
            future.set_result(None)
        await asyncio.sleep(0.4)  # the retry delay
        for _, _, _, future in producer.sent[4:]:
            future.set_result(None)
        return log

    log = asyncio.run(main())
    assert log.errors == 1 and log.pending == 0 and len(producer.sent) == 5
    assert sorted((k, v) for _, k, v in producer.on_topic()) == sorted(records(40))


def test_a_send_that_fails_half_way_requeues_only_what_was_not_handed_over() -> None:
    from stream.audit import RecordBatchSender

    producer = KafkaProducer(fail_send_at=2)

    async def main() -> AuditLog:
        log = AuditLog(RecordBatchSender(lambda: producer, DECISIONS_TOPIC), delay_s=0.001)
        for key, value in records(40):
            log.add(key.decode(), orjson.loads(value))
        await asyncio.sleep(0.5)
        for _, _, _, future in producer.sent:
            future.set_result(None)
        return log

    log = asyncio.run(main())
    assert log.errors == 1 and log.pending == 0 and log.sent == 40
    # none twice
    assert sorted((k, v) for _, k, v in producer.on_topic()) == sorted(records(40))
