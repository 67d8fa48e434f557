"""Broker kinds: what a worker does on Apache Kafka and on the bundled broker, and detection."""

from __future__ import annotations

import pytest

from stream.brokers import bootstrap_servers, detect_kind, profile_for
from stream.settings import Settings
from stream.topic_setup import wanted_topics


def test_each_kind_has_its_settings() -> None:
    kafka, tansu = profile_for("kafka"), profile_for("tansu")
    assert (kafka.replication, kafka.min_insync, kafka.session_timeout_s) == (3, 2, 10.0)
    assert kafka.session_timeout_s >= 6.0  # Kafka's default group.min.session.timeout.ms
    assert not kafka.tansu_workarounds and tansu.tansu_workarounds
    assert (tansu.replication, tansu.session_timeout_s) == (1, 2.0)
    assert profile_for("kafka", replication=1).min_insync == 1  # never above the replication
    with pytest.raises(ValueError, match="OFFERSTREAM_BROKER_KIND"):
        profile_for("redpanda-ish")


def test_every_bootstrap_address_is_read() -> None:
    assert bootstrap_servers("kafka://a:1, kafka://b:2,c:3") == [("a", 1), ("b", 2), ("c", 3)]
    with pytest.raises(ValueError, match="not kafka://host:port"):
        bootstrap_servers("kafka://nohost")


def test_detection_by_the_apis_the_broker_answers() -> None:
    answers = {("k", 1): {0: (0, 13), 23: (2, 4), 37: (0, 3)}, ("t", 1): {0: (0, 11), 3: (0, 12)}}

    def api_versions(host: str, port: int, timeout: float) -> dict[int, tuple[int, int]]:
        if (host, port) not in answers:
            raise OSError("connection refused")
        return answers[(host, port)]

    assert detect_kind("kafka://k:1", ask=api_versions) == "kafka"
    assert detect_kind("kafka://t:1", ask=api_versions) == "tansu"
    assert detect_kind("kafka://down:9,kafka://k:1", ask=api_versions) == "kafka"  # the next one answers
    with pytest.raises(ConnectionError, match="down:9: connection refused"):
        detect_kind("kafka://down:9", ask=api_versions)


def test_wanted_topics_are_replicated_on_kafka_only() -> None:
    settings = Settings(broker="kafka://k:1", app_id="shop", partitions=6)
    on_kafka = wanted_topics(settings, profile_for("kafka"))
    assert on_kafka["events"] == (6, {"retention.ms": "604800000", "min.insync.replicas": "2"})
    assert on_kafka["offers"][0] == 1
    assert on_kafka["shop-profiles-changelog"] == (6, {"cleanup.policy": "compact", "delete.retention.ms": "604800000",
                                                       "min.insync.replicas": "2"})
    on_tansu = wanted_topics(settings, profile_for("tansu"))
    assert all("min.insync.replicas" not in config for _, config in on_tansu.values())
