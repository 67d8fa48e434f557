"""A RocksDB table store that also accepts writes made outside a stream event.

faust's RocksDB store files every write under the partition of the event being processed, so a
write from a web view (consent, erasure) fails: there is no event. Views here only ever write keys
of partitions this worker owns, so the right partition is the key's own: Kafka's default
partitioner on the raw key bytes, the same rule the changelog producer (``use_partitioner``) and
every outside producer apply. Registered as the store scheme ``offerstream-rocksdb://``.

The write-behind flush stores a chunk of profiles at a time with :meth:`set_many_in_partitions`:
one RocksDB ``WriteBatch`` per partition instead of a ``put`` per key (the same keys and values,
each batch applied atomically, the same write options as ``put``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust import stores
from faust.stores import rocksdb as faust_rocksdb
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import current_event

__all__ = ["RoutedRocksDBStore", "STORE_URL"]

STORE_URL = "offerstream-rocksdb://"
_partitioner = DefaultPartitioner()


class RoutedRocksDBStore(RocksDBStore):
    """RocksDB store whose writes without a current event go to the key's partition."""

    def _set(self, key: bytes, value: bytes | None) -> None:
        if current_event() is not None:
            super()._set(key, value)
            return
        partitions = list(range(self.table.partitions or self.app.conf.topic_partitions))
        partition = int(_partitioner(key, partitions, partitions))
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def set_in_partition(self, key: bytes, value: bytes, partition: int) -> None:
        """Store raw ``value`` under raw ``key`` in ``partition`` (the caller knows the key's)."""
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def set_many_in_partitions(self, items: Iterable[tuple[bytes, bytes, int]]) -> None:
        """Store raw ``(key, value, partition)`` items: one ``WriteBatch`` per partition.

        Within a partition later items win, as with one ``put`` after another.
        """
        batches: dict[int, Any] = {}
        written: list[tuple[bytes, int]] = []
        for key, value, partition in items:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self._new_write_batch()
            batch.put(key, value)
            written.append((key, partition))
        for partition, batch in batches.items():
            self._db_for_partition(partition).write(batch)
        self._key_index.update(written)

    def _new_write_batch(self) -> Any:
        if self.use_rocksdict:
            return faust_rocksdb.rocksdict.WriteBatch(raw_mode=True)
        return faust_rocksdb.rocksdb.WriteBatch()


stores.STORES.aliases.setdefault("offerstream-rocksdb", f"{__name__}:RoutedRocksDBStore")
