"""Per-customer profile state, updated event by event; the same code online and in replay.

A :class:`Profile` holds decayed counts per event type at three half-lives (1 h, 1 day, 30 days),
decayed category affinities, recency, the current session, the cart, purchases online and in store,
per-offer history, and a short window of recent event ids so a redelivered event never counts
twice. It serializes to plain JSON-able data with a schema version (``to_dict``/``from_dict``).

Examples
--------
>>> from models.events import parse_event
>>> p = Profile()
>>> ev = parse_event({"event_id": "e1", "type": "add_to_cart", "customer_id": "c", "ts": 3_600_000_000_000,
...                   "item_id": "sku1", "category": "shoes", "price": 20.0, "quantity": 2})
>>> p.apply(ev), p.apply(ev)   # the second delivery is recognised and skipped
(True, False)
>>> p.cart_value()
40.0
"""

from __future__ import annotations

import struct
import sys
from array import array
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from os.path import commonprefix
from typing import Any

import orjson

from models import profile_binary
from models.decay import add, new_cell, value_at
from models.errors import InvalidEvent
from models.events import EVENT_KEY_CHARS, Event, event_key

__all__ = [
    "SCHEMA_VERSION",
    "JSON_STORED_VERSION",
    "READABLE_VERSION",
    "STORED_OFFSET_FIELD",
    "HALF_LIVES_MS",
    "CATEGORY_HALF_LIVES_MS",
    "SPEND_HALF_LIVES_MS",
    "PROFILE_EVENT_TYPES",
    "CATEGORY_WEIGHTS",
    "Profile",
]

# v4 (stored, ``to_bytes``): binary, exact (models/profile_binary.py). v3 (``to_state``): JSON with
# packed floats, short relative integers, base64 event keys (below); still written for the rare
# profile v4 cannot hold exactly. v2 (readable, ``to_dict``): recent event keys packed into one
# string. v1: keys as a list. All four are read.
SCHEMA_VERSION = profile_binary.VERSION
JSON_STORED_VERSION = 3
READABLE_VERSION = 2
STORED_OFFSET_FIELD = "_o"  # in a v3 JSON value: the offset stored with the profile
SEEN_KEY_CHARS = EVENT_KEY_CHARS  # the offset stored with each profile is the main guard against replays
_NEG_INF = float("-inf")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HALF_LIVES_MS = (float(HOUR_MS), float(DAY_MS), float(30 * DAY_MS))
CATEGORY_HALF_LIVES_MS = (float(DAY_MS), float(30 * DAY_MS))
SPEND_HALF_LIVES_MS = (float(30 * DAY_MS),)
SESSION_GAP_MS = 30 * 60 * 1000
MAX_CATEGORIES = 24
MAX_CART = 50
MAX_OFFERS = 48
MAX_SEEN = 48
# How strongly each event type says "interested in this category".
CATEGORY_WEIGHTS = {
    "page_view": 1.0, "search": 1.0, "product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0,
}
PROFILE_EVENT_TYPES = frozenset(
    {"page_view", "search", "product_view", "add_to_cart", "remove_from_cart", "purchase", "return",
     "offer_impression", "offer_click", "offer_redeem", "offer_dismiss"}
)
OFFER_FIELDS = {"offer_impression": 0, "offer_click": 1, "offer_redeem": 2, "offer_dismiss": 3}


@dataclass(slots=True)
class Profile:
    """A customer's behavioural profile (see the module docstring)."""

    counts: dict[str, list[float]] = field(default_factory=dict)
    categories: dict[str, list[float]] = field(default_factory=dict)
    spend: list[float] = field(default_factory=lambda: new_cell(1))
    first_ts: int | None = None
    last_ts: int | None = None
    last_purchase_ts: int | None = None
    session: list[int] = field(default_factory=lambda: [0, 0, 0])  # start, last, n_events
    cart: dict[str, list[Any]] = field(default_factory=dict)  # item_id -> [category, price, qty]
    orders: dict[str, list[float]] = field(default_factory=dict)  # channel -> [n, value]
    returns: list[float] = field(default_factory=lambda: [0.0, 0.0])
    # Purchase history beyond the decayed cells (full history, integers so every form is exact).
    # No per-category spend: on the full Complete Journey it took the stored p99 from 1,019 to
    # 1,111 B (cents; 1,056 B in whole units), over the 1 KiB budget (the spend share per category
    # comes from the category cells instead, see models/features.py).
    first_purchase_ts: int | None = None
    # cents saved by price reductions, cents saved by coupons, purchases with a coupon saving
    savings: list[int] = field(default_factory=lambda: [0, 0, 0])
    offers: dict[str, list[int]] = field(default_factory=dict)  # imp, click, redeem, dismiss, last_imp, day, today
    seen: list[str] = field(default_factory=list)
    n_events: int = 0

    # ---- updates ---------------------------------------------------------------------------
    def apply(self, event: Event) -> bool:
        """Add one event; return False if it was already applied or is not profile data."""
        etype = event.type
        if etype not in PROFILE_EVENT_TYPES:
            return False
        key = event_key(event.event_id)
        seen = self.seen
        if key in seen:
            return False
        seen.append(key)
        if len(seen) > MAX_SEEN:
            del seen[:-MAX_SEEN]
        self._apply_common(event, etype)
        handler = _HANDLERS.get(etype)
        if handler is not None:
            handler(self, event)
        return True

    def _apply_common(self, event: Event, etype: str) -> None:
        # The hot path of ingest and replay: plain comparisons, no min()/max() or tuple unpacking.
        ts = event.ts
        self.n_events += 1
        cell = self.counts.get(etype)  # not setdefault: that builds a new cell every time
        if cell is None:
            cell = self.counts[etype] = new_cell(3)
        add(cell, ts, 1.0, HALF_LIVES_MS)
        first, last = self.first_ts, self.last_ts
        if first is None or ts < first:
            self.first_ts = ts
        if last is None or ts > last:
            self.last_ts = ts
        self._update_session(ts)
        weight = CATEGORY_WEIGHTS.get(etype)
        if weight is not None:
            category = event.data.get("category")
            if category and isinstance(category, str):
                self._add_category(category, ts, weight)

    def _update_session(self, ts: int) -> None:
        session = self.session
        start, last, n = session
        if n == 0 or ts - last > SESSION_GAP_MS:
            self.session = [ts, ts, 1]
        elif ts >= start - SESSION_GAP_MS:
            if ts < start:
                session[0] = ts
            if ts > last:
                session[1] = ts
            session[2] = n + 1

    def _add_category(self, category: str, ts: int, weight: float) -> None:
        cell = self.categories.get(category)
        if cell is None:
            cell = self.categories[category] = new_cell(len(CATEGORY_HALF_LIVES_MS))
        add(cell, ts, weight, CATEGORY_HALF_LIVES_MS)
        if len(self.categories) > MAX_CATEGORIES:
            del self.categories[self._weakest_category(ts)]

    def _weakest_category(self, ts: int) -> str:
        # min(categories, key=value_at(cell, ts, 1, h)) written out (it runs on every new category
        # of a full profile): the same arithmetic, and the first of equal values, as min() picks.
        h = CATEGORY_HALF_LIVES_MS[1]
        weakest, low = None, 0.0
        for name, cell in self.categories.items():
            t_ref = cell[0]
            if t_ref == _NEG_INF:
                value = 0.0
            elif ts > t_ref:
                value = cell[2] * 2.0 ** (-(ts - t_ref) / h)
            else:
                value = cell[2]
            if weakest is None or value < low:
                weakest, low = name, value
        assert weakest is not None
        return weakest

    def _cart_add(self, event: Event) -> None:
        item = self.cart.setdefault(event.get("item_id"), [event.get("category"), 0.0, 0.0])
        item[0] = event.get("category") or item[0]
        item[1] = float(event.get("price") or item[1])
        item[2] += float(event.get("quantity") or 1.0)
        if len(self.cart) > MAX_CART:
            del self.cart[next(iter(self.cart))]

    def _cart_remove(self, event: Event) -> None:
        item = self.cart.get(event.get("item_id"))
        if item is not None:
            item[2] -= float(event.get("quantity") or item[2])
            if item[2] <= 0:
                del self.cart[event.get("item_id")]

    def _transaction(self, event: Event) -> None:
        items = event.get("items")
        value = event.get("total")
        if value is None:
            value = sum(float(i.get("price") or 0.0) * float(i.get("quantity") or 1.0) for i in items)
        if event.type == "return":
            self.returns = [self.returns[0] + 1, self.returns[1] + float(value)]
            return
        ts = event.ts
        order = self.orders.setdefault(event.get("channel", "web"), [0.0, 0.0])
        order[0] += 1
        order[1] += float(value)
        add(self.spend, ts, float(value), SPEND_HALF_LIVES_MS)
        self.last_purchase_ts = max(self.last_purchase_ts or ts, ts)
        first = self.first_purchase_ts
        if first is None or ts < first:
            self.first_purchase_ts = ts
        cart = self.cart
        saved = coupons = 0
        weight = CATEGORY_WEIGHTS["purchase"]
        for item in items:
            cart.pop(item["item_id"], None)
            category = item.get("category")
            if category:
                self._add_category(category, ts, weight)
            off = item.get("discount")
            if off:
                saved += round(off * 100)
            off = item.get("coupon_discount")
            if off:
                coupons += round(off * 100)
        if saved or coupons:  # cents off the purchase: price reductions, coupons
            savings = self.savings
            savings[0] += saved
            if coupons:
                savings[1] += coupons
                savings[2] += 1

    def _offer_event(self, event: Event) -> None:
        rec = self.offers.setdefault(event.get("offer_id"), [0, 0, 0, 0, 0, 0, 0])
        rec[OFFER_FIELDS[event.type]] += 1
        if event.type == "offer_impression":
            day = event.ts // DAY_MS
            if day == rec[5]:
                rec[6] += 1
            elif day > rec[5]:
                rec[5], rec[6] = day, 1
            rec[4] = max(rec[4], event.ts)
        if len(self.offers) > MAX_OFFERS:
            del self.offers[min(self.offers, key=lambda o: self.offers[o][4])]

    # ---- reads -----------------------------------------------------------------------------
    def count(self, event_type: str, half_life_index: int, now_ms: float) -> float:
        """Decayed count of ``event_type`` at ``now_ms`` for one of :data:`HALF_LIVES_MS`."""
        cell = self.counts.get(event_type)
        if cell is None:
            return 0.0
        return value_at(cell, now_ms, half_life_index, HALF_LIVES_MS[half_life_index])

    def category_affinity(self, category: str, half_life_index: int, now_ms: float) -> float:
        """Share of the customer's decayed category interest that falls on ``category``."""
        h = CATEGORY_HALF_LIVES_MS[half_life_index]
        total = sum(value_at(c, now_ms, half_life_index, h) for c in self.categories.values())
        cell = self.categories.get(category)
        if cell is None or total <= 0.0:
            return 0.0
        return value_at(cell, now_ms, half_life_index, h) / total

    def top_categories(self, now_ms: float, n: int = 3) -> list[str]:
        """The ``n`` categories with most 30-day interest."""
        h = CATEGORY_HALF_LIVES_MS[1]
        ranked = sorted(self.categories, key=lambda c: -value_at(self.categories[c], now_ms, 1, h))
        return ranked[:n]

    def decayed_spend(self, now_ms: float) -> float:
        """Spend with a 30-day half-life."""
        return value_at(self.spend, now_ms, 0, SPEND_HALF_LIVES_MS[0])

    def cart_value(self) -> float:
        """Value of the current cart."""
        return float(sum(price * qty for _cat, price, qty in self.cart.values()))

    def cart_categories(self) -> set[str]:
        """Categories present in the cart."""
        return {cat for cat, _price, _qty in self.cart.values() if cat}

    def impressions_today(self, offer_id: str, now_ms: int) -> int:
        """Impressions of ``offer_id`` on the UTC day of ``now_ms``."""
        rec = self.offers.get(offer_id)
        return rec[6] if rec is not None and rec[5] == now_ms // DAY_MS else 0

    # ---- plain data ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The readable form (schema v2 layout): what an access request shows; never a pickle."""
        return {
            "v": READABLE_VERSION, "counts": self.counts, "categories": self.categories,
            "spend": self.spend if self.spend[0] != _NEG_INF else None,
            "first_ts": self.first_ts, "last_ts": self.last_ts,
            "last_purchase_ts": self.last_purchase_ts, "session": self.session, "cart": self.cart,
            "orders": self.orders, "returns": self.returns, "offers": self.offers,
            "seen": "".join(self.seen), "n_events": self.n_events,
            "first_purchase_ts": self.first_purchase_ts, "savings": self.savings,
        }

    def to_state(self) -> dict[str, Any]:
        """The JSON stored form (schema v3, see :func:`_pack`): plain data, half of ``to_dict``."""
        return _pack(self)

    def to_bytes(self, offset: int | None = None) -> bytes:
        """The bytes a table stores: schema v4 (binary, exact), with ``offset`` if given.

        A profile v4 cannot hold exactly (never one built by :meth:`apply`; e.g. v1 event keys)
        is stored as the v3 JSON of :meth:`to_state`, with ``offset`` as ``"_o"``.
        """
        try:
            return profile_binary.encode(self, offset)
        except (ValueError, TypeError, OverflowError, KeyError, struct.error):
            state = _pack(self)
            if offset is not None:
                state[STORED_OFFSET_FIELD] = offset
            return orjson.dumps(state)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Profile:
        """Inverse of :meth:`to_dict` and :meth:`to_state` (reads v1, v2, v3); ``None``: empty."""
        if not data:
            return cls()
        version = data.get("v")
        if version == JSON_STORED_VERSION:
            return _unpack(cls, data)
        if version not in (1, READABLE_VERSION):
            raise InvalidEvent("profile.v", f"unsupported profile schema version {version!r}")
        return cls(
            counts=data["counts"], categories=data["categories"],
            spend=data["spend"] if data.get("spend") else new_cell(1),
            first_ts=data["first_ts"], last_ts=data["last_ts"],
            last_purchase_ts=data["last_purchase_ts"], session=data["session"], cart=data["cart"],
            orders=data["orders"], returns=data["returns"], offers=data["offers"],
            seen=_unpack_seen(data["seen"]), n_events=data["n_events"],
            first_purchase_ts=data.get("first_purchase_ts"),  # absent before the purchase history
            savings=data.get("savings") or [0, 0, 0],
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Profile:
        """Inverse of :meth:`to_bytes` (also reads the JSON of v1/v2/v3); empty: a new profile."""
        return cls.from_stored(raw)[0]

    @classmethod
    def from_stored(cls, raw: bytes | None) -> tuple[Profile, int]:
        """``(profile, offset)`` from stored bytes of any version; offset ``-1`` if none stored.

        Raises :class:`~models.errors.ValidationError` naming the field of a corrupt v4 value.
        """
        if not raw:
            return cls(), -1
        if raw[0] == SCHEMA_VERSION:
            return profile_binary.decode(cls, raw)  # type: ignore[no-any-return]
        data = orjson.loads(raw)
        return cls.from_dict(data), int(data.get(STORED_OFFSET_FIELD, -1))


def _unpack_seen(seen: str | list[str]) -> list[str]:
    if isinstance(seen, list):  # schema v1
        return list(seen)
    return [seen[i:i + SEEN_KEY_CHARS] for i in range(0, len(seen), SEEN_KEY_CHARS)]


# ---- schema v3: the stored form -------------------------------------------------------------
# {"v": 3, "n": n_events,
#  "t": [first_ts, last_ts - first_ts, last_ts - last_purchase_ts | null,
#        last_ts - session_start, last_ts - session_last, session_events]    (absent: no events)
#  "c": [event types of counts], "k": [categories],
#  "f": base64 of little-endian IEEE float64: every counts cell (4 values), every category cell (3),
#       then the spend cell (2) if there was a purchase -- the exact floats, a third of the text
#  "op": common prefix of the offer ids, "o": {id without prefix: [imp, click, redeem, dismiss,
#       last_ts - last_impression, today(, day - last_impression_day when not 0)]}
#  "s": base64 of the recent event keys (4 bytes each; "sl": the list when they are not 8-hex)
#  "cart", "orders", "r" (returns): as in v2, each only when not empty,
#  "fp": first_purchase_ts, "sv": savings: each only when set}
# Integers are stored relative to last_ts so they are short; everything round-trips exactly.
_COUNT_CELL = 1 + len(HALF_LIVES_MS)
_CATEGORY_CELL = 1 + len(CATEGORY_HALF_LIVES_MS)
_SPEND_CELL = 1 + len(SPEND_HALF_LIVES_MS)
_BIG_ENDIAN = sys.byteorder == "big"  # the stored floats are little-endian everywhere


def _pack(p: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"v": JSON_STORED_VERSION, "n": p.n_events}
    last = p.last_ts
    if last is not None:
        start, end, n = p.session
        lp = p.last_purchase_ts
        out["t"] = [p.first_ts, last - p.first_ts if p.first_ts is not None else None,
                    None if lp is None else last - lp, last - start, last - end, n]
    else:
        last = 0
        if p.first_ts is not None or p.last_purchase_ts is not None or p.session != [0, 0, 0]:
            out["t0"] = [p.first_ts, p.last_purchase_ts, p.session]  # not reachable through apply
    counts, categories, spend = p.counts, p.categories, p.spend
    if counts or categories or spend[0] != _NEG_INF:
        floats = array("d")
        add_cell = floats.fromlist  # per cell: the fastest way from float objects to packed bytes
        for cell in counts.values():
            add_cell(cell)
        for cell in categories.values():
            add_cell(cell)
        if spend[0] != _NEG_INF:
            add_cell(spend)
        if len(floats) != (_COUNT_CELL * len(counts) + _CATEGORY_CELL * len(categories)
                           + (_SPEND_CELL if spend[0] != _NEG_INF else 0)):
            raise ValueError("a decayed cell has the wrong length")
        if _BIG_ENDIAN:
            floats.byteswap()
        out["c"] = list(counts)
        out["k"] = list(categories)
        out["f"] = b64encode(floats.tobytes()).decode()
    if p.offers:
        ids = list(p.offers)
        prefix = commonprefix(ids) if len(ids) > 1 else ""
        cut = len(prefix)
        offers = {}
        for offer_id, rec in p.offers.items():
            packed = [rec[0], rec[1], rec[2], rec[3], last - rec[4], rec[6]]
            day_offset = rec[5] - rec[4] // DAY_MS  # 0 unless written by hand: then it is kept
            if day_offset:
                packed.append(day_offset)
            offers[offer_id[cut:]] = packed
        if prefix:
            out["op"] = prefix
        out["o"] = offers
    seen = p.seen
    if seen:
        joined = "".join(seen)
        try:
            if len(joined) != SEEN_KEY_CHARS * len(seen) or max(map(len, seen)) != SEEN_KEY_CHARS:
                raise ValueError("not all keys are 8 hex digits (schema v1 keys)")
            out["s"] = b64encode(bytes.fromhex(joined)).decode()
        except ValueError:
            out["sl"] = list(seen)
    if p.cart:
        out["cart"] = p.cart
    if p.orders:
        out["orders"] = p.orders
    if p.returns != [0.0, 0.0]:
        out["r"] = p.returns
    if p.first_purchase_ts is not None:
        out["fp"] = p.first_purchase_ts
    if p.savings != [0, 0, 0]:
        out["sv"] = p.savings
    return out


def _unpack(cls: type[Profile], data: dict[str, Any]) -> Profile:
    p = cls(n_events=data["n"])
    times = data.get("t")
    last = 0
    if times is not None:
        first, since_first, since_purchase, since_start, since_end, n = times
        last = first + since_first
        p.first_ts, p.last_ts = first, last
        p.last_purchase_ts = None if since_purchase is None else last - since_purchase
        p.session = [last - since_start, last - since_end, n]
    elif "t0" in data:
        p.first_ts, p.last_purchase_ts, p.session = data["t0"]
    if "f" in data:
        floats = array("d", b64decode(data["f"]))
        if _BIG_ENDIAN:
            floats.byteswap()
        i = 0
        for name in data["c"]:
            p.counts[name] = floats[i:i + _COUNT_CELL].tolist()
            i += _COUNT_CELL
        for name in data["k"]:
            p.categories[name] = floats[i:i + _CATEGORY_CELL].tolist()
            i += _CATEGORY_CELL
        if i < len(floats):
            p.spend = floats[i:i + _SPEND_CELL].tolist()
    if "o" in data:
        prefix = data.get("op", "")
        for suffix, packed in data["o"].items():
            imp, click, redeem, dismiss, since_imp, today = packed[:6]
            day_offset = packed[6] if len(packed) > 6 else 0
            last_imp = last - since_imp
            day = last_imp // DAY_MS + day_offset
            p.offers[prefix + suffix] = [imp, click, redeem, dismiss, last_imp, day, today]
    if "s" in data:
        hexed = b64decode(data["s"]).hex()
        p.seen = [hexed[i:i + SEEN_KEY_CHARS] for i in range(0, len(hexed), SEEN_KEY_CHARS)]
    elif "sl" in data:
        p.seen = list(data["sl"])
    p.cart = data.get("cart") or {}
    p.orders = data.get("orders") or {}
    if "r" in data:
        p.returns = data["r"]
    p.first_purchase_ts = data.get("fp")
    p.savings = data.get("sv") or [0, 0, 0]
    return p


_HANDLERS = {
    "add_to_cart": Profile._cart_add,
    "remove_from_cart": Profile._cart_remove,
    "purchase": Profile._transaction,
    "return": Profile._transaction,
    "offer_impression": Profile._offer_event,
    "offer_click": Profile._offer_event,
    "offer_redeem": Profile._offer_event,
    "offer_dismiss": Profile._offer_event,
}
