"""The event contract: parsing and validation.

One event is a JSON object with ``event_id``, ``type``, ``customer_id`` and ``ts`` plus the
fields of its type (see DESIGN.md). A batch is a JSON array or NDJSON. Unknown extra fields are
kept (in :attr:`Event.data`) but ignored. Every rejection names the field.

Examples
--------
>>> e = parse_event({"event_id": "e1", "type": "page_view", "customer_id": "c1",
...                  "ts": "2024-05-01T10:00:00+00:00", "category": "shoes"})
>>> e.type, e.customer_id, e.ts
('page_view', 'c1', 1714557600000)
>>> parse_event({"event_id": "e1", "type": "page_view", "customer_id": "c1", "ts": "yesterday"})
Traceback (most recent call last):
...
models.errors.InvalidEvent: ts: must be ISO-8601 with a zone or epoch milliseconds, got 'yesterday'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from models.errors import InvalidEvent

__all__ = [
    "EVENT_TYPES",
    "CHANNELS",
    "LINE_DISCOUNTS",
    "Event",
    "parse_event",
    "parse_payload",
    "parse_ts",
    "encode_event",
    "event_key",
    "EVENT_KEY_CHARS",
]

CHANNELS = ("web", "app", "store")
#: Optional fields of a purchase or return item (an extension of the contract; events without
#: them stay valid): money taken off the whole line, already left out of ``price``, >= 0.
#: ``discount``: price reductions (shelf price, loyalty card); ``coupon_discount``: coupons.
LINE_DISCOUNTS = ("discount", "coupon_discount")
MAX_ID_LEN = 256
MAX_ITEMS = 500
#: Deepest nesting of arrays/objects an event may carry; the JSON writer refuses deeper ones, so
#: a deeper event could be read but never forwarded, archived or dead-lettered intact.
MAX_DEPTH = 32
#: Largest event accepted; a Kafka message holds one event and brokers cap message sizes.
MAX_EVENT_BYTES = 512 * 1024
# Accepted timestamp range: 1990-01-01 .. 2100-01-01 (epoch ms). Outside it is a unit mix-up
# (seconds or microseconds sent as milliseconds) far more often than a real event.
TS_MIN_MS = 631_152_000_000
TS_MAX_MS = 4_102_444_800_000


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event.

    Attributes
    ----------
    event_id, type, customer_id : str
        The required contract fields.
    ts : int
        Event time in epoch milliseconds (UTC).
    data : Mapping[str, Any]
        The whole original object, unknown fields included.
    """

    event_id: str
    type: str
    customer_id: str
    ts: int
    data: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        """Return a field of the original event object."""
        return self.data.get(name, default)


def parse_ts(value: Any, field: str = "ts") -> int:
    """Parse an ISO-8601 time with a zone, or epoch milliseconds, into epoch milliseconds.

    >>> parse_ts(1714557600000)
    1714557600000
    >>> parse_ts("2024-05-01T12:00:00+02:00")
    1714557600000
    """
    if type(value) is int and TS_MIN_MS <= value < TS_MAX_MS:
        return value  # the usual case: epoch milliseconds, checked in one step
    if isinstance(value, bool):
        raise InvalidEvent(field, "must be ISO-8601 with a zone or epoch milliseconds, got a bool")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidEvent(field, "must be a finite number of epoch milliseconds")
        ms = int(value)
    elif isinstance(value, str):
        ms = _parse_iso(value, field)
    else:
        raise InvalidEvent(
            field, f"must be ISO-8601 with a zone or epoch milliseconds, got {type(value).__name__}"
        )
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise InvalidEvent(field, f"{ms} ms is outside 1990..2100 (seconds sent as milliseconds?)")
    return ms


def _parse_iso(text: str, field: str) -> int:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00", 1) if text.endswith("Z") else text)
    except ValueError:
        raise InvalidEvent(
            field, f"must be ISO-8601 with a zone or epoch milliseconds, got {text[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidEvent(field, f"ISO-8601 time needs a zone (e.g. +00:00), got {text[:40]!r}")
    return int(parsed.timestamp() * 1000)


def _id(obj: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    value = obj.get(name)
    if type(value) is str and len(value) <= MAX_ID_LEN and value and not value[0].isspace():
        return value  # the usual case, settled without building a stripped copy
    if value is None:
        if required:
            raise InvalidEvent(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(name, "must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise InvalidEvent(name, f"is longer than {MAX_ID_LEN} characters")
    return value


def _number(obj: Mapping[str, Any], name: str, *, minimum: float = 0.0, strict: bool = False,
            maximum: float = math.inf) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent(name, "must be a finite number")
    if value < minimum or (strict and value == minimum) or value > maximum:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise InvalidEvent(name, f"must be {bound}" + (f" and <= {maximum}" if maximum < math.inf else ""))
    return float(value)


def _string(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(name, "must be a string")
    return value


def _string_list(obj: Mapping[str, Any], name: str) -> None:
    value = obj.get(name)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidEvent(name, "must be a list of strings")
    if len(value) > MAX_ITEMS:
        raise InvalidEvent(name, f"has more than {MAX_ITEMS} entries")


def _check_browse(obj: Mapping[str, Any]) -> None:
    for name in ("url", "query", "category"):
        _string(obj, name)


def _check_product(obj: Mapping[str, Any]) -> None:
    _id(obj, "item_id")
    _string(obj, "category")
    _number(obj, "price")
    _number(obj, "quantity", strict=True)


def _check_line(item: Mapping[str, Any]) -> None:
    """A purchase or return item: a product plus the optional money taken off the line."""
    _check_product(item)
    for name in LINE_DISCOUNTS:
        _number(item, name)


def _check_transaction(obj: Mapping[str, Any]) -> None:
    _id(obj, "order_id", required=False)
    channel = obj.get("channel", "web")
    if channel not in CHANNELS:
        raise InvalidEvent("channel", f"must be one of {', '.join(CHANNELS)}, got {str(channel)[:40]!r}")
    items = obj.get("items")
    if not isinstance(items, list) or not items:
        raise InvalidEvent("items", "must be a non-empty list of {item_id, category, price, quantity}")
    if len(items) > MAX_ITEMS:
        raise InvalidEvent("items", f"has more than {MAX_ITEMS} entries")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidEvent(f"items[{i}]", "must be an object")
        try:
            _check_line(item)
        except InvalidEvent as exc:
            raise InvalidEvent(f"items[{i}].{exc.field}", exc.reason) from None
    _number(obj, "total")


def _check_offer_response(obj: Mapping[str, Any]) -> None:
    _id(obj, "offer_id")
    _id(obj, "decision_id", required=False)


def _check_impression(obj: Mapping[str, Any]) -> None:
    _check_offer_response(obj)
    position = obj.get("position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < 0):
        raise InvalidEvent("position", "must be a non-negative integer")
    _number(obj, "propensity", strict=True, maximum=1.0)


def _check_consent(obj: Mapping[str, Any]) -> None:
    if not isinstance(obj.get("consent"), dict):
        raise InvalidEvent("consent", "must be an object shaped like the consent call's body")
    # The detailed check lives in models.consent (parse_update); the agent calls it.


def _check_preference(obj: Mapping[str, Any]) -> None:
    _string_list(obj, "exclude_categories")
    _string_list(obj, "channels")


EVENT_TYPES: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "page_view": _check_browse,
    "search": _check_browse,
    "product_view": _check_product,
    "add_to_cart": _check_product,
    "remove_from_cart": _check_product,
    "purchase": _check_transaction,
    "return": _check_transaction,
    "offer_impression": _check_impression,
    "offer_click": _check_offer_response,
    "offer_redeem": _check_offer_response,
    "offer_dismiss": _check_offer_response,
    "consent": _check_consent,
    "preference": _check_preference,
}


def parse_event(obj: Any) -> Event:
    """Validate one decoded JSON value against the event contract.

    Raises
    ------
    InvalidEvent
        Naming the first field that breaks the contract.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent("", f"an event must be a JSON object, got {type(obj).__name__}")
    if not _shallow(obj, MAX_DEPTH):
        raise InvalidEvent("", f"nested deeper than {MAX_DEPTH} levels")
    event_id = _id(obj, "event_id")
    etype = obj.get("type")
    if etype is None:
        raise InvalidEvent("type", "is required")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise InvalidEvent("type", f"unknown event type {str(etype)[:40]!r}; known: {', '.join(EVENT_TYPES)}")
    customer_id = _id(obj, "customer_id")
    if "ts" not in obj:
        raise InvalidEvent("ts", "is required")
    ts = parse_ts(obj["ts"])
    EVENT_TYPES[etype](obj)
    assert event_id is not None and customer_id is not None
    return Event(event_id=event_id, type=etype, customer_id=customer_id, ts=ts, data=obj)


def _shallow(value: Any, budget: int) -> bool:
    """True if ``value`` nests arrays/objects at most ``budget`` levels deep."""
    if budget < 0:
        return False
    # A plain loop, not all(<genexpr>): most events are flat and this runs once per event.
    for v in value.values() if isinstance(value, dict) else value:
        if isinstance(v, _CONTAINERS) and not _shallow(v, budget - 1):
            return False
    return True


_CONTAINERS = (dict, list)


def _check_size(items: list[Event | InvalidEvent], values: list[Any]) -> list[Event | InvalidEvent]:
    out: list[Event | InvalidEvent] = []
    for item, value in zip(items, values, strict=True):
        if isinstance(item, Event) and len(orjson.dumps(value)) > MAX_EVENT_BYTES:
            item = InvalidEvent("", f"event larger than {MAX_EVENT_BYTES // 1024} KiB")
        out.append(item)
    return out


def parse_payload(body: bytes) -> list[Event | InvalidEvent]:
    """Parse an HTTP or message body: one event, a JSON array of events, or NDJSON.

    Returns one entry per event, in order: the :class:`Event`, or the :class:`InvalidEvent`
    that rejected it. A body that is not JSON at all raises :class:`InvalidEvent`.
    """
    stripped = body.strip()
    if not stripped:
        raise InvalidEvent("", "empty body: send one event, a JSON array, or NDJSON")
    try:
        decoded = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return _parse_ndjson(body)
    values = decoded if isinstance(decoded, list) else [decoded]
    if not values:
        raise InvalidEvent("", "empty batch: send at least one event")
    items = [_try_parse(v) for v in values]
    return _check_size(items, values) if len(stripped) > MAX_EVENT_BYTES else items


def _parse_ndjson(body: bytes) -> list[Event | InvalidEvent]:
    # Number lines as they are in the body (blank lines included), so an error points at them.
    lines = [(n, line) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    if len(lines) < 2:
        raise InvalidEvent("", "body is not valid JSON (nor NDJSON with one object per line)")
    out: list[Event | InvalidEvent] = []
    for number, line in lines:
        if len(line) > MAX_EVENT_BYTES:
            out.append(InvalidEvent("", f"line {number}: event larger than {MAX_EVENT_BYTES // 1024} KiB"))
            continue
        try:
            out.append(_try_parse(orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            out.append(InvalidEvent("", f"line {number} is not valid JSON: {exc}"))
    return out


def _try_parse(value: Any) -> Event | InvalidEvent:
    try:
        return parse_event(value)
    except InvalidEvent as exc:
        return exc


def encode_event(event: Event) -> bytes:
    """Serialize an event back to its JSON form (the original object, extra fields kept)."""
    return orjson.dumps(event.data)


#: Hex characters of :func:`event_key`.
EVENT_KEY_CHARS = 8


def event_key(event_id: str) -> str:
    """A short key of an event id, for the windows of recently applied ids (profile, consent).

    32 bits: a false "duplicate" needs two of one customer's recent ids to collide (~3e-7 for a
    window of 48).
    """
    return hashlib.blake2b(event_id.encode(), digest_size=EVENT_KEY_CHARS // 2).hexdigest()
