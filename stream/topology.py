"""Topics and tables of a worker, with one key serializer end to end.

Keys everywhere are plain UTF-8 strings written as raw bytes, as Kafka's string serializer writes
them, so an outside producer's default partitioner, the tables' changelogs and request routing all
agree on which partition (and so which worker) owns a customer. Values are raw bytes that the core
encodes and decodes with orjson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
import orjson

from models.consent import ConsentState
from models.profile import Profile
from stream.catalogue import ERASURES_TOPIC, OFFERS_TOPIC
from stream.settings import Settings

__all__ = ["Topology", "declare"]


@dataclass
class Topology:
    """The topics and tables of one worker."""

    events: Any
    offers: Any
    decisions: Any
    dead_letter: Any
    erasures: Any
    profiles: Any
    consent: Any

    def read_consent(self, customer_id: str) -> ConsentState:
        """The customer's consent; unknown = everything off."""
        raw = self.consent.get(customer_id.encode())
        return ConsentState.from_dict(orjson.loads(raw) if raw else None)

    def write_consent(self, customer_id: str, state: ConsentState) -> None:
        """Store consent (a changelog message is produced)."""
        self.consent[customer_id.encode()] = orjson.dumps(state.to_dict())

    def read_profile(self, customer_id: str) -> Profile | None:
        """The customer's profile, or ``None`` if none is stored."""
        raw = self.profiles.get(customer_id.encode())
        return Profile.from_bytes(raw) if raw else None

    def write_profile(self, customer_id: str, profile: Profile) -> None:
        """Store a profile in its compact stored form (a changelog message is produced)."""
        self.profiles[customer_id.encode()] = profile.to_bytes()

    def write_profile_bytes(self, customer_id: str, partition: int, value: bytes) -> None:
        """Store an encoded profile whose partition the caller knows (the write-behind flush).

        The same changelog message and local write as ``profiles[key] = value``, without what
        faust's ``Table.__setitem__`` adds per key: the partitioner run twice (murmur2 in Python),
        table sensors, and window TTL bookkeeping (these tables have no windows). ``partition``
        must be the key's own: Kafka's default partitioner on the UTF-8 id, as everywhere.
        """
        key = customer_id.encode()
        self.profiles.send_changelog(partition, key, value)
        store = self.profiles.data
        set_in_partition = getattr(store, "set_in_partition", None)
        if set_in_partition is not None:
            set_in_partition(key, value, partition)
        else:
            store[key] = value

    def erase_profile(self, customer_id: str) -> bool:
        """Delete a stored profile (a tombstone goes to the changelog); True if one existed."""
        key = customer_id.encode()
        if self.profiles.get(key) is None:
            return False
        del self.profiles[key]
        return True

    def erase_consent(self, customer_id: str) -> bool:
        """Delete stored consent and choices (a tombstone goes to the changelog)."""
        key = customer_id.encode()
        if self.consent.get(key) is None:
            return False
        del self.consent[key]
        return True


def declare(app: faust.App, settings: Settings) -> Topology:
    """Declare the topics and tables on ``app``."""
    raw = {"key_type": str, "key_serializer": "raw", "value_serializer": "raw"}
    # Tables derive their serializers from the types: bytes means raw, so keys are the UTF-8
    # bytes of the customer id, exactly what an outside producer's string serializer writes.
    table_opts = {"key_type": bytes, "value_type": bytes, "partitions": settings.partitions,
                  "use_partitioner": True}
    return Topology(
        events=app.topic("events", partitions=settings.partitions, **raw),
        offers=app.topic(OFFERS_TOPIC, partitions=1, **raw),
        decisions=app.topic("decisions", partitions=settings.partitions, **raw),
        dead_letter=app.topic("events-dead-letter", partitions=1, **raw),
        erasures=app.topic(ERASURES_TOPIC, partitions=1, **raw),
        profiles=app.Table("profiles", **table_opts),
        consent=app.Table("consent", **table_opts),
    )
