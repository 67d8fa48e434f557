"""The write-behind flush writing changelog records as whole aiokafka record batches.

A fake producer (real aiokafka ``BatchBuilder`` objects, no broker) and a fake table stand in for
faust: the records must be exactly what ``Table.send_changelog`` would send (raw key and value, the
key's partition), the local store must get every profile, RocksDB's persisted offset must be the
last record's, messages are acknowledged only after the batches are delivered, and a customer
erased while the flush runs ends with a tombstone in the changelog.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from models.profile import SCHEMA_VERSION, Profile
from stream.ingest_state import STAGE_CHUNK, LiveState
from stream.topics import PROFILES_TABLE
from stream.topology import Topology

TOPIC = PROFILES_TABLE.changelog_topic("app")


class FakeProducer:
    def __init__(self, batch_size: int = 256 * 1024) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[int, list[tuple[bytes, bytes]]]] = []  # partition, records
        self.next_offset: dict[int, int] = {}
        self.futures: list[asyncio.Future] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        assert topic == TOPIC
        assert batch._closed  # nothing else may join it
        records = [(r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
        base = self.next_offset.get(partition, 0)
        self.next_offset[partition] = base + len(records)
        self.sent.append((partition, records))
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        future.base_offset = base  # resolved by the test, as the broker would
        return future

    def deliver(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(SimpleNamespace(offset=future.base_offset))


class FakeChangelog:
    def get_topic_name(self) -> str:
        return TOPIC


class FakeStore(dict):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[int, int] = {}

    def set_in_partition(self, key: bytes, value: bytes, partition: int) -> None:
        self[key] = (partition, value)

    def set_many_in_partitions(self, items: list[tuple[bytes, bytes, int]]) -> None:
        for key, value, partition in items:
            self.set_in_partition(key, value, partition)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        assert tp.topic == TOPIC
        self.persisted[tp.partition] = offset


class FakeTable:
    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog_topic = FakeChangelog()
        self.tombstones: list[tuple[int, bytes]] = []

    def send_changelog(self, partition: int, key: bytes, value: Any, **_: Any) -> None:
        assert value is None
        self.tombstones.append((partition, key))

    def get(self, key: bytes) -> Any:
        return None


def partition_of(customer_id: str) -> int:
    return int(customer_id[1:]) % 4


class Event:
    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def make_state(producer: FakeProducer) -> tuple[LiveState, Topology]:
    topo = Topology(events=None, offers=None, decisions=None, dead_letter=None, erasures=None,
                    profiles=FakeTable(), consent=FakeTable())
    topo.erase_profile = lambda cid: topo.profiles.tombstones.append((partition_of(cid), cid.encode())) or True
    state = LiveState(topo, partition_of=partition_of, kafka_producer=lambda: producer)
    return state, topo


def fill(state: LiveState, n: int) -> Event:
    event = Event()
    state.begin(7)
    for i in range(n):
        profile = Profile(n_events=i)
        state.write_profile(f"c{i}", profile)
    state.defer_ack(event)
    return event


def test_batches_hold_the_send_changelog_records_and_ack_after_delivery() -> None:
    producer = FakeProducer(batch_size=512)  # small: several batches per partition
    state, topo = make_state(producer)
    event = fill(state, 300)

    async def run() -> int:
        task = asyncio.create_task(state.flush())
        for _ in range(200):
            await asyncio.sleep(0)
        assert not task.done() and not event.acked  # not before the broker has the batches
        producer.deliver()
        return await task

    assert asyncio.run(run()) == 300
    assert event.acked
    records = {}
    for partition, batch in producer.sent:
        for key, value in batch:
            assert partition == partition_of(key.decode())
            records[key] = value
    assert len(records) == 300 and len(producer.sent) > 4
    for i in range(300):
        key = f"c{i}".encode()
        assert topo.profiles.data[key] == (partition_of(f"c{i}"), records[key])
        assert records[key][0] == SCHEMA_VERSION == 4  # the binary stored form
        stored, offset = Profile.from_stored(records[key])
        assert offset == 7
        assert stored == state.read_profile(f"c{i}")
        assert stored.to_bytes(offset) == records[key]
    # the persisted offset is the last record's, per partition
    assert topo.profiles.data.persisted == {p: n - 1 for p, n in producer.next_offset.items()}


def test_failed_delivery_acks_nothing_and_keeps_customers_dirty() -> None:
    producer = FakeProducer()
    state, _ = make_state(producer)
    event = fill(state, 10)

    async def run() -> None:
        task = asyncio.create_task(state.flush())
        for _ in range(50):
            await asyncio.sleep(0)
        producer.futures[0].set_exception(RuntimeError("broker said no"))
        producer.deliver()
        try:
            await task
        except RuntimeError:
            return
        raise AssertionError("flush did not fail")

    asyncio.run(run())
    assert not event.acked and state.dirty == 10


def test_customer_erased_during_flush_ends_with_a_tombstone() -> None:
    producer = FakeProducer()
    state, topo = make_state(producer)
    fill(state, STAGE_CHUNK * 3)
    chosen: dict[str, str] = {}

    async def run() -> None:
        task = asyncio.create_task(state.flush())
        await asyncio.sleep(0)  # the first chunk is staged (stored), not yet handed to the producer
        staged = sorted(k.decode() for k in topo.profiles.data)
        assert len(staged) == STAGE_CHUNK and not producer.sent
        chosen["staged"] = staged[0]
        chosen["later"] = sorted(set(state._flushing) - set(staged))[0]
        assert state.erase_profile(chosen["staged"]) and state.erase_profile(chosen["later"])
        for _ in range(50):
            await asyncio.sleep(0)
        producer.deliver()
        await task

    asyncio.run(run())
    sent_keys = [key for _, batch in producer.sent for key, _ in batch]
    assert chosen["later"].encode() not in sent_keys  # erased before its chunk: never staged
    # staged before the erasure: its record went out behind the erasure's tombstone, so the
    # flush sends another one after it
    staged = chosen["staged"]
    assert staged.encode() in sent_keys
    assert topo.profiles.tombstones.count((partition_of(staged), staged.encode())) == 2
    # (one never staged may get a second, harmless tombstone too)
    assert (partition_of(chosen["later"]), chosen["later"].encode()) in topo.profiles.tombstones
