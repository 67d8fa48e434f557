"""The offer catalogue: offers, their validation, and eligibility with reason codes.

An offer is returned to a customer only if it is valid now, every consent flag in its ``requires``
is granted, it is not in a category the customer excluded, the customer has not dismissed it, and
its daily impression cap for that customer is not reached. Each failed rule has a reason code:

========================  ===========================================================
``not_yet_valid``         ``now < valid_from``
``expired``               ``now > valid_to``
``consent:<flag>``        the offer requires ``<flag>`` and it is not granted
``excluded_category``     the customer excluded the offer's category (preference centre)
``dismissed``             the customer said "not interested"
``daily_cap``             ``max_impressions_per_day`` reached for this customer today
``unknown_offer``         a requested candidate is not in the catalogue
========================  ===========================================================

Examples
--------
>>> offer = parse_offer({"offer_id": "o1", "title": "10% off", "category": "shoes",
...                      "kind": "partner", "requires": ["sharing"]})
>>> offer.required_flags()
('sharing',)
>>> ineligibility(offer, {"sharing": False}, [], [], 0, 0)
'consent:sharing'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.consent import FLAGS
from models.errors import InvalidEvent, InvalidOffer
from models.events import parse_ts

__all__ = ["KINDS", "Offer", "parse_offer", "ineligibility"]

MAX_ATTRIBUTES_BYTES = 64 * 1024
KINDS = ("discount", "bundle", "loyalty", "partner", "sponsored", "other")
# Kinds that by their nature pass data to or promote a third party: they need `sharing`
# even if a catalogue editor forgot to say so (fail closed).
IMPLIED_REQUIREMENTS = {"partner": ("sharing",), "sponsored": ("sharing",)}


@dataclass(frozen=True, slots=True)
class Offer:
    """A validated catalogue offer (times in epoch ms)."""

    offer_id: str
    title: str
    category: str
    kind: str
    discount_pct: float = 0.0
    valid_from: int | None = None
    valid_to: int | None = None
    requires: tuple[str, ...] = ()
    max_impressions_per_day: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def required_flags(self) -> tuple[str, ...]:
        """Flags this offer needs: its ``requires`` plus what its kind implies."""
        extra = IMPLIED_REQUIREMENTS.get(self.kind, ())
        return tuple(dict.fromkeys((*self.requires, *extra)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the catalogue contract."""
        return {
            "offer_id": self.offer_id, "title": self.title, "category": self.category,
            "kind": self.kind, "discount_pct": self.discount_pct, "valid_from": self.valid_from,
            "valid_to": self.valid_to, "requires": list(self.requires),
            "max_impressions_per_day": self.max_impressions_per_day,
            "attributes": dict(self.attributes),
        }


def _text(obj: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise InvalidOffer(name, "must be a non-empty string")
    if len(value) > 256:
        raise InvalidOffer(name, "is longer than 256 characters")
    return value


def _time(obj: Mapping[str, Any], name: str) -> int | None:
    if obj.get(name) is None:
        return None
    try:
        return parse_ts(obj[name], field=name)
    except InvalidEvent as exc:
        raise InvalidOffer(exc.field, exc.reason) from None


def parse_offer(obj: Any, offer_id: str | None = None) -> Offer:
    """Validate an offer object; ``offer_id`` (from a URL) must match the body's if both are given.

    Raises
    ------
    InvalidOffer
        Naming the field that breaks the contract.
    """
    if not isinstance(obj, dict):
        raise InvalidOffer("", "an offer must be a JSON object")
    if offer_id is not None:
        if obj.get("offer_id", offer_id) != offer_id:
            raise InvalidOffer("offer_id", "does not match the id in the URL")
        obj = {**obj, "offer_id": offer_id}
    kind = obj.get("kind", "other")
    if kind not in KINDS:
        raise InvalidOffer("kind", f"must be one of {', '.join(KINDS)}")
    discount = obj.get("discount_pct", 0.0)
    if isinstance(discount, bool) or not isinstance(discount, int | float) or not math.isfinite(discount) \
            or not 0 <= discount <= 100:
        raise InvalidOffer("discount_pct", "must be a number from 0 to 100")
    requires = obj.get("requires", [])
    if not isinstance(requires, list) or any(r not in FLAGS for r in requires):
        raise InvalidOffer("requires", f"must be a list of consent flags ({', '.join(FLAGS)})")
    cap = obj.get("max_impressions_per_day")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise InvalidOffer("max_impressions_per_day", "must be a positive integer or null")
    attributes = obj.get("attributes", {})
    if not isinstance(attributes, dict):
        raise InvalidOffer("attributes", "must be an object")
    try:
        encoded = orjson.dumps(attributes)
    except TypeError:  # nested deeper than the JSON writer allows
        raise InvalidOffer("attributes", "nested too deeply") from None
    if len(encoded) > MAX_ATTRIBUTES_BYTES:
        raise InvalidOffer("attributes", f"larger than {MAX_ATTRIBUTES_BYTES // 1024} KiB")
    valid_from, valid_to = _time(obj, "valid_from"), _time(obj, "valid_to")
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        raise InvalidOffer("valid_to", "is before valid_from")
    return Offer(
        offer_id=_text(obj, "offer_id"), title=_text(obj, "title", obj.get("offer_id")),
        category=_text(obj, "category", "general"), kind=kind, discount_pct=float(discount),
        valid_from=valid_from, valid_to=valid_to, requires=tuple(dict.fromkeys(requires)),
        max_impressions_per_day=cap, attributes=attributes,
    )


def ineligibility(
    offer: Offer,
    flags: Mapping[str, bool],
    exclude_categories: Sequence[str],
    dismissed: Sequence[str],
    impressions_today: int,
    now_ms: int,
) -> str | None:
    """The reason code that keeps ``offer`` from this customer now, or ``None`` if eligible."""
    if offer.valid_from is not None and now_ms < offer.valid_from:
        return "not_yet_valid"
    if offer.valid_to is not None and now_ms > offer.valid_to:
        return "expired"
    for flag in offer.requires:  # the same flags as required_flags(), without building a tuple
        if not flags.get(flag, False):
            return f"consent:{flag}"
    for flag in IMPLIED_REQUIREMENTS.get(offer.kind, ()):
        if not flags.get(flag, False):
            return f"consent:{flag}"
    if offer.category in exclude_categories:
        return "excluded_category"
    if offer.offer_id in dismissed:
        return "dismissed"
    cap = offer.max_impressions_per_day
    if cap is not None and impressions_today >= cap:
        return "daily_cap"
    return None
