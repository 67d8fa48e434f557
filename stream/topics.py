"""Every Kafka topic offerstream uses, with its settings, as data.

One :class:`TopicSpec` per topic the worker declares, one :class:`TableSpec` per table (whose
changelog topic faust names and declares). Everything that names a topic (the topology, the
catalogue, the restore, the producer, tests and benchmarks) reads the name here.

=======================  ==========  ===========================  ====================================
topic                    partitions  kept                         holds
=======================  ==========  ===========================  ====================================
``events``               configured  7 days                       contract events, keyed by customer id
``events-dead-letter``   1           14 days                      events that broke the contract, with why
``decisions``            configured  30 days                      the audit record of every score answer
``offers``               1           compacted, tombstones 7 days  the catalogue: offer id -> offer JSON
``erasures``             1           compacted                    the erasure ledger: customer hash -> time
``experiments``          1           compacted, tombstones 7 days  experiments: experiment id -> JSON
``<app>-profiles-...``   configured  compacted, tombstones 7 days  changelog of the ``profiles`` table
``<app>-consent-...``    configured  compacted, tombstones 7 days  changelog of the ``consent`` table
=======================  ==========  ===========================  ====================================

"Configured" is the worker's partition count (``OFFERSTREAM_PARTITIONS``). ``events`` and the
table changelogs are co-partitioned: keyed by the customer id's UTF-8 bytes, so one worker owns a
customer's events, profile and consent.

Why these (README, "Running on your Kafka"): state topics are compacted, so they keep the latest
value of every key for ever and a worker can rebuild from them at any time; a delete (an erased
profile, a removed offer) is a tombstone, kept :data:`TOMBSTONES_KEPT_MS` so that a worker or
standby that was away up to that long still sees it (past that, the erasure ledger -- compacted,
never deleted -- still blocks the customer's old data on every worker). Streams of facts are
deleted by age: ``events`` 7 days (a stopped worker catches up within that; retraining reads the
archive, not this topic), dead letters 14 days (time for someone to look), ``decisions`` 30 days
(the audit trail a privacy officer asks for, and no longer: it names customers). The worker
checks only partitions and cleanup policy, so a shop may change the times with its own tools.

Examples
--------
>>> EVENTS.name, EVENTS.partitions(8), OFFERS.partitions(8)
('events', 8, 1)
>>> PROFILES_TABLE.changelog_topic("offerstream")
'offerstream-profiles-changelog'
>>> EVENTS.kafka_config()
{'retention.ms': '604800000'}
>>> PROFILES_TABLE.kafka_config()
{'cleanup.policy': 'compact', 'delete.retention.ms': '604800000'}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ALL_TABLES",
    "ALL_TOPICS",
    "CONSENT_TABLE",
    "DECISIONS",
    "DECISIONS_TOPIC",
    "DEAD_LETTER_TOPIC",
    "ERASURES",
    "ERASURES_TOPIC",
    "EVENTS",
    "EVENTS_DEAD_LETTER",
    "EVENTS_TOPIC",
    "EXPERIMENTS",
    "EXPERIMENTS_TOPIC",
    "OFFERS",
    "OFFERS_TOPIC",
    "PROFILES_TABLE",
    "TOMBSTONES_KEPT_MS",
    "Partitioning",
    "TableSpec",
    "TopicSpec",
]


_DAY_MS: Final = 24 * 3600 * 1000
#: How long a compacted topic keeps a tombstone (``delete.retention.ms``).
TOMBSTONES_KEPT_MS: Final = 7 * _DAY_MS

class Partitioning(enum.Enum):
    """How many partitions a topic has."""

    #: The worker's configured count (``settings.partitions``).
    CONFIGURED = "configured"
    #: One partition: every worker reads all of it, in order.
    ONE = "one"


@dataclass(frozen=True)
class TopicSpec:
    """One topic and the settings it is declared with.

    Parameters
    ----------
    name : str
        The topic's name.
    partitioning : Partitioning
        The partitions rule (see :meth:`partitions`).
    compacted : bool, optional
        ``cleanup.policy=compact`` if true; otherwise the broker's default policy (delete).
    retention_ms : int or None, optional
        ``retention.ms``; ``None`` keeps the broker's default.
    tombstones_ms : int or None, optional
        ``delete.retention.ms`` of a compacted topic; ``None`` keeps the broker's default.
    """

    name: str
    partitioning: Partitioning
    compacted: bool = False
    retention_ms: int | None = None
    tombstones_ms: int | None = None

    def partitions(self, configured: int) -> int:
        """The partition count, given the worker's configured count (``settings.partitions``)."""
        return configured if self.partitioning is Partitioning.CONFIGURED else 1

    def kafka_config(self) -> dict[str, str]:
        """Topic configuration for a Kafka admin client (only what differs from the defaults)."""
        config: dict[str, str] = {}
        if self.compacted:
            config["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        if self.tombstones_ms is not None:
            config["delete.retention.ms"] = str(self.tombstones_ms)
        return config

    def faust_options(self, configured: int) -> dict[str, Any]:
        """Keyword arguments of ``app.topic`` for these settings (only what is set)."""
        options: dict[str, Any] = {"partitions": self.partitions(configured)}
        if self.compacted:
            options["compacting"] = True
        if self.retention_ms is not None:
            options["retention"] = self.retention_ms / 1000.0
        if self.tombstones_ms is not None:
            options["config"] = {"delete.retention.ms": self.tombstones_ms}
        return options


@dataclass(frozen=True)
class TableSpec(TopicSpec):
    """A faust table; :attr:`name` is the table's, its changelog topic is named by faust.

    faust declares the changelog itself, compacted, with the table's partition count.
    """

    partitioning: Partitioning = Partitioning.CONFIGURED
    compacted: bool = True
    tombstones_ms: int | None = TOMBSTONES_KEPT_MS

    def changelog_topic(self, app_id: str) -> str:
        """The changelog topic's name for an app id, as faust names it."""
        return f"{app_id}-{self.name}-changelog"


#: Contract events in (any producer, the HTTP API, the worker re-routing to the owner).
EVENTS: Final = TopicSpec("events", Partitioning.CONFIGURED, retention_ms=7 * _DAY_MS)
#: Events that broke the contract, with the reason and where they came from.
EVENTS_DEAD_LETTER: Final = TopicSpec("events-dead-letter", Partitioning.ONE, retention_ms=14 * _DAY_MS)
#: The audit record of every decision (score answer).
DECISIONS: Final = TopicSpec("decisions", Partitioning.CONFIGURED, retention_ms=30 * _DAY_MS)
#: The offer catalogue (key offer id, empty value deletes); every worker reads all of it.
OFFERS: Final = TopicSpec("offers", Partitioning.ONE, compacted=True, tombstones_ms=TOMBSTONES_KEPT_MS)
#: The erasure ledger (key customer hash, value never empty); every worker reads all of it.
ERASURES: Final = TopicSpec("erasures", Partitioning.ONE, compacted=True)
#: Experiments (key experiment id, empty value deletes); every worker reads all of it.
EXPERIMENTS: Final = TopicSpec("experiments", Partitioning.ONE, compacted=True, tombstones_ms=TOMBSTONES_KEPT_MS)
#: Customer profiles, the ingest agent's state.
PROFILES_TABLE: Final = TableSpec("profiles")
#: Customer consent and choices.
CONSENT_TABLE: Final = TableSpec("consent")

ALL_TOPICS: Final = (EVENTS, EVENTS_DEAD_LETTER, DECISIONS, OFFERS, ERASURES, EXPERIMENTS)
ALL_TABLES: Final = (PROFILES_TABLE, CONSENT_TABLE)

# The names alone, for code that only needs to name a topic.
EVENTS_TOPIC: Final = EVENTS.name
DEAD_LETTER_TOPIC: Final = EVENTS_DEAD_LETTER.name
DECISIONS_TOPIC: Final = DECISIONS.name
OFFERS_TOPIC: Final = OFFERS.name
ERASURES_TOPIC: Final = ERASURES.name
EXPERIMENTS_TOPIC: Final = EXPERIMENTS.name
