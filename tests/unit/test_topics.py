"""The topics a worker declares are exactly those of ``stream/topics.py``, with their settings."""

from __future__ import annotations

import dataclasses

import faust
import pytest

from stream.settings import Settings
from stream.topics import (
    ALL_TABLES,
    ALL_TOPICS,
    CONSENT_TABLE,
    DECISIONS,
    ERASURES,
    EVENTS,
    EVENTS_DEAD_LETTER,
    OFFERS,
    PROFILES_TABLE,
    Partitioning,
    TableSpec,
    TopicSpec,
)
from stream.topology import Topology, declare

PARTITIONS = 6


@pytest.fixture(scope="module")
def declared() -> tuple[faust.App, Topology]:
    app = faust.App("test-topics", broker="kafka://127.0.0.1:1", store="memory://")
    return app, declare(app, Settings(partitions=PARTITIONS))


def test_every_declared_topic_has_the_settings_of_its_spec(declared: tuple[faust.App, Topology]) -> None:
    _, topology = declared
    declared_topics = (topology.events, topology.offers, topology.decisions, topology.dead_letter, topology.erasures,
                       topology.experiments)
    topics = {t.get_topic_name(): t for t in declared_topics}
    assert set(topics) == {spec.name for spec in ALL_TOPICS}
    for spec in ALL_TOPICS:
        topic = topics[spec.name]
        assert topic.partitions == spec.partitions(PARTITIONS), spec
        assert bool(topic.compacting) is spec.compacted, spec
        retention = None if spec.retention_ms is None else spec.retention_ms / 1000.0
        assert topic.retention == retention, spec
        tombstones = None if spec.tombstones_ms is None else {"delete.retention.ms": spec.tombstones_ms}
        assert (topic.config or None) == tombstones, spec


def test_state_is_compacted_and_facts_expire() -> None:
    """Issue 13: changelogs, offers and erasures compacted; events and decisions kept for a set time;
    tombstones kept long enough for an erasure to reach every consumer."""
    week = 7 * 24 * 3600 * 1000
    for spec in (OFFERS, ERASURES, *ALL_TABLES):
        assert spec.kafka_config()["cleanup.policy"] == "compact" and "retention.ms" not in spec.kafka_config()
    for spec in (OFFERS, *ALL_TABLES):  # the topics with deletes (a removed offer, an erased profile)
        assert int(spec.kafka_config()["delete.retention.ms"]) >= week
    for spec in (EVENTS, DECISIONS, EVENTS_DEAD_LETTER):
        assert "cleanup.policy" not in spec.kafka_config() and int(spec.kafka_config()["retention.ms"]) >= week


def test_tables_and_their_changelogs_are_named_as_faust_names_them(declared: tuple[faust.App, Topology]) -> None:
    app, _ = declared
    assert set(app.tables) == {spec.name for spec in ALL_TABLES}
    for spec in ALL_TABLES:
        table = app.tables[spec.name]
        changelog = table.changelog_topic
        assert changelog.get_topic_name() == spec.changelog_topic("test-topics")
        assert table.partitions == spec.partitions(PARTITIONS)
        assert bool(changelog.compacting) is spec.compacted is True


def test_names_are_unique_and_specs_are_frozen() -> None:
    names = [spec.name for spec in ALL_TOPICS] + [spec.changelog_topic("app") for spec in ALL_TABLES]
    assert len(names) == len(set(names))
    with pytest.raises(dataclasses.FrozenInstanceError):
        EVENTS.name = "other"  # type: ignore[misc]
    assert isinstance(PROFILES_TABLE, TableSpec) and CONSENT_TABLE.partitioning is Partitioning.CONFIGURED


@pytest.mark.parametrize(("spec", "config", "options"), [
    (EVENTS, {"retention.ms": "604800000"}, {"partitions": 3, "retention": 604800.0}),
    (OFFERS, {"cleanup.policy": "compact", "delete.retention.ms": "604800000"},
     {"partitions": 1, "compacting": True, "config": {"delete.retention.ms": 604800000}}),
    (TopicSpec("t", Partitioning.ONE, compacted=True, retention_ms=60_000),
     {"cleanup.policy": "compact", "retention.ms": "60000"},
     {"partitions": 1, "compacting": True, "retention": 60.0}),
])
def test_settings_become_kafka_config_and_faust_options(spec: TopicSpec, config: dict[str, str],
                                                        options: dict[str, object]) -> None:
    assert spec.kafka_config() == config
    assert spec.faust_options(3) == options
