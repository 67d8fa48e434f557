"""Waiting for changelog records until the broker has acknowledged them (``stream.durable``).

The tables are real faust tables of an app that is never started: ``send_changelog`` puts the
record in faust's real producer buffer, and the test resolves the record's ``FutureMessage`` the
way faust does when the broker answers (``set_result`` / ``set_exception``).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.producer import ProducerBuffer

from stream.durable import ChangelogNotAcknowledged, TrackedTable, wait_acknowledged


def _table(name: str = "profiles") -> TrackedTable:
    app = faust.App(f"test-durable-{name}", broker="kafka://127.0.0.1:1", store="memory://")
    return TrackedTable(app=app, name=name, key_type=bytes, value_type=bytes, partitions=4,
                        use_partitioner=True)


def _ack(future: Any) -> None:
    future.set_result(SimpleNamespace(offset=7))


def test_faust_flush_is_not_a_barrier() -> None:
    """Why this module exists: faust's buffer flush returns with messages still buffered."""

    class SlowBuffer(ProducerBuffer):
        async def _send_pending(self, fut: Any) -> None:
            await asyncio.sleep(0.3)  # the Kafka client waiting for room in its accumulator

    async def run() -> tuple[float, int]:
        buffer = SlowBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
        await buffer.start()
        for _ in range(3):
            buffer.put(object())
        start = time.monotonic()
        await buffer.flush()
        left = buffer.size
        while not buffer.pending.empty():
            buffer.pending.get_nowait()  # so that stopping does not flush again
        await buffer.stop()
        return time.monotonic() - start, left

    _, left = asyncio.run(run())
    assert left > 0


def test_wait_returns_only_after_every_record_is_acknowledged() -> None:
    async def run() -> tuple[int, float]:
        table = _table()
        futures = [table.send_changelog(p, f"k{p}".encode(), b"v") for p in range(3)]
        assert len(table.unacknowledged) == 3
        loop = asyncio.get_running_loop()
        for i, future in enumerate(futures):
            loop.call_later(0.05 * (i + 1), _ack, future)
        start = time.monotonic()
        waited = await wait_acknowledged([table])
        elapsed = time.monotonic() - start
        assert all(f.done() for f in futures)
        assert not table.unacknowledged
        return waited, elapsed

    waited, elapsed = asyncio.run(run())
    assert waited == 3
    assert elapsed >= 0.14


def test_nothing_outstanding_returns_at_once() -> None:
    assert asyncio.run(wait_acknowledged([_table()])) == 0


def test_records_sent_during_the_wait_are_left_to_the_next_wait() -> None:
    async def run() -> None:
        table = _table()
        first = table.send_changelog(0, b"a", b"1")
        loop = asyncio.get_running_loop()
        late: list[Any] = []
        loop.call_later(0.02, lambda: late.append(table.send_changelog(1, b"b", b"2")))
        loop.call_later(0.05, _ack, first)
        assert await wait_acknowledged([table]) == 1
        assert len(late) == 1 and not late[0].done()
        with pytest.raises(ChangelogNotAcknowledged, match="not acknowledged within"):
            await wait_acknowledged([table], timeout=0.05)

    asyncio.run(run())


def test_a_refused_record_fails_this_and_every_later_wait() -> None:
    async def run() -> None:
        consent, profiles = _table("consent"), _table("profiles")
        refused = consent.send_changelog(2, b"c", b"x")
        fine = profiles.send_changelog(1, b"p", b"y")
        refused.set_exception(OSError("broker gone"))
        _ack(fine)
        with pytest.raises(ChangelogNotAcknowledged, match="refused.*broker gone"):
            await wait_acknowledged([consent, profiles])
        with pytest.raises(ChangelogNotAcknowledged, match="refused"):
            await wait_acknowledged([consent, profiles])
        assert await wait_acknowledged([profiles]) == 0

    asyncio.run(run())


def test_tracked_table_is_declared_like_app_table() -> None:
    from stream.durable import tracked_table

    app = faust.App("test-durable-declare", broker="kafka://127.0.0.1:1", store="memory://")
    table = tracked_table(app, "consent", key_type=bytes, value_type=bytes, partitions=4,
                          use_partitioner=True)
    assert app.tables["consent"] is table
    assert table.changelog_topic.get_topic_name() == "test-durable-declare-consent-changelog"
    assert table.partitions == 4 and table.use_partitioner
