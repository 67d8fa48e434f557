"""A RocksDB table store that also accepts writes made outside a stream event.

faust's RocksDB store files every write under the partition of the event being processed, so a
write from a web view (consent, erasure) fails: there is no event. Views here only ever write keys
of partitions this worker owns, so the right partition is the key's own: Kafka's default
partitioner on the raw key bytes, the same rule the changelog producer (``use_partitioner``) and
every outside producer apply. Registered as the store scheme ``offerstream-rocksdb://``.
"""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from faust import stores
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


stores.STORES.aliases.setdefault("offerstream-rocksdb", f"{__name__}:RoutedRocksDBStore")
