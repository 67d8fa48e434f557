"""The one event rule: how an event changes a customer's stored state, online and in replay.

The ingest agent (``stream/agents.py``), the offline replay (``training/replay.py``) and the tests
call :func:`apply_event`; none keeps a copy. State is handed in through the narrow
:class:`CustomerState` interface (read and write consent and choices, read and write the profile,
erase the profile), the way quix-streams hands state to user logic, so the rule never touches
storage: the agent passes its write-behind tables, the replay plain dicts.

The rule, in order:

1. **Erasure wins.** An event stamped at or before its customer's erasure is never applied
   (:func:`erased`), online and offline alike: a replay, a redelivery or a late copy cannot bring
   an erased customer back, while an event after the erasure (a returning customer, with new
   consent) is applied as any other. A plain set of customer ids counts as erasures after every
   event of the log, so it blocks all of them.
2. **Consent** events update the consent state (most restrictive wins, a grant counts only if
   newer than the last revocation: :func:`models.consent.apply_update`); revoking ``profile``
   erases the profile. Each is applied once (the consent's window of recent consent event ids,
   ``ConsentState.seen``): read again, it would raise the epoch again, or repeat an old
   revocation after a newer grant.
3. **Preference** events set the excluded categories and channels.
4. An ``offer_dismiss`` is remembered in the choices whatever the consent (it keeps the offer away).
5. Anything else reaches the profile only while ``profile`` consent covers the event's time
   (:meth:`models.consent.ConsentState.may_profile`), and only once (the profile's window of
   recent event ids).

Examples
--------
>>> from models.events import parse_event
>>> state = DictState()
>>> consent = parse_event({"event_id": "e1", "type": "consent", "customer_id": "c", "ts": 1_700_000_000_000,
...                        "consent": {"flags": {"profile": True}}})
>>> view = parse_event({"event_id": "e2", "type": "page_view", "customer_id": "c", "ts": 1_700_000_001_000})
>>> [apply_event(state, e).value for e in (consent, view, view)]
['consent', 'applied', 'duplicate']
>>> state.read_profile("c").n_events
1
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container
from typing import Protocol, cast

from models.consent import DEFAULT_TCF_BASIS, ConsentState, apply_update, parse_update
from models.events import Event, event_key
from models.profile import Profile

__all__ = ["CustomerState", "Erasures", "Outcome", "apply_event", "erased", "DictState"]


class CustomerState(Protocol):
    """What :func:`apply_event` may do with a customer's stored state."""

    def read_consent(self, customer_id: str) -> ConsentState:
        """The customer's consent and choices (unknown: everything off)."""

    def write_consent(self, customer_id: str, state: ConsentState) -> None:
        """Store the customer's consent and choices."""

    def read_profile(self, customer_id: str) -> Profile | None:
        """The customer's profile, or ``None``."""

    def write_profile(self, customer_id: str, profile: Profile) -> None:
        """Store the customer's profile."""

    def erase_profile(self, customer_id: str) -> bool:
        """Delete the customer's profile; True if there was one."""


class Erasures(Protocol):
    """An erasure ledger: :class:`models.ledger.ErasureLedger` is one."""

    def is_erased(self, customer_id: str, ts_ms: int) -> bool:
        """True if an event of ``customer_id`` at ``ts_ms`` is at or before its erasure."""


class Outcome(enum.Enum):
    """What :func:`apply_event` did with an event."""

    APPLIED = "applied"            #: added to the profile
    CONSENT = "consent"            #: a consent change applied
    PREFERENCE = "preference"      #: stated preferences stored
    DISMISSED = "dismissed"        #: a dismissal remembered, without profile consent
    NOT_PROFILED = "not_profiled"  #: no profile consent at the event's time: nothing stored
    DUPLICATE = "duplicate"        #: the profile already holds this event id
    ERASED = "erased"              #: at or before the customer's erasure: nothing stored

    @property
    def stored(self) -> bool:
        """True if the event changed stored state (and so belongs in the event archive)."""
        return self in _STORED


_STORED = frozenset({Outcome.APPLIED, Outcome.CONSENT, Outcome.PREFERENCE, Outcome.DISMISSED})


def erased(erasures: Erasures | Container[str] | None, event: Event) -> bool:
    """True if ``event`` is at or before its customer's erasure (rule 1 of the module).

    ``erasures`` is a ledger with ``is_erased``, or a plain container of customer ids (erased
    after every event), or ``None`` (nobody).
    """
    if erasures is None:
        return False
    # once per applied event: an attribute look-up, not an isinstance() against an ABC
    is_erased: Callable[[str, int], bool] | None = getattr(erasures, "is_erased", None)
    if is_erased is not None:
        return is_erased(event.customer_id, event.ts)
    return event.customer_id in cast(Container[str], erasures)


def apply_event(state: CustomerState, event: Event,
                erasures: Erasures | Container[str] | None = None, *,
                tcf_basis: str = DEFAULT_TCF_BASIS) -> Outcome:
    """Apply one event to a customer's state by the rule of this module; say what it did.

    A ``consent`` event's TC string is read under ``tcf_basis`` (the installation's setting).

    Raises
    ------
    models.errors.InvalidConsent
        A ``consent`` event whose ``consent`` body is malformed (nothing is changed).
    """
    cid = event.customer_id
    if erased(erasures, event):
        return Outcome.ERASED
    if event.type == "consent":
        key, current = event_key(event.event_id), state.read_consent(cid)
        if key in current.seen:
            return Outcome.DUPLICATE  # read again (at-least-once delivery): already applied
        update = parse_update(event.get("consent"), basis=tcf_basis)
        change = apply_update(current, update, event.ts)
        change.state.remember_event(key)
        state.write_consent(cid, change.state)
        if "profile" in change.revoked:
            state.erase_profile(cid)
        return Outcome.CONSENT
    consent = state.read_consent(cid)
    if event.type == "preference":
        if event.get("exclude_categories") is not None:
            consent.exclude_categories = list(event.get("exclude_categories"))
        if event.get("channels") is not None:
            consent.channels = list(event.get("channels"))
        state.write_consent(cid, consent)
        return Outcome.PREFERENCE
    if event.type == "offer_dismiss":
        consent.add_dismissed(event.get("offer_id"))
        state.write_consent(cid, consent)
    if not consent.may_profile(event.ts):
        return Outcome.DISMISSED if event.type == "offer_dismiss" else Outcome.NOT_PROFILED
    profile = state.read_profile(cid) or Profile()
    if not profile.apply(event):
        return Outcome.DUPLICATE
    state.write_profile(cid, profile)
    return Outcome.APPLIED


class DictState:
    """:class:`CustomerState` over plain dicts (replay, tests); unknown consent from a factory.

    Parameters
    ----------
    default_consent : callable, optional
        The consent of a customer seen for the first time (default: unknown, everything off).
    """

    def __init__(self, default_consent: Callable[[], ConsentState] = ConsentState.unknown) -> None:
        self.consents: dict[str, ConsentState] = {}
        self.profiles: dict[str, Profile] = {}
        self._default_consent = default_consent

    def read_consent(self, customer_id: str) -> ConsentState:
        """The stored consent, or (stored now) the default one."""
        state = self.consents.get(customer_id)
        if state is None:
            state = self.consents[customer_id] = self._default_consent()
        return state

    def write_consent(self, customer_id: str, state: ConsentState) -> None:
        """Store consent."""
        self.consents[customer_id] = state

    def read_profile(self, customer_id: str) -> Profile | None:
        """The stored profile, or ``None``."""
        return self.profiles.get(customer_id)

    def write_profile(self, customer_id: str, profile: Profile) -> None:
        """Store a profile."""
        self.profiles[customer_id] = profile

    def erase_profile(self, customer_id: str) -> bool:
        """Delete a profile; True if there was one."""
        return self.profiles.pop(customer_id, None) is not None
