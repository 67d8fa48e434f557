"""An input message is acknowledged only after every record produced on its behalf is acknowledged.

Issue 18: events from a librdkafka producer (CRC32 partitioner) mostly land on a partition that
does not own their customer; the agent re-routes them with the customer id as key. The flush used
to acknowledge such a message (and faust then committed its offset) without waiting for the
re-routed record, and it skipped its wait altogether when no profile was dirty, so a SIGKILL could
lose an acknowledged event, or a consent change. These tests hold the rule at the flush itself:
the broker's answer is a future that the test resolves, as faust resolves a ``FutureMessage``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from models.events import parse_event
from stream.durable import ChangelogNotAcknowledged, TrackedSends, wait_acknowledged
from stream.ingest_state import LiveState
from tests.unit.test_flush_batches import Event, FakeTable, partition_of


class FakeTopic:
    """A topic whose sends stay unanswered until the test answers them, as a broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, bytes, asyncio.Future]] = []

    async def send(self, *, key: Any, value: bytes) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, future))
        return future


class Topo(SimpleNamespace):
    async def reroute(self, event: Any) -> None:
        await self.outputs.send(self.events, key=event.customer_id, value=b"{}")

    async def send_dead_letter(self, key: bytes | None, record: bytes) -> None:
        await self.outputs.send(self.dead_letter, key=key, value=record)


def _topology() -> Topo:
    return Topo(events=FakeTopic(), dead_letter=FakeTopic(), profiles=FakeTable(), consent=FakeTable(),
                outputs=TrackedSends("ingest outputs"))


def _state(topo: Topo) -> LiveState:
    return LiveState(topo, lambda: wait_acknowledged([topo.outputs], timeout=5), partition_of=partition_of)


EVENT = parse_event({"event_id": "e1", "type": "page_view", "customer_id": "c1", "ts": 1_700_000_000_000})


async def _spin(task: asyncio.Task, turns: int = 50) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
    assert not task.done()


@pytest.mark.parametrize("send", ["reroute", "dead_letter"])
def test_a_message_is_acked_only_after_what_it_sent_is_acknowledged(send: str) -> None:
    topo = _topology()
    state = _state(topo)
    message = Event()

    async def run() -> None:
        if send == "reroute":
            await topo.reroute(EVENT)  # the message's only effect: no profile is dirty
        else:
            await topo.send_dead_letter(b"c1", b'{"reason": "bad"}')
        state.defer_ack(message)
        task = asyncio.create_task(state.flush())
        await _spin(task)
        assert not message.acked  # the record is still only in the producer's hands
        topic = topo.events if send == "reroute" else topo.dead_letter
        topic.sent[0][2].set_result(SimpleNamespace(offset=3))
        await task

    asyncio.run(run())
    assert message.acked


def test_a_refused_reroute_acknowledges_nothing_and_keeps_the_message() -> None:
    topo = _topology()
    state = _state(topo)
    message = Event()

    async def run() -> None:
        await topo.reroute(EVENT)
        state.defer_ack(message)
        task = asyncio.create_task(state.flush())
        await _spin(task)
        topo.events.sent[0][2].set_exception(RuntimeError("NOT_ENOUGH_REPLICAS"))
        with pytest.raises(ChangelogNotAcknowledged, match="ingest outputs"):
            await task
        with pytest.raises(ChangelogNotAcknowledged):  # and every later flush fails: restart
            await state.flush()

    asyncio.run(run())
    assert not message.acked


def test_a_message_that_only_wrote_consent_waits_for_the_acknowledgement() -> None:
    """No dirty profile, yet the flush must still wait before it acknowledges."""
    waited: list[bool] = []
    release = asyncio.Event

    async def run() -> None:
        gate = release()

        async def acknowledged() -> None:
            waited.append(True)
            await gate.wait()

        state = LiveState(_topology(), acknowledged, partition_of=partition_of)
        message = Event()
        state.defer_ack(message)
        task = asyncio.create_task(state.flush())
        await _spin(task)
        assert waited and not message.acked
        gate.set()
        await task
        assert message.acked

    asyncio.run(run())
