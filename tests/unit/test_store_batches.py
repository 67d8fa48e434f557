"""The flush's local writes: a RocksDB write batch per partition stores what one put each does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from stream.store import STORE_URL, RoutedRocksDBStore
from stream.topology import Topology


def _store(tmp_path: Path, name: str) -> RoutedRocksDBStore:
    app = faust.App(f"store-test-{name}", store=STORE_URL, datadir=str(tmp_path),
                    topic_partitions=4)
    table = app.Table("profiles", key_type=bytes, value_type=bytes, partitions=4,
                      use_partitioner=True)
    store = table.data
    assert isinstance(store, RoutedRocksDBStore)
    return store


def test_write_batches_store_what_puts_store(tmp_path: Path) -> None:
    items = [(f"c{i}".encode(), f"v{i}".encode() * (i % 7 + 1), i % 4) for i in range(200)]
    items += [(b"c3", b"newer", 3), (b"c5", b"newest", 1)]  # later items win, as with puts
    batched, one_by_one = _store(tmp_path / "a", "a"), _store(tmp_path / "b", "b")
    batched.set_many_in_partitions(items)
    for key, value, partition in items:
        one_by_one.set_in_partition(key, value, partition)
    for key, _, partition in items:
        assert batched._get(key) == one_by_one._get(key) is not None
        assert batched._dbs[partition].get(key) == one_by_one._dbs[partition].get(key)
        assert batched._key_index[key] == partition
    assert batched._get(b"c3") == b"newer" and batched._get(b"c5") == b"newest"
    assert sorted(batched._dbs) == [0, 1, 2, 3]


class _RecordingStore(dict):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[bytes, bytes, int]]] = []

    def set_many_in_partitions(self, items: list[tuple[bytes, bytes, int]]) -> None:
        self.calls.append(list(items))


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: Any) -> object:
        self.records.append((key, value))
        return object()


class _Producer:
    def create_batch(self) -> _Batch:
        return _Batch()


def test_stage_profiles_writes_a_chunk_in_one_call() -> None:
    store = _RecordingStore()
    profiles = type("Table", (), {"data": store})()
    topo = Topology(events=None, offers=None, decisions=None, dead_letter=None, erasures=None,
                    profiles=profiles, consent=None)
    items = [(f"c{i}", i % 4, f"value{i}".encode()) for i in range(10)]
    batches: dict[int, Any] = {}
    assert topo.stage_profiles(_Producer(), items, batches) == []
    assert store.calls == [[(f"c{i}".encode(), f"value{i}".encode(), i % 4) for i in range(10)]]
    for partition, batch in batches.items():
        assert batch.records == [(f"c{i}".encode(), f"value{i}".encode())
                                 for i in range(10) if i % 4 == partition]
