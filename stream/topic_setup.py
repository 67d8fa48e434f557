"""Create the topics a worker needs, with their production settings, and check existing ones.

``offerstream topics`` and every worker on Apache Kafka call :func:`ensure_topics` before they
start: a missing topic is created with the replication factor and ``min.insync.replicas`` of the
broker kind (:mod:`stream.brokers`) and the settings of its spec (:mod:`stream.topics`: cleanup
policy, retention, tombstone retention); an existing topic whose partition count or cleanup
policy differs is refused, naming the topic and the setting, because keyed state would be looked
for in the wrong partition or compacted away.
"""

from __future__ import annotations

from typing import Any

from stream.brokers import BrokerProfile
from stream.embedded.kafka_wire import create_topics, describe_topics
from stream.settings import Settings
from stream.topics import ALL_TABLES, ALL_TOPICS

__all__ = ["TopicMismatch", "ensure_topics", "wanted_topics"]


class TopicMismatch(RuntimeError):
    """An existing topic has another partition count or cleanup policy than the worker needs."""


def wanted_topics(settings: Settings, profile: BrokerProfile) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic of this installation: name -> (partitions, topic configuration)."""
    out: dict[str, tuple[int, dict[str, str]]] = {}
    specs: list[tuple[str, Any]] = [(spec.name, spec) for spec in ALL_TOPICS]
    specs += [(table.changelog_topic(settings.app_id), table) for table in ALL_TABLES]
    for name, spec in specs:
        config = spec.kafka_config()
        if profile.replication > 1:
            config["min.insync.replicas"] = str(profile.min_insync)
        out[name] = (spec.partitions(settings.partitions), config)
    return out


async def ensure_topics(settings: Settings, profile: BrokerProfile, *, create: bool = True) -> dict[str, str]:
    """Create what is missing (unless ``create`` is false) and check what exists.

    Returns
    -------
    dict of str to str
        Per topic: ``created``, ``ok`` (existed as needed) or, with ``create=False``, ``missing``.

    Raises
    ------
    TopicMismatch
        A topic exists with another partition count or cleanup policy (the message names both).
    """
    if settings.broker is None:
        raise ValueError("ensure_topics needs a broker URL")
    wanted = wanted_topics(settings, profile)
    created: dict[str, bool] = {}
    if create:
        try:
            created = await create_topics(settings.broker, {n: p for n, (p, _) in wanted.items()},
                                          replication_factor=profile.replication,
                                          configs={n: c for n, (_, c) in wanted.items()})
        except RuntimeError as exc:
            raise TopicMismatch(str(exc)) from None
    existing = await describe_topics(settings.broker, list(wanted))
    report = {}
    for name, (partitions, config) in wanted.items():
        if name not in existing:
            report[name] = "missing"
            continue
        have_partitions, have_policy = existing[name]
        if have_partitions != partitions:
            raise TopicMismatch(f"topic {name!r} has {have_partitions} partitions, offerstream needs {partitions}")
        want_policy = config.get("cleanup.policy", "delete")
        if have_policy != want_policy:
            raise TopicMismatch(f"topic {name!r} has cleanup.policy={have_policy}, offerstream needs {want_policy}")
        report[name] = "created" if created.get(name) else "ok"
    return report
