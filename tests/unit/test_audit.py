"""The batched decision audit log: every record is sent once, in order, none dropped."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from stream.audit import AuditLog


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
        log = AuditLog(producer.send, delay_s=0.01, max_batch=1000)
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
        log = AuditLog(producer.send, delay_s=60.0, max_batch=10)
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
        log = AuditLog(producer.send, delay_s=0.001)
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
        log = AuditLog(producer.send, delay_s=0.001)
        record = {"offers": [1]}
        log.add("h", record)
        record["offers"].append(2)  # a later change must not reach the audit log
        await asyncio.sleep(0.02)
        return producer

    assert orjson.loads(asyncio.run(main()).sent[0][1]) == {"offers": [1]}


@pytest.mark.parametrize("n", [1, 300])
def test_sent_counts_every_record(n: int) -> None:
    async def main() -> AuditLog:
        log = AuditLog(Producer().send, delay_s=0.001, max_batch=64)
        for i in range(n):
            log.add("h", {"i": i})
        await asyncio.sleep(0.05)
        return log

    log = asyncio.run(main())
    assert log.sent == n and log.pending == 0
