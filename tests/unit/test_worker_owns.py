"""Placement.owns: the owned ``events`` partitions cached per assignment, never stale across one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition
from faust.transport.consumer import ensure_TPset
from faust.types import TP

from stream.metrics import Metrics
from stream.placement import Placement
from stream.topics import EVENTS_TOPIC, PROFILES_TABLE

PARTITIONS = 4


class KafkaConsumer:
    """aiokafka's side: one frozenset per group assignment, replaced (not mutated) on rebalance."""

    def __init__(self) -> None:
        self.current: frozenset[TopicPartition] = frozenset()
        self.calls = 0

    def assign(self, events: set[int]) -> None:
        tps = {TopicPartition(EVENTS_TOPIC, p) for p in events}
        # actives and standbys of a changelog are in the assignment too
        tps |= {TopicPartition(PROFILES_TABLE.changelog_topic("app"), p) for p in range(PARTITIONS)}
        self.current = frozenset(tps)

    def assignment(self) -> frozenset[TopicPartition]:
        self.calls += 1
        return self.current


def runtime(kafka: KafkaConsumer | None) -> Any:
    thread = SimpleNamespace(_consumer=kafka)
    faust_consumer = SimpleNamespace(
        _thread=thread, assignment=lambda: ensure_TPset(kafka.current if kafka else ()))
    app = SimpleNamespace(consumer=faust_consumer)  # only what placement reads of faust's app
    return Placement(app, "http://127.0.0.1:1", PARTITIONS, readiness=None, metrics=Metrics())  # type: ignore[arg-type]


def old_rule(rt: Any, kafka: KafkaConsumer, customer_id: str) -> bool:
    """What ``owns`` computed before the cache: faust's TP set, rebuilt per call."""
    return TP(EVENTS_TOPIC, rt.events_partition(customer_id)) in ensure_TPset(kafka.current)


def test_owns_matches_the_uncached_rule_across_rebalances() -> None:
    kafka = KafkaConsumer()
    rt = runtime(kafka)
    customers = [f"c{i}" for i in range(200)]
    for events in ({0, 2}, set(), {1}, {0, 1, 2, 3}, {3}, {0, 2}):
        kafka.assign(events)  # a rebalance: a new object, read at the very next call
        assert [rt.owns(c) for c in customers] == [old_rule(rt, kafka, c) for c in customers]
        assert rt.owned_partitions() == frozenset(events)


def test_the_set_is_rebuilt_only_when_the_assignment_object_changes() -> None:
    kafka = KafkaConsumer()
    kafka.assign({1, 3})
    rt = runtime(kafka)
    first = rt.owned_partitions()
    assert all(rt.owned_partitions() is first for _ in range(10))
    kafka.assign({1, 3})  # same partitions, new assignment: recomputed, same answer
    again = rt.owned_partitions()
    assert again == first and again is not first


def test_without_a_started_client_faust_s_assignment_is_read_on_every_call() -> None:
    rt = runtime(None)
    assert rt.owned_partitions() == frozenset() and not rt.owns("c1")
