"""Filling aiokafka record batches per partition: shared by the profile flush and the audit log.

Both hand whole batches to the producer (``create_batch`` / ``send_batch``) instead of one
``producer.send`` per record. A record is appended to its partition's open batch; when that batch
is full it is closed and handed back, and a new one starts with the record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["append_record", "close_batches"]


def append_record(open_batches: dict[int, Any], partition: int, key: bytes, value: bytes,
                  create_batch: Callable[[], Any]) -> Any | None:
    """Append a record (no headers, the producer's timestamp) to ``open_batches[partition]``.

    Returns the batch that filled up, closed, when the record had to start a new one; else None.
    """
    batch = open_batches.get(partition)
    if batch is None:
        batch = open_batches[partition] = create_batch()
    if batch.append(key=key, value=value, timestamp=None) is not None:
        return None
    batch.close()
    fresh = open_batches[partition] = create_batch()
    fresh.append(key=key, value=value, timestamp=None)  # a first record always fits
    return batch


def close_batches(open_batches: dict[int, Any]) -> list[tuple[int, Any]]:
    """Close the batches still being filled, as ``(partition, batch)``, and forget them."""
    staged = []
    for partition, batch in open_batches.items():
        batch.close()
        staged.append((partition, batch))
    open_batches.clear()
    return staged
