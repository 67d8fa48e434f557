"""Schema v4: the binary stored form of a :class:`~models.profile.Profile`, exact to the bit.

What a worker writes to its profile table and changelog. Every value comes back identical: the
decayed floats as IEEE float64 (bit for bit, ``-0.0``, infinities and NaN included), every id and
name, the window of recent event keys (the duplicate guard), the offer history with its per-day
impression counters, and the offset of the last events-topic message applied to the profile (the
replay guard of the write-behind flush). A profile this layout cannot hold exactly (state that
``Profile.apply`` never produces, e.g. a 12-hex v1 event key or a name containing ``NUL``) makes
:func:`encode` raise; the caller then stores it as v3 JSON, which any reader still reads.

Layout (little-endian, no padding; ``n_x`` are counts from the header)::

    header   B version (4) | B flags | B n_counts | B n_categories | B n_offers | B n_seen
             | B n_cart | B n_orders | I n_events | I session events | H strings byte length
    offset   q  offset of the last applied events-topic message           (flag OFFSET)
    last_ts  q  newest event time, ms; every other time is stored as last_ts - t (flag TIMES)
    types    n_counts x B: code of each counted event type, in order (:data:`EVENT_TYPE_CODES`)
    times    int column (below): last_ts - first_ts, last_ts - last_purchase_ts (flag PURCHASE_TS),
             last_ts - session start, last_ts - session last (these four only with flag TIMES);
             then last_ts - t_ref of every counts cell, category cell and the spend cell (unless
             flag FLOAT_TREFS); then last_ts - last impression of every offer; then (flag BUYS)
             last_ts - first_purchase_ts
    offers   int column of 5 x n_offers values: every offer's impressions, then every offer's
             clicks, redemptions, dismissals, impressions on its day; then an int column of
             n_offers values: day - (last impression // DAY_MS) (flag DAY_OFFSETS)
    buys     (flag BUYS; written for a profile with a first purchase time) an int column of 3
             values: the savings (cents off by price reductions, cents off by coupons,
             purchases with a coupon saving)
    floats   float64 array: the values of every counts cell (3: half-lives 1 h, 1 d, 30 d), every
             category cell (2: 1 d, 30 d) and the spend cell (1: 30 d, flag SPEND), each cell
             preceded by its t_ref when flag FLOAT_TREFS; then per cart item price, quantity; per
             order channel count, value; returns count, value (flag RETURNS)
    seen     n_seen x 4 bytes: the recent event keys (8 hex digits each) as raw bytes
    cart     n_cart x B: 1 if the item has a category, 0 if it is None
    strings  UTF-8, the names joined by NUL: category names, then (if n_offers) the offer ids'
             common prefix and each id without it, then cart item ids, cart categories (those
             present), order channel names

An *int column* of ``n`` values (absent when ``n`` is 0) is one code byte, bits 0-1 the width of
every value (0: uint8, 1: int16, 2: int32, 3: int64, the first that holds them all), bit 2 set
when a uint32 divisor follows (the values' greatest common divisor; they are stored divided by
it: times at whole seconds or days shrink to 2-4 bytes), then the ``n`` values.

A cell's ``t_ref`` is the time of its newest event, an integral float; when every ``t_ref`` is a
nonzero integral float it is stored as an integer in the times column, else (flag FLOAT_TREFS)
the cells are stored whole as floats. Numbers in float fields (cart, orders, returns, cells) come
back as floats, as the v3 form already did for the cells. Errors name what is wrong: a truncated
value, an unknown flag or code, bytes left over.

Examples
--------
>>> from models.profile import Profile
>>> raw = encode(Profile(n_events=2), 7)
>>> raw[0], len(raw)
(4, 26)
>>> p, offset = decode(Profile, raw)
>>> p.n_events, offset
(2, 7)
"""

from __future__ import annotations

import struct
import sys
from array import array
from itertools import chain
from math import gcd
from typing import Any

from models.errors import ValidationError

__all__ = ["VERSION", "EVENT_TYPE_CODES", "CELL_VALUES", "encode", "decode"]

VERSION = 4
# Codes of the counted event types (a code is its index; append only, never reorder).
EVENT_TYPE_CODES = ("page_view", "search", "product_view", "add_to_cart", "remove_from_cart",
                    "purchase", "return", "offer_impression", "offer_click", "offer_redeem",
                    "offer_dismiss")
# Values per cell after t_ref: counts (1 h, 1 d, 30 d), categories (1 d, 30 d), spend (30 d).
CELL_VALUES = (3, 2, 1)
DAY_MS = 86_400_000
_DAY_MS: int = DAY_MS  # (for its bound methods)

OFFSET, TIMES, PURCHASE_TS, FLOAT_TREFS, SPEND, RETURNS, DAY_OFFSETS, BUYS = (1 << i for i in range(8))
_KNOWN_FLAGS = 0xFF
_HEADER = struct.Struct("<BBBBBBBBIIH")
_Q = struct.Struct("<q")
_I = struct.Struct("<I")
_CODE = {name: code for code, name in enumerate(EVENT_TYPE_CODES)}
_WIDTHS = (("B", 1), ("h", 2), ("i", 4), ("q", 8))  # by code & 3: uint8, then signed
_NEG_INF = float("-inf")
_D2 = struct.Struct("<2d")
_EMPTY_SPEND = _D2.pack(_NEG_INF, 0.0)
_NO_RETURNS = _D2.pack(0.0, 0.0)
_BIG_ENDIAN = sys.byteorder == "big"
_COUNT, _CATEGORY, _SPEND = (1 + n for n in CELL_VALUES)


def _int_column(values: Any, divide: bool = False) -> bytes:
    """One int column (see the module docstring); ``divide``: try the common divisor."""
    code, divisor = 0, b""
    if divide:
        g = gcd(*values)
        if g > 1 and g <= 0xFFFFFFFF:
            values = [v // g for v in values]
            code, divisor = 4, _I.pack(g)
    low, high = min(values), max(values)
    if low >= 0 and high < 256:
        return bytes((code,)) + divisor + bytes(values)
    if low >= -32768 and high < 32768:
        code, fmt = code | 1, "h"
    elif low >= -(1 << 31) and high < 1 << 31:
        code, fmt = code | 2, "i"
    else:
        code, fmt = code | 3, "q"  # struct.error beyond 64 bits
    return bytes((code,)) + divisor + struct.pack(f"<{len(values)}{fmt}", *values)


def encode(p: Any, offset: int | None = None) -> bytes:
    """The v4 bytes of profile ``p`` (and ``offset``); ``ValueError``/``TypeError``/
    ``OverflowError``/``struct.error`` if the layout cannot hold it exactly (store v3 then)."""
    counts, categories, spend, offers = p.counts, p.categories, p.spend, p.offers
    cart, orders = p.cart, p.orders
    floats = list(chain.from_iterable(counts.values()))
    kfloats = list(chain.from_iterable(categories.values()))
    if len(floats) != _COUNT * len(counts) or len(kfloats) != _CATEGORY * len(categories):
        raise ValueError("a decayed cell has the wrong length")
    flags = 0 if offset is None else OFFSET
    if spend[0] != _NEG_INF or _D2.pack(*spend) != _EMPTY_SPEND:
        flags |= SPEND
    last = p.last_ts
    if last is not None:
        flags |= TIMES
        lp = p.last_purchase_ts
        session = p.session
        if lp is None:
            times = [last - p.first_ts, last - session[0], last - session[1]]
        else:
            flags |= PURCHASE_TS
            times = [last - p.first_ts, last - lp, last - session[0], last - session[1]]
    elif p.first_ts is not None or p.last_purchase_ts is not None or p.session != [0, 0, 0]:
        raise ValueError("times without a last event time")
    else:
        times = []
    trefs = floats[0::_COUNT] + kfloats[0::_CATEGORY]
    if flags & SPEND:
        trefs.append(spend[0])
    if trefs and (last is None or 0.0 in trefs or not all(map(float.is_integer, trefs))):
        flags |= FLOAT_TREFS
        floats += kfloats
        if flags & SPEND:
            floats += spend
    else:
        times += [last - int(t) for t in trefs]
        del floats[0::_COUNT], kfloats[0::_CATEGORY]
        floats += kfloats
        if flags & SPEND:
            floats.append(spend[1])
    names = list(categories)
    offer_columns = b""
    if offers:
        offer_flags, offer_columns = _offers(offers, last, times, names)
        flags |= offer_flags
    buys = b""
    if p.first_purchase_ts is not None:
        flags |= BUYS
        buys = _buys(p, last, times)
    elif any(p.savings):
        raise ValueError("purchase history without a first purchase time")
    present = b""
    n = len(floats) + 2 * (len(cart) + len(orders))
    if cart:
        for item in cart.values():
            floats += item[1:]
        names += cart
        names += [item[0] for item in cart.values() if item[0] is not None]
        present = bytes([item[0] is not None for item in cart.values()])
    if orders:
        floats += chain.from_iterable(orders.values())
        names += orders
    if len(floats) != n:
        raise ValueError("a cart item or an order has the wrong length")
    returns = _D2.pack(*p.returns)
    if returns != _NO_RETURNS:
        flags |= RETURNS
    else:
        returns = b""
    seen = p.seen
    keys = b""
    if seen:
        joined = "".join(seen)
        if len(joined) != 8 * len(seen) or max(map(len, seen)) != 8:
            raise ValueError("not all event keys are 8 hex digits (schema v1 keys)")
        keys = bytes.fromhex(joined)
    text = "\x00".join(names)
    if names and text.count("\x00") != len(names) - 1:
        raise ValueError("a name contains NUL")
    strings = text.encode()
    return b"".join((
        _HEADER.pack(VERSION, flags, len(counts), len(categories), len(offers), len(seen),
                     len(cart), len(orders), p.n_events, p.session[2], len(strings)),
        b"" if offset is None else _Q.pack(offset), b"" if last is None else _Q.pack(last),
        bytes(map(_CODE.__getitem__, counts)), _int_column(times, True) if times else b"",
        offer_columns, buys,
        struct.pack(f"<{len(floats)}d", *floats), returns, keys, present, strings))


def _offers(offers: dict[str, list[int]], last: Any, times: list[int],
            names: list[str]) -> tuple[int, bytes]:
    """Add the offer history's times and names to ``times`` and ``names``; return its flags and
    its int columns."""
    if last is None:
        raise ValueError("offer history without a last event time")
    records = list(offers.values())
    columns = list(zip(*records, strict=True))  # ValueError if the records differ in length
    if len(columns) != 7:
        raise ValueError("an offer record is not 7 integers")
    imp, click, redeem, dismiss, last_imp, day, today = columns
    times += map(last.__sub__, last_imp)
    ids = list(offers)
    cut = _common_prefix(ids) if len(ids) > 1 else 0
    names.append(ids[0][:cut])
    names += [i[cut:] for i in ids] if cut else ids
    packed = _int_column(imp + click + redeem + dismiss + today)
    if any(map(int.__sub__, day, map(_DAY_MS.__rfloordiv__, last_imp))):
        offsets = [d - t // DAY_MS for d, t in zip(day, last_imp, strict=True)]
        return DAY_OFFSETS, packed + _int_column(offsets)
    return 0, packed


def _buys(p: Any, last: Any, times: list[int]) -> bytes:
    """Add the first purchase time to ``times``; return the buys section (flag BUYS)."""
    if last is None:
        raise ValueError("a first purchase time without a last event time")
    times.append(last - p.first_purchase_ts)
    savings = p.savings
    if len(savings) != 3:
        raise ValueError("savings must be 3 integers")
    return _int_column(savings)


def _common_prefix(ids: list[str]) -> int:
    """Length of the prefix all ``ids`` share (that of the smallest and the largest)."""
    n = 0
    for a, b in zip(min(ids), max(ids), strict=False):
        if a != b:
            break
        n += 1
    return n


def _floats_expected(flags: int, n_counts: int, n_categories: int, n_orders: int) -> int:
    """Floats stored for the cells, orders and returns (the cart's 2 per item come on top)."""
    whole = flags & FLOAT_TREFS
    n = (n_counts * (_COUNT if whole else _COUNT - 1)
         + n_categories * (_CATEGORY if whole else _CATEGORY - 1))
    if flags & SPEND:
        n += _SPEND if whole else _SPEND - 1
    return n + 2 * n_orders + (2 if flags & RETURNS else 0)


class _Reader:
    """Bounds-checked reads over the stored bytes; errors name the section and the byte."""

    __slots__ = ("raw", "pos")

    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.raw):
            raise _corrupt(what, f"truncated: needs {n} bytes at byte {self.pos}, "
                                 f"only {len(self.raw) - self.pos} remain")
        out, self.pos = self.raw[self.pos:end], end
        return out

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size, what))

    def ints(self, n: int, what: str) -> list[int]:
        if n == 0:
            return []
        code = self.take(1, what)[0]
        if code & ~7:
            raise _corrupt(what, f"unknown int column code {code:#04x} at byte {self.pos - 1}")
        divisor = _I.unpack(self.take(4, what))[0] if code & 4 else 1
        if divisor == 0:
            raise _corrupt(what, "int column divisor is 0")
        fmt, size = _WIDTHS[code & 3]
        values = list(struct.unpack(f"<{n}{fmt}", self.take(n * size, what)))
        return [v * divisor for v in values] if divisor != 1 else values


def _corrupt(what: str, reason: str) -> ValidationError:
    return ValidationError(f"profile.{what}",
                           f"corrupt stored profile (schema v{VERSION}): {reason}")


def decode(cls: Any, raw: bytes) -> tuple[Any, int]:
    """Inverse of :func:`encode`: ``(profile, offset)`` (``-1`` when no offset was stored).

    Raises :class:`~models.errors.ValidationError` (field ``profile.<section>``) on truncated
    bytes, unknown flags or codes, inconsistent counts or bytes left over.
    """
    r = _Reader(raw)
    (version, flags, n_counts, n_categories, n_offers, n_seen, n_cart, n_orders, n_events,
     session_n, n_strings) = r.unpack(_HEADER, "header")
    if version != VERSION:
        raise _corrupt("v", f"version byte {version}, expected {VERSION}")
    if flags & ~_KNOWN_FLAGS or (flags & PURCHASE_TS and not flags & TIMES):
        raise _corrupt("flags", f"unknown or inconsistent flags {flags:#04x}")
    if (n_offers and not flags & TIMES) or (flags & DAY_OFFSETS and not n_offers):
        raise _corrupt("flags", "offer history without times")
    if not flags & (TIMES | FLOAT_TREFS) and (n_counts or n_categories or flags & SPEND):
        raise _corrupt("flags", "decayed cells with neither times nor float t_refs")
    offset = r.unpack(_Q, "offset")[0] if flags & OFFSET else -1
    last = r.unpack(_Q, "last_ts")[0] if flags & TIMES else 0
    codes = r.take(n_counts, "types")
    if any(c >= len(EVENT_TYPE_CODES) for c in codes):
        raise _corrupt("types", f"unknown event type code in {list(codes)}")
    whole = flags & FLOAT_TREFS
    n_cells = n_counts + n_categories + (1 if flags & SPEND else 0)
    n_head = (3 + (flags & PURCHASE_TS) // PURCHASE_TS) if flags & TIMES else 0
    buys = flags & BUYS
    if buys and not flags & TIMES:
        raise _corrupt("flags", "purchase history without times")
    n_trefs = 0 if whole else n_cells
    times = r.ints(n_head + n_trefs + n_offers + (1 if buys else 0), "times")
    offer_counts = r.ints(5 * n_offers, "offers")
    day_offsets = r.ints(n_offers, "offers") if flags & DAY_OFFSETS else [0] * n_offers
    if buys:
        savings = r.ints(3, "buys")
    n_floats = _floats_expected(flags, n_counts, n_categories, n_orders) + 2 * n_cart
    floats = array("d", r.take(8 * n_floats, "floats"))
    if _BIG_ENDIAN:
        floats.byteswap()
    keys = r.take(4 * n_seen, "seen").hex()
    present = r.take(n_cart, "cart")
    strings = r.take(n_strings, "strings")
    if r.pos != len(raw):
        raise _corrupt("end", f"{len(raw) - r.pos} bytes after the last field")
    if any(b > 1 for b in present):
        raise _corrupt("cart", "category presence byte is not 0 or 1")
    n_names = n_categories + (1 + n_offers if n_offers else 0) + n_cart + sum(present) + n_orders
    names = _names(strings, n_names)
    p = cls(n_events=n_events)
    if flags & TIMES:
        p.last_ts, p.first_ts = last, last - times[0]
        if flags & PURCHASE_TS:
            p.last_purchase_ts = last - times[1]
        p.session = [last - times[n_head - 2], last - times[n_head - 1], session_n]
    elif session_n:
        raise _corrupt("header", "session events without times")
    fl = floats.tolist()
    trefs = iter([] if whole else times[n_head:n_head + n_cells])
    fi = _cells(p.counts, [EVENT_TYPE_CODES[c] for c in codes], _COUNT, fl, 0, last, trefs, whole)
    fi = _cells(p.categories, names[:n_categories], _CATEGORY, fl, fi, last, trefs, whole)
    if flags & SPEND:
        spend: dict[None, list[float]] = {}
        fi = _cells(spend, [None], _SPEND, fl, fi, last, trefs, whole)
        p.spend = spend[None]
    ni = n_categories
    if n_offers:
        prefix, ni = names[ni], ni + 1
        since = times[n_head + n_trefs:n_head + n_trefs + n_offers]
        for i in range(n_offers):
            last_imp = last - since[i]
            p.offers[prefix + names[ni + i]] = [
                offer_counts[i], offer_counts[n_offers + i], offer_counts[2 * n_offers + i],
                offer_counts[3 * n_offers + i], last_imp, last_imp // DAY_MS + day_offsets[i],
                offer_counts[4 * n_offers + i]]
        ni += n_offers
    cart_ids, ni = names[ni:ni + n_cart], ni + n_cart
    for i, item_id in enumerate(cart_ids):
        category = None
        if present[i]:
            category, ni = names[ni], ni + 1
        p.cart[item_id] = [category, fl[fi], fl[fi + 1]]
        fi += 2
    for channel in names[ni:]:
        p.orders[channel] = fl[fi:fi + 2]
        fi += 2
    if flags & RETURNS:
        p.returns = fl[fi:fi + 2]
    if (len(p.counts), len(p.categories), len(p.offers), len(p.cart), len(p.orders)) != \
            (n_counts, n_categories, n_offers, n_cart, n_orders):
        raise _corrupt("strings", "a name occurs twice where names are unique")
    p.seen = [keys[i:i + 8] for i in range(0, len(keys), 8)]
    if buys:
        p.first_purchase_ts = last - times[-1]
        p.savings = savings
    return p, offset


def _names(strings: bytes, expected: int) -> list[str]:
    try:
        text = strings.decode()
    except UnicodeDecodeError as exc:
        raise _corrupt("strings", f"not UTF-8 at byte {exc.start}") from None
    names = text.split("\x00") if expected else []
    if len(names) != expected or (not expected and strings):
        found = len(names) if expected else "some"
        raise _corrupt("strings", f"{found} names, expected {expected}")
    return names


def _cells(out: dict[Any, list[float]], keys: list[Any], size: int, fl: list[float], fi: int,
           last: int, trefs: Any, whole: int) -> int:
    """Rebuild cells of ``size`` floats into ``out``; return the next float index."""
    if whole:
        for key in keys:
            out[key] = fl[fi:fi + size]
            fi += size
        return fi
    n = size - 1
    for key in keys:
        out[key] = [float(last - next(trefs)), *fl[fi:fi + n]]
        fi += n
    return fi
