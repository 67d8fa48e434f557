"""Every Kafka topic offerstream uses, with its settings, as data.

One :class:`TopicSpec` per topic the worker declares, one :class:`TableSpec` per table (whose
changelog topic faust names and declares). Everything that names a topic (the topology, the
catalogue, the restore, the producer, tests and benchmarks) reads the name here.

=======================  ==========  =========  ==========================================
topic                    partitions  compacted  holds
=======================  ==========  =========  ==========================================
``events``               configured  no         contract events, keyed by customer id
``events-dead-letter``   1           no         events that broke the contract, with why
``decisions``            configured  no         the audit record of every score answer
``offers``               1           no         the catalogue: offer id -> offer JSON
``erasures``             1           no         the erasure ledger: customer hash -> time
``<app>-profiles-...``   configured  yes        changelog of the ``profiles`` table
``<app>-consent-...``    configured  yes        changelog of the ``consent`` table
=======================  ==========  =========  ==========================================

"Configured" is the worker's partition count (``OFFERSTREAM_PARTITIONS``). ``events`` and the
table changelogs are co-partitioned: keyed by the customer id's UTF-8 bytes, so one worker owns a
customer's events, profile and consent. Retention is the broker's default everywhere (no
``retention.ms`` is set).

Examples
--------
>>> EVENTS.name, EVENTS.partitions(8), OFFERS.partitions(8)
('events', 8, 1)
>>> PROFILES_TABLE.changelog_topic("offerstream")
'offerstream-profiles-changelog'
>>> EVENTS_DEAD_LETTER.kafka_config(), PROFILES_TABLE.kafka_config()
({}, {'cleanup.policy': 'compact'})
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
    "OFFERS",
    "OFFERS_TOPIC",
    "PROFILES_TABLE",
    "Partitioning",
    "TableSpec",
    "TopicSpec",
]


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
    """

    name: str
    partitioning: Partitioning
    compacted: bool = False
    retention_ms: int | None = None

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
        return config

    def faust_options(self, configured: int) -> dict[str, Any]:
        """Keyword arguments of ``app.topic`` for these settings (only what is set)."""
        options: dict[str, Any] = {"partitions": self.partitions(configured)}
        if self.compacted:
            options["compacting"] = True
        if self.retention_ms is not None:
            options["retention"] = self.retention_ms / 1000.0
        return options


@dataclass(frozen=True)
class TableSpec(TopicSpec):
    """A faust table; :attr:`name` is the table's, its changelog topic is named by faust.

    faust declares the changelog itself, compacted, with the table's partition count.
    """

    partitioning: Partitioning = Partitioning.CONFIGURED
    compacted: bool = True

    def changelog_topic(self, app_id: str) -> str:
        """The changelog topic's name for an app id, as faust names it."""
        return f"{app_id}-{self.name}-changelog"


#: Contract events in (any producer, the HTTP API, the worker re-routing to the owner).
EVENTS: Final = TopicSpec("events", Partitioning.CONFIGURED)
#: Events that broke the contract, with the reason and where they came from.
EVENTS_DEAD_LETTER: Final = TopicSpec("events-dead-letter", Partitioning.ONE)
#: The audit record of every decision (score answer).
DECISIONS: Final = TopicSpec("decisions", Partitioning.CONFIGURED)
#: The offer catalogue (key offer id, empty value deletes); every worker reads all of it.
OFFERS: Final = TopicSpec("offers", Partitioning.ONE)
#: The erasure ledger (key customer hash); every worker reads all of it.
ERASURES: Final = TopicSpec("erasures", Partitioning.ONE)
#: Customer profiles, the ingest agent's state.
PROFILES_TABLE: Final = TableSpec("profiles")
#: Customer consent and choices.
CONSENT_TABLE: Final = TableSpec("consent")

ALL_TOPICS: Final = (EVENTS, EVENTS_DEAD_LETTER, DECISIONS, OFFERS, ERASURES)
ALL_TABLES: Final = (PROFILES_TABLE, CONSENT_TABLE)

# The names alone, for code that only needs to name a topic.
EVENTS_TOPIC: Final = EVENTS.name
DEAD_LETTER_TOPIC: Final = EVENTS_DEAD_LETTER.name
DECISIONS_TOPIC: Final = DECISIONS.name
OFFERS_TOPIC: Final = OFFERS.name
ERASURES_TOPIC: Final = ERASURES.name
