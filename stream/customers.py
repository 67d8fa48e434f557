"""What a worker does for one customer: consent changes, access reports, erasure, event intake.

The HTTP handlers decide status codes and forward requests to the owner; this module does the
work on the owner, through the core (``models``) and the worker's tables. Each operation is
durable when it returns: the broker has acknowledged its changelog records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from models.consent import ConsentState, ConsentUpdate, apply_update
from models.errors import NotFound
from models.events import Event
from models.ledger import ErasureLedger
from models.profile import Profile
from stream.http import ApiError
from stream.ingest_state import LiveState
from stream.local_log import LocalLog
from stream.topics import ERASURES_TOPIC
from stream.topology import Topology

__all__ = ["Customers", "apply_erasure_record"]

log = logging.getLogger("offerstream.customers")


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


class Customers:
    """Consent, access, erasure and event intake for the customers a worker owns.

    Parameters
    ----------
    topology : Topology
        The worker's topics and tables.
    live : LiveState
        The ingest agent's write-behind state: every profile read and erase goes through it.
    ledger : ErasureLedger
        The erasure ledger (also fed by other workers through the ``erasures`` topic).
    local_log : LocalLog
        The event archive (consent calls are archived, erased customers purged).
    producer : faust producer
        Flushed before the changelog acknowledgements are waited for.
    """

    def __init__(self, topology: Topology, live: LiveState, ledger: ErasureLedger, local_log: LocalLog,
                 producer: Any) -> None:
        self.topology, self.live, self.ledger, self.local_log = topology, live, ledger, local_log
        self.producer = producer

    async def change_consent(self, customer_id: str, update: ConsentUpdate) -> dict[str, Any]:
        """Apply a consent call; effective and durable when it returns. The answer's body."""
        now = now_ms()
        if self.ledger.is_erased(customer_id, now):
            raise ApiError(409, "erased", "this customer was erased at this very millisecond; retry")
        change = apply_update(self.topology.read_consent(customer_id), update, now)
        self.topology.write_consent(customer_id, change.state)
        self.live.consent_changed(customer_id)
        self.local_log.append_consent_call(customer_id, change, now)
        # through the live state, so a pending write-behind flush cannot bring the profile back
        erased = self.live.erase_profile(customer_id) if "profile" in change.revoked else False
        await self.topology.changelogs_acknowledged(self.producer)  # effective and durable now
        return {
            "customer_id": customer_id, "consent": change.state.basis(),
            "granted": change.granted, "revoked": change.revoked, "ignored": change.ignored,
            "profile_erased": erased, "tcf_basis": change.tcf_basis,
        }

    def access_report(self, customer_id: str) -> dict[str, Any]:
        """What is stored about a customer and why (an access request). ``NotFound`` if nothing."""
        consent = self.topology.read_consent(customer_id)
        profile = self.live.peek_profile(customer_id)
        stored = consent.epoch > 0 or consent.dismissed or consent.exclude_categories or profile
        if not stored:
            raise NotFound(f"nothing is stored about customer {customer_id!r}")
        return {
            "customer_id": customer_id,
            "consent": consent.basis(),
            "choices": {"exclude_categories": consent.exclude_categories,
                        "channels": consent.channels, "dismissed": consent.dismissed},
            "profile": profile.to_dict() if profile is not None else None,
            "why": _why(consent, profile),
        }

    async def erase(self, customer_id: str) -> dict[str, Any]:
        """Delete everything stored about a customer, everywhere; the receipt.

        Order matters: the ledger entry is durable first, so nothing applied after this call
        (a replay, a late event) can bring the customer back; then the tables and their
        changelogs (tombstones), then the local archive.
        """
        erased_at = now_ms()
        digest = self.ledger.add(customer_id, erased_at)
        sent = await self.topology.erasures.send(key=digest, value=orjson.dumps({"erased_at": erased_at}))
        removed_profile = self.live.erase_profile(customer_id)
        removed_consent = self.topology.erase_consent(customer_id)
        self.live.consent_changed(customer_id)
        await self.topology.changelogs_acknowledged(self.producer)  # the tombstones
        await sent
        removed_events = self.local_log.purge(customer_id)
        return {
            "customer_id": customer_id, "erased_at": erased_at, "ledger_hash": digest,
            "stores": [
                {"store": "profiles", "removed": removed_profile, "changelog_tombstone": removed_profile},
                {"store": "consent", "removed": removed_consent, "changelog_tombstone": removed_consent},
                {"store": "event_archive", "removed_events": removed_events},
                {"store": "erasure_ledger", "added": True, "replicated_to": ERASURES_TOPIC},
            ],
        }

    async def publish_events(self, events: list[Event]) -> None:
        """Produce events to ``events`` keyed by customer id and wait until the broker has them."""
        futures = [await self.topology.events.send(key=e.customer_id, value=orjson.dumps(e.data))
                   for e in events]
        await asyncio.gather(*futures)


def apply_erasure_record(ledger: ErasureLedger, key: bytes | None, value: bytes | None) -> None:
    """Add another worker's erasure (a record of the ``erasures`` topic) to ``ledger``."""
    if key is None or not value:
        return
    try:
        erased_at = int(orjson.loads(value)["erased_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("malformed record on topic %s ignored", ERASURES_TOPIC)
        return
    ledger.add_hash(key.decode(), erased_at)


def _why(consent: ConsentState, profile: Profile | None) -> dict[str, str]:
    """Why each stored item is kept, for an access request."""
    why = {"consent": "your consent choices, kept to honour them and to prove that we did"}
    if consent.dismissed or consent.exclude_categories:
        why["choices"] = "offers you dismissed and categories you excluded, so we never show them"
    if profile is not None:
        why["profile"] = (f"built from your activity because you granted 'profile' consent "
                          f"(source: {consent.sources['profile']}, consent epoch {consent.epoch})")
    return why
