"""Consent policy: flags, signals, merging, and fail-closed semantics.

A customer's consent is six flags (:data:`FLAGS`). Unknown consent is everything off. Signals:

- explicit flags (``{"flags": {"profile": true, ...}}``) grant or revoke;
- an IAB TCF v2.2 or v2.3 TC string (``"tcf"``) grants or revokes the flags it maps to
  (see :mod:`models.tcf`);
- Google Consent Mode v2 (``"gcm"``) and Global Privacy Control (``"gpc"``) only ever restrict.

Within one update the most restrictive signal wins. A grant counts only if it is newer than the
last revocation of that flag, so a late or replayed grant never undoes a revocation. Every applied
update raises the customer's consent ``epoch``.

Google Consent Mode mapping (restrictions only): ``analytics_storage: denied`` -> measurement off;
``ad_personalization: denied`` -> personalize and marketing off; ``ad_user_data: denied`` ->
sharing off. GPC -> sharing off.

Examples
--------
>>> state = ConsentState.unknown()
>>> state.flags["personalize"]
False
>>> change = apply_update(state, parse_update({"flags": {"profile": True, "personalize": True}}), 1000)
>>> change.state.allows_personalization(), change.granted
(True, ['personalize', 'profile'])
>>> apply_update(change.state, parse_update({"gpc": True, "flags": {"sharing": True}}), 2000).state.flags["sharing"]
False
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from models.errors import InvalidConsent
from models.events import EVENT_KEY_CHARS

__all__ = [
    "FLAGS",
    "SCHEMA_VERSION",
    "ConsentUpdate",
    "ConsentState",
    "ConsentChange",
    "parse_update",
    "apply_update",
    "restrict",
    "check_tcf_basis",
    "archived_tcf_basis",
    "DEFAULT_TCF_BASIS",
    "TCF_BASIS_FIELD",
]

FLAGS = ("profile", "personalize", "marketing", "measurement", "training", "sharing")
SCHEMA_VERSION = 1
GCM_VALUES = ("granted", "denied")
GCM_RESTRICTS = {
    "analytics_storage": ("measurement",),
    "ad_personalization": ("personalize", "marketing"),
    "ad_user_data": ("sharing",),
    "ad_storage": (),
}
MAX_DISMISSED = 500
#: Consent events remembered per customer to recognise one read again (see ``ConsentState.seen``).
MAX_SEEN_CONSENT = 16
DEFAULT_TCF_BASIS = "purposes"
#: Field of an archived ``consent`` event with a TC string: the basis the worker read it under.
TCF_BASIS_FIELD = "tcf_basis"


def check_tcf_basis(basis: str) -> str:
    """Return ``basis`` if it is a TCF basis (see :func:`models.tcf.parse_basis`).

    The basis is a setting of the installation (``OFFERSTREAM_TCF_BASIS``); callers hold it and
    pass it to :func:`parse_update` explicitly.

    Raises
    ------
    InvalidConsent
        Field ``"tcf.basis"`` for a value that is not a basis.
    """
    from models import tcf

    tcf.parse_basis(basis)
    return basis


def archived_tcf_basis(event_data: Any, default: str = DEFAULT_TCF_BASIS) -> str:
    """The basis an archived ``consent`` event's TC string was read under (replay reads it again
    under the same one); ``default`` for records that name none (older archives, event files).

    >>> archived_tcf_basis({"type": "consent", "tcf_basis": "publisher"})
    'publisher'
    >>> archived_tcf_basis({"type": "consent"})
    'purposes'
    """
    named = event_data.get(TCF_BASIS_FIELD) if isinstance(event_data, dict) else None
    return check_tcf_basis(named) if isinstance(named, str) else default


@dataclass(frozen=True, slots=True)
class ConsentUpdate:
    """A parsed consent update: per-flag proposals from each signal.

    Attributes
    ----------
    proposals : dict[str, dict[str, bool]]
        ``{source: {flag: value}}`` with source in ``explicit``, ``tcf``, ``gcm``, ``gpc``.
    tc_hash : str or None
        SHA-256 of the TC string, if one was given (the text itself is never kept).
    tcf_basis : str or None
        The TCF basis the TC string was read under (``None`` if the update had no TC string).
    """

    proposals: dict[str, dict[str, bool]]
    tc_hash: str | None = None
    tcf_basis: str | None = None

    def merged(self) -> dict[str, tuple[bool, str]]:
        """Most restrictive value per named flag, with the source that decided it."""
        out: dict[str, tuple[bool, str]] = {}
        for source, flags in self.proposals.items():
            for flag, value in flags.items():
                current = out.get(flag)
                if current is None or (current[0] and not value):
                    out[flag] = (value, source)
        return out


def parse_update(body: Any, *, header_gpc: bool = False, basis: str = DEFAULT_TCF_BASIS) -> ConsentUpdate:
    """Validate a consent body ``{flags?, tcf?, gcm?, gpc?}``.

    A TC string is read under ``basis`` (the installation's ``OFFERSTREAM_TCF_BASIS``, which the
    caller holds; default ``purposes``).

    Raises
    ------
    InvalidConsent
        Naming the field: unknown flags, non-boolean values, a malformed TC string.
    """
    if not isinstance(body, dict):
        raise InvalidConsent("", "consent must be a JSON object {flags?, tcf?, gcm?, gpc?}")
    unknown = set(body) - {"flags", "tcf", "gcm", "gpc"}
    if unknown:
        raise InvalidConsent(sorted(unknown)[0], "unknown consent field; expected flags, tcf, gcm, gpc")
    proposals: dict[str, dict[str, bool]] = {}
    if body.get("flags") is not None:
        proposals["explicit"] = _parse_flags(body["flags"])
    tc_hash = read_under = None
    if body.get("tcf") is not None:
        proposals["tcf"], tc_hash = _parse_tcf(body["tcf"], basis)
        read_under = basis
    if body.get("gcm") is not None:
        proposals["gcm"] = _parse_gcm(body["gcm"])
    gpc = body.get("gpc")
    if gpc is not None and not isinstance(gpc, bool):
        raise InvalidConsent("gpc", "must be a boolean")
    if gpc or header_gpc:
        proposals["gpc"] = {"sharing": False}
    return ConsentUpdate(proposals=proposals, tc_hash=tc_hash, tcf_basis=read_under)


def _parse_flags(flags: Any) -> dict[str, bool]:
    if not isinstance(flags, dict):
        raise InvalidConsent("flags", "must be an object of flag -> boolean")
    out: dict[str, bool] = {}
    for name, value in flags.items():
        if name not in FLAGS:
            raise InvalidConsent(f"flags.{name}", f"unknown flag; known: {', '.join(FLAGS)}")
        if not isinstance(value, bool):
            raise InvalidConsent(f"flags.{name}", "must be true or false")
        out[name] = value
    return out


def _parse_tcf(tc: Any, basis: str) -> tuple[dict[str, bool], str]:
    if not isinstance(tc, str):
        raise InvalidConsent("tcf", "must be a TC string")
    from models import tcf  # local import: the decoder is optional for callers without TCF

    decoded = tcf.decode_tc_string(tc)
    return dict(tcf.flags_for_basis(decoded, basis)), hashlib.sha256(tc.encode()).hexdigest()


def _parse_gcm(gcm: Any) -> dict[str, bool]:
    if not isinstance(gcm, dict):
        raise InvalidConsent("gcm", "must be an object of Consent Mode field -> granted|denied")
    out: dict[str, bool] = {}
    for name, value in gcm.items():
        if name not in GCM_RESTRICTS:
            raise InvalidConsent(f"gcm.{name}", f"unknown Consent Mode field; known: {', '.join(GCM_RESTRICTS)}")
        if value not in GCM_VALUES:
            raise InvalidConsent(f"gcm.{name}", "must be 'granted' or 'denied'")
        if value == "denied":
            out.update({flag: False for flag in GCM_RESTRICTS[name]})
    return out


@dataclass(slots=True)
class ConsentState:
    """A customer's consent and stated choices, as plain data.

    Attributes
    ----------
    flags : dict[str, bool]
        The effective value of each flag (unknown = False).
    epoch : int
        Raised by every applied update; recorded with every decision.
    sources : dict[str, str]
        Which signal set each flag's current value (``default`` until one did).
    revoked_at, granted_at : dict[str, int]
        Epoch ms of the last revocation / grant of each flag.
    tc_hash : str or None
        Hash of the last TC string applied.
    exclude_categories, channels : list[str]
        Stated preferences from a preference centre.
    dismissed : list[str]
        Offers the customer said "not interested" to; never shown again.
    seen : list[str]
        Keys (:func:`models.events.event_key`) of the last :data:`MAX_SEEN_CONSENT` consent events
        applied. Delivery is at least once: a consent event read again (a worker stopped before
        its offsets were committed) is recognised here and changes nothing; applied twice it would
        raise the epoch again, or repeat an old revocation after a newer grant. Kept with the
        consent itself, so the window and the change it records are stored in one write.
    """

    flags: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(FLAGS, False))
    epoch: int = 0
    sources: dict[str, str] = field(default_factory=lambda: dict.fromkeys(FLAGS, "default"))
    revoked_at: dict[str, int] = field(default_factory=dict)
    granted_at: dict[str, int] = field(default_factory=dict)
    tc_hash: str | None = None
    exclude_categories: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    dismissed: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    @classmethod
    def unknown(cls) -> ConsentState:
        """The fail-closed default: every flag off."""
        return cls()

    def allows_personalization(self) -> bool:
        """Personalized ranking needs both a profile and permission to use it."""
        return self.flags["personalize"] and self.flags["profile"]

    def may_profile(self, event_ts: int) -> bool:
        """May an event at ``event_ts`` be added to the profile now?

        Only with ``profile`` granted, and only if the event is newer than the last revocation
        of ``profile``: an older event belonged to the profile that revocation erased, even when
        it is processed after a later re-grant.
        """
        return self.flags["profile"] and event_ts > self.revoked_at.get("profile", -1)

    def basis(self) -> dict[str, Any]:
        """The consent basis recorded with a decision."""
        return {"flags": dict(self.flags), "epoch": self.epoch, "sources": dict(self.sources)}

    def to_dict(self) -> dict[str, Any]:
        """Serialize to plain data with a schema version."""
        return {
            "v": SCHEMA_VERSION, "flags": dict(self.flags), "epoch": self.epoch,
            "sources": dict(self.sources), "revoked_at": dict(self.revoked_at),
            "granted_at": dict(self.granted_at), "tc_hash": self.tc_hash,
            "exclude_categories": list(self.exclude_categories), "channels": list(self.channels),
            "dismissed": list(self.dismissed),
        } | ({"seen": "".join(self.seen)} if self.seen else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ConsentState:
        """Inverse of :meth:`to_dict`; ``None`` gives the fail-closed default."""
        if not data:
            return cls.unknown()
        if data.get("v") != SCHEMA_VERSION:
            raise InvalidConsent("v", f"unsupported consent schema version {data.get('v')!r}")
        flags = dict.fromkeys(FLAGS, False) | {k: bool(v) for k, v in data["flags"].items() if k in FLAGS}
        return cls(
            flags=flags, epoch=int(data["epoch"]),
            sources=dict.fromkeys(FLAGS, "default") | dict(data.get("sources", {})),
            revoked_at=dict(data.get("revoked_at", {})), granted_at=dict(data.get("granted_at", {})),
            tc_hash=data.get("tc_hash"), exclude_categories=list(data.get("exclude_categories", [])),
            channels=list(data.get("channels", [])), dismissed=list(data.get("dismissed", [])),
            seen=_split_keys(data.get("seen", "")),
        )

    def remember_event(self, key: str) -> None:
        """Note a consent event's key as applied (the oldest forgotten past the window)."""
        self.seen.append(key)
        del self.seen[:-MAX_SEEN_CONSENT]

    def add_dismissed(self, offer_id: str) -> None:
        """Remember a "not interested"; the oldest are forgotten past :data:`MAX_DISMISSED`."""
        if offer_id not in self.dismissed:
            self.dismissed.append(offer_id)
            del self.dismissed[:-MAX_DISMISSED]


def _split_keys(joined: str) -> list[str]:
    return [joined[i:i + EVENT_KEY_CHARS] for i in range(0, len(joined), EVENT_KEY_CHARS)]


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """The result of applying an update: new state and what changed."""

    state: ConsentState
    granted: list[str]
    revoked: list[str]
    ignored: list[str]  # grants older than the flag's last revocation
    tcf_basis: str | None = None  # the TCF basis a TC string of the update was read under


def apply_update(state: ConsentState, update: ConsentUpdate, ts_ms: int) -> ConsentChange:
    """Apply a consent update made at ``ts_ms``; most restrictive wins, fail closed."""
    new = ConsentState.from_dict(state.to_dict())
    granted, revoked, ignored = [], [], []
    for flag, (value, source) in sorted(update.merged().items()):
        if not value:
            new.flags[flag] = False
            new.sources[flag] = source
            new.revoked_at[flag] = max(ts_ms, new.revoked_at.get(flag, ts_ms))
            revoked.append(flag)
        elif ts_ms > new.revoked_at.get(flag, -1):
            new.flags[flag] = True
            new.sources[flag] = source
            new.granted_at[flag] = max(ts_ms, new.granted_at.get(flag, ts_ms))
            granted.append(flag)
        else:
            ignored.append(flag)
    if update.tc_hash is not None:
        new.tc_hash = update.tc_hash
    if granted or revoked or update.tc_hash is not None:
        new.epoch += 1
    return ConsentChange(state=new, granted=granted, revoked=revoked, ignored=ignored, tcf_basis=update.tcf_basis)


def restrict(flags: dict[str, bool], update: ConsentUpdate | None) -> dict[str, bool]:
    """Flags for one decision: the stored ones, narrowed (never widened) by a request's signals."""
    if update is None:
        return dict(flags)
    out = dict(flags)
    for flag, (value, _source) in update.merged().items():
        out[flag] = out[flag] and value
    return out
