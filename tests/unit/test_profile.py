"""Profile state: decayed counts and affinities against the batch answer, and the bookkeeping."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidEvent
from models.events import Event, parse_event
from models.profile import (
    CATEGORY_HALF_LIVES_MS,
    CATEGORY_WEIGHTS,
    DAY_MS,
    HALF_LIVES_MS,
    JSON_STORED_VERSION,
    MAX_CATEGORIES,
    MAX_OFFERS,
    MAX_SEEN,
    READABLE_VERSION,
    SCHEMA_VERSION,
    Profile,
)

T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z, a UTC midnight
assert T0 % DAY_MS == 0
MIN = 60_000
_ids = itertools.count()


def make(etype: str, ts: int, event_id: str | None = None, **fields: Any) -> Event:
    obj = {"event_id": event_id or f"e{next(_ids)}", "type": etype, "customer_id": "c", "ts": ts, **fields}
    return parse_event(obj)


def item(item_id: str, category: str, price: float = 10.0, quantity: float = 1) -> dict[str, Any]:
    return {"item_id": item_id, "category": category, "price": price, "quantity": quantity}


def expected_count(applied: list[Event], etype: str, h: float, now: float) -> float:
    ts = np.array([e.ts for e in applied if e.type == etype and e.ts <= now], dtype=np.float64)
    return float(np.sum(np.exp2(-(now - ts) / h)))


def category_weights(e: Event) -> list[tuple[str, float]]:
    out = []
    if e.type in CATEGORY_WEIGHTS and isinstance(e.get("category"), str) and e.get("category"):
        out.append((e.get("category"), CATEGORY_WEIGHTS[e.type]))
    if e.type == "purchase":
        out += [(i["category"], CATEGORY_WEIGHTS["purchase"]) for i in e.get("items") if i.get("category")]
    return out


def expected_affinities(applied: list[Event], index: int, now: float) -> dict[str, float]:
    h = CATEGORY_HALF_LIVES_MS[index]
    raw: dict[str, float] = defaultdict(float)
    for e in applied:
        for cat, w in category_weights(e):
            raw[cat] += w * 2.0 ** (-(now - e.ts) / h)
    total = sum(raw.values())
    return {c: v / total for c, v in raw.items()} if total > 0 else {}


CATS = ["shoes", "bags", "toys", "food"]
TYPES = ["page_view", "search", "product_view", "add_to_cart", "remove_from_cart", "purchase",
         "offer_impression", "offer_click"]


@st.composite
def event_lists(draw: Any, max_size: int = 25) -> list[Event]:
    n = draw(st.integers(1, max_size))
    out = []
    for k in range(n):
        etype = draw(st.sampled_from(TYPES))
        ts = T0 + draw(st.integers(0, 60 * DAY_MS))
        cat = draw(st.sampled_from(CATS))
        if etype in ("page_view", "search"):
            fields: dict[str, Any] = {"category": cat}
        elif etype in ("product_view", "add_to_cart", "remove_from_cart"):
            fields = item(f"sku{k % 3}", cat)
        elif etype == "purchase":
            cats = draw(st.lists(st.sampled_from(CATS), min_size=1, max_size=3))
            items = [{**item(f"sku{j}", c, draw(st.sampled_from([0.0, 0.99, 10.0, 3.333]))),
                      **draw(st.sampled_from([{}, {"discount": 0.5}, {"coupon_discount": 1.25},
                                              {"discount": 0.1, "coupon_discount": 0.0}]))}
                     for j, c in enumerate(cats)]
            fields = {"items": items, "channel": draw(st.sampled_from(["web", "store", "app"]))}
        else:
            fields = {"offer_id": f"of{k % 4}"}
        out.append(make(etype, ts, event_id=f"h{k}", **fields))
    return out


@settings(max_examples=60, deadline=None)
@given(event_lists())
def test_counts_and_affinities_match_batch_after_each_step(evs: list[Event]) -> None:
    p = Profile()
    applied: list[Event] = []
    for e in evs:
        assert p.apply(e)
        applied.append(e)
        now = max(x.ts for x in applied)
        for etype in TYPES:
            for i, h in enumerate(HALF_LIVES_MS):
                assert p.count(etype, i, now) == pytest.approx(expected_count(applied, etype, h, now),
                                                                rel=1e-9, abs=1e-12)
        for i in range(len(CATEGORY_HALF_LIVES_MS)):
            want = expected_affinities(applied, i, now)
            for cat in CATS:
                assert p.category_affinity(cat, i, now) == pytest.approx(want.get(cat, 0.0), rel=1e-9, abs=1e-12)
        assert p.n_events == len(applied)
        assert p.first_ts == min(x.ts for x in applied) and p.last_ts == now


@settings(max_examples=60, deadline=None)
@given(event_lists(max_size=15), st.randoms(use_true_random=False))
def test_out_of_order_application_gives_the_same_decayed_values(evs: list[Event], rnd: Any) -> None:
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    a, b = Profile(), Profile()
    for e in evs:
        a.apply(e)
    for e in shuffled:
        b.apply(e)
    now = max(e.ts for e in evs) + 3 * 3_600_000
    for etype in TYPES:
        for i in range(len(HALF_LIVES_MS)):
            assert a.count(etype, i, now) == pytest.approx(b.count(etype, i, now), rel=1e-9, abs=1e-12)
    for cat in CATS:
        for i in range(len(CATEGORY_HALF_LIVES_MS)):
            assert a.category_affinity(cat, i, now) == pytest.approx(b.category_affinity(cat, i, now),
                                                                     rel=1e-9, abs=1e-12)
    assert a.decayed_spend(now) == pytest.approx(b.decayed_spend(now), rel=1e-9, abs=1e-12)
    assert a.orders.keys() == b.orders.keys()
    for ch in a.orders:
        assert a.orders[ch] == pytest.approx(b.orders[ch])
    assert (a.first_ts, a.last_ts, a.last_purchase_ts) == (b.first_ts, b.last_ts, b.last_purchase_ts)


def test_duplicate_event_id_counts_once() -> None:
    p = Profile()
    e = make("add_to_cart", T0, event_id="dup", **item("sku1", "shoes", 20.0, 2))
    assert p.apply(e) is True
    assert p.apply(e) is False
    # a redelivery with the same id but different content is still a duplicate
    assert p.apply(make("add_to_cart", T0 + MIN, event_id="dup", **item("sku1", "shoes", 20.0, 5))) is False
    assert p.count("add_to_cart", 0, T0) == pytest.approx(1.0)
    assert p.cart_value() == 40.0
    assert p.n_events == 1
    assert p.category_affinity("shoes", 1, T0) == pytest.approx(1.0)


def test_non_profile_events_are_not_applied() -> None:
    p = Profile()
    assert not p.apply(make("consent", T0, consent={"flags": {"profile": True}}))
    assert not p.apply(make("preference", T0, exclude_categories=["toys"]))
    assert p.n_events == 0 and p.counts == {}


def test_cart_add_remove_and_purchase() -> None:
    p = Profile()
    p.apply(make("add_to_cart", T0, **item("a", "shoes", 20.0, 2)))
    p.apply(make("add_to_cart", T0 + 1, **item("b", "bags", 5.0, 1)))
    assert p.cart_value() == 45.0 and p.cart_categories() == {"shoes", "bags"}
    p.apply(make("remove_from_cart", T0 + 2, **item("a", "shoes", 20.0, 1)))
    assert p.cart_value() == 25.0
    p.apply(make("remove_from_cart", T0 + 3, item_id="a"))  # no quantity: remove it all
    assert "a" not in p.cart and p.cart_value() == 5.0
    p.apply(make("remove_from_cart", T0 + 4, item_id="never-added"))
    assert set(p.cart) == {"b"}
    p.apply(make("add_to_cart", T0 + 5, **item("c", "toys", 3.0, 1)))
    p.apply(make("purchase", T0 + 6, items=[item("b", "bags", 5.0, 1)], total=5.0))
    assert set(p.cart) == {"c"} and p.cart_categories() == {"toys"}


def test_orders_by_channel_spend_and_returns() -> None:
    p = Profile()
    p.apply(make("purchase", T0, items=[item("a", "shoes", 20.0, 2)], total=40.0))  # default web
    p.apply(make("purchase", T0 + DAY_MS, items=[item("b", "bags", 5.0, 2), item("c", "toys", 1.5, 2)],
                 channel="store"))  # no total: sum of price * quantity
    p.apply(make("purchase", T0 + 2 * DAY_MS, items=[item("d", "food", 7.0)], total=7.0, channel="web"))
    p.apply(make("return", T0 + 3 * DAY_MS, items=[item("d", "food", 7.0)], total=7.0))
    assert p.orders == {"web": [2.0, 47.0], "store": [1.0, 13.0]}
    assert p.returns == [1.0, 7.0]
    assert p.last_purchase_ts == T0 + 2 * DAY_MS
    h = 30 * DAY_MS
    now = T0 + 10 * DAY_MS
    want = 40 * 2 ** (-(now - T0) / h) + 13 * 2 ** (-(now - T0 - DAY_MS) / h) + 7 * 2 ** (-(now - T0 - 2 * DAY_MS) / h)
    assert p.decayed_spend(now) == pytest.approx(want, rel=1e-9)
    assert p.count("purchase", 2, now) == pytest.approx(sum(2 ** (-(now - T0 - d * DAY_MS) / h) for d in range(3)))


def test_offer_history_impressions_today_across_utc_midnight() -> None:
    p = Profile()
    before = T0 - 10 * MIN  # 23:50 UTC the day before
    p.apply(make("offer_impression", before, offer_id="o1"))
    p.apply(make("offer_impression", before + MIN, offer_id="o1"))
    assert p.impressions_today("o1", before + 2 * MIN) == 2
    assert p.impressions_today("o1", T0 + MIN) == 0  # a new UTC day, nothing shown yet
    p.apply(make("offer_impression", T0 + 10 * MIN, offer_id="o1"))
    assert p.impressions_today("o1", T0 + 11 * MIN) == 1
    assert p.impressions_today("o1", T0 + DAY_MS) == 0
    p.apply(make("offer_impression", before + 2 * MIN, offer_id="o1"))  # late, yesterday's
    assert p.impressions_today("o1", T0 + 11 * MIN) == 1
    p.apply(make("offer_click", T0 + 12 * MIN, offer_id="o1"))
    p.apply(make("offer_redeem", T0 + 13 * MIN, offer_id="o1"))
    p.apply(make("offer_dismiss", T0 + 14 * MIN, offer_id="o2"))
    imp, click, redeem, dismiss, last_imp, _day, today = p.offers["o1"]
    assert (imp, click, redeem, dismiss, last_imp, today) == (4, 1, 1, 0, T0 + 10 * MIN, 1)
    assert p.offers["o2"][3] == 1 and p.offers["o2"][0] == 0
    assert p.impressions_today("unknown", T0) == 0


def test_session_splits_after_a_30_minute_gap() -> None:
    p = Profile()
    for minutes in (0, 10, 25, 55):  # gaps of 10, 15, 30: one session
        p.apply(make("page_view", T0 + minutes * MIN))
    assert p.session == [T0, T0 + 55 * MIN, 4]
    p.apply(make("page_view", T0 + 55 * MIN + 30 * MIN + 1))  # gap just over 30 minutes
    assert p.session == [T0 + 85 * MIN + 1, T0 + 85 * MIN + 1, 1]
    p.apply(make("page_view", T0 + 80 * MIN))  # late, within 30 minutes of the session start
    assert p.session == [T0 + 80 * MIN, T0 + 85 * MIN + 1, 2]
    p.apply(make("page_view", T0))  # late, from an earlier session: not this one
    assert p.session[2] == 2


def test_sizes_stay_bounded() -> None:
    p = Profile()
    for k in range(MAX_CATEGORIES + 10):
        p.apply(make("page_view", T0 + k * MIN, category=f"cat{k}"))
    for k in range(MAX_OFFERS + 10):
        p.apply(make("offer_impression", T0 + k * MIN, offer_id=f"of{k}"))
    for k in range(MAX_SEEN + 30):
        p.apply(make("search", T0 + k * MIN, query="q"))
    assert len(p.categories) <= MAX_CATEGORIES
    assert len(p.offers) <= MAX_OFFERS
    assert len(p.seen) <= MAX_SEEN
    # the oldest offer (by last impression) is the one forgotten, the newest stays
    assert "of0" not in p.offers and f"of{MAX_OFFERS + 9}" in p.offers
    assert p.n_events == MAX_CATEGORIES + 10 + MAX_OFFERS + 10 + MAX_SEEN + 30


def test_top_categories() -> None:
    p = Profile()
    for cat, n in (("shoes", 3), ("bags", 1), ("toys", 2)):
        for _ in range(n):
            p.apply(make("page_view", T0, category=cat))
    assert p.top_categories(T0, 2) == ["shoes", "toys"]


def _busy_profile() -> Profile:
    p = Profile()
    p.apply(make("page_view", T0, category="shoes"))
    p.apply(make("add_to_cart", T0 + MIN, **item("a", "shoes", 20.0, 2)))
    p.apply(make("add_to_cart", T0 + 2 * MIN, item_id="b"))  # no category, no price
    p.apply(make("purchase", T0 + 3 * MIN, items=[item("x", "bags", 5.0)], channel="store"))
    p.apply(make("return", T0 + 4 * MIN, items=[item("x", "bags", 5.0)]))
    p.apply(make("offer_impression", T0 + 5 * MIN, offer_id="o1"))
    p.apply(make("offer_click", T0 + 6 * MIN, offer_id="o1"))
    return p


def test_to_dict_is_json_and_round_trips() -> None:
    p = _busy_profile()
    data = p.to_dict()
    assert data["v"] == READABLE_VERSION
    encoded = orjson.dumps(data)
    restored = Profile.from_dict(orjson.loads(encoded))
    assert restored.to_dict() == orjson.loads(encoded)
    assert orjson.dumps(restored.to_dict()) == encoded
    now = T0 + DAY_MS
    assert restored.count("page_view", 1, now) == p.count("page_view", 1, now)
    assert restored.category_affinity("shoes", 1, now) == p.category_affinity("shoes", 1, now)
    assert restored.cart_value() == p.cart_value()
    # the restored profile keeps working, and still recognises applied events
    first = make("page_view", T0, event_id=None, category="shoes")
    assert restored.apply(first)
    assert not restored.apply(first)


def test_empty_profile_round_trips() -> None:
    data = orjson.loads(orjson.dumps(Profile().to_dict()))
    assert data["spend"] is None
    assert Profile.from_dict(data).to_dict() == data
    assert Profile.from_dict(None).to_dict() == Profile().to_dict()


@pytest.mark.parametrize("version", [None, 0, SCHEMA_VERSION + 1, "1", "3"])
def test_wrong_schema_version_rejected(version: Any) -> None:
    data = Profile().to_dict() | {"v": version}
    with pytest.raises(InvalidEvent) as info:
        Profile.from_dict(data)
    assert info.value.field == "profile.v"


def test_schema_v2_packs_recent_event_keys_and_still_reads_v1() -> None:
    from models.events import parse_event
    from models.profile import SCHEMA_VERSION

    profile = Profile()
    for i in range(60):
        profile.apply(parse_event({"event_id": f"e{i}", "type": "page_view", "customer_id": "c",
                                   "ts": 1_700_000_000_000 + i, "category": "x"}))
    data = profile.to_dict()
    assert data["v"] == READABLE_VERSION == 2 and isinstance(data["seen"], str)
    again = Profile.from_dict(orjson.loads(orjson.dumps(data)))
    assert again.seen == profile.seen and len(again.seen) == 48
    assert not again.apply(parse_event({"event_id": "e59", "type": "page_view", "customer_id": "c",
                                        "ts": 1_700_000_000_059}))
    v1 = {**data, "v": 1, "seen": ["0123456789ab", "ba9876543210"]}
    assert Profile.from_dict(v1).seen == ["0123456789ab", "ba9876543210"]


def _same(a: Profile, b: Profile) -> bool:
    """Equal state, exactly (floats bit for bit, key order included)."""
    return orjson.dumps(a.to_dict()) == orjson.dumps(b.to_dict())


@settings(max_examples=80, deadline=None)
@given(event_lists(max_size=40))
def test_stored_forms_round_trip_exactly_after_each_step(evs: list[Event]) -> None:
    p = Profile()
    for e in evs:
        p.apply(e)
        raw = p.to_bytes()
        again = Profile.from_bytes(raw)
        assert _same(again, p) and again == p
        assert raw[0] == SCHEMA_VERSION == 4  # binary; apply never makes a profile v4 cannot hold
        assert again.to_bytes() == raw
        state = orjson.dumps(p.to_state())  # the v3 JSON form, still read
        assert orjson.loads(state)["v"] == JSON_STORED_VERSION == 3
        assert _same(Profile.from_bytes(state), p)
    # the restored profile goes on exactly like the original, duplicates included
    restored = Profile.from_bytes(p.to_bytes())
    later = make("offer_impression", evs[-1].ts + DAY_MS, offer_id="of9")
    for e in [*evs[:3], later]:
        assert restored.apply(e) == p.apply(e)
    assert _same(restored, p)


def test_stored_form_is_smaller_and_reads_every_version() -> None:
    p = _busy_profile()
    for i in range(MAX_SEEN):
        p.apply(make("offer_impression", T0 + i * MIN, offer_id=f"campaign-{i % 20}"))
    v2 = orjson.dumps(p.to_dict())
    v3 = orjson.dumps(p.to_state())
    v4 = p.to_bytes()
    assert len(v3) < 0.75 * len(v2) and len(v4) < 0.6 * len(v3)
    assert _same(Profile.from_bytes(v2), p) and _same(Profile.from_bytes(v3), p)
    assert _same(Profile.from_bytes(v4), p)
    q = Profile()
    for i in range(30):
        q.apply(make("offer_impression", T0 + i * MIN, offer_id=f"campaign-{i % 12}"))
    state = q.to_state()
    assert state["op"] == "campaign-" and "11" in state["o"]  # the common prefix is stored once
    assert _same(Profile.from_dict(orjson.loads(orjson.dumps(state))), q)
    v1 = orjson.loads(v2) | {"v": 1, "seen": ["0123456789ab", "ba9876543210"]}
    from_v1 = Profile.from_dict(v1)
    assert from_v1.seen == ["0123456789ab", "ba9876543210"]
    stored = from_v1.to_bytes(5)
    assert orjson.loads(stored)["v"] == JSON_STORED_VERSION  # v4 cannot hold v1 keys: stored as v3
    assert Profile.from_stored(stored)[1] == 5
    again = Profile.from_bytes(stored)  # v1 keys are kept as a list, not packed
    assert again.seen == from_v1.seen and _same(again, from_v1)


def test_stored_form_keeps_unusual_values_exactly() -> None:
    p = Profile()
    assert Profile.from_bytes(p.to_bytes()).to_dict() == p.to_dict()
    p.apply(make("offer_click", T0, offer_id="solo"))  # a click without an impression
    p.apply(make("purchase", T0 + MIN, items=[item("s1", "shoes", 12.5)], channel="store"))
    p.apply(make("return", T0 + 2 * MIN, items=[item("s1", "shoes", 12.5)]))
    p.offers["hand"] = [1, 0, 0, 0, T0, T0 // DAY_MS + 3, 2]  # day not that of the last impression
    p.counts["page_view"] = [float("-inf"), 0.0, 0.0, 0.0]
    again = Profile.from_bytes(p.to_bytes())
    assert _same(again, p) and again.returns == p.returns and again.spend == p.spend


def expected_buys(applied: list[Event]) -> tuple[int | None, list[int]]:
    """The batch answer for the purchase history: the first purchase and the savings [cents off,
    coupon cents off, purchases with a coupon saving]."""
    purchases = [e for e in applied if e.type == "purchase"]
    savings = [0, 0, 0]
    for e in purchases:
        saved = sum(round(i.get("discount", 0.0) * 100) for i in e.get("items"))
        coupons = sum(round(i.get("coupon_discount", 0.0) * 100) for i in e.get("items"))
        savings = [savings[0] + saved, savings[1] + coupons, savings[2] + (coupons > 0)]
    return min((e.ts for e in purchases), default=None), savings


@settings(max_examples=60, deadline=None)
@given(event_lists())
def test_purchase_history_matches_batch_after_each_step(evs: list[Event]) -> None:
    p = Profile()
    applied: list[Event] = []
    for e in evs:
        p.apply(e)
        applied.append(e)
        assert (p.first_purchase_ts, p.savings) == expected_buys(applied)


def test_profiles_stored_before_the_purchase_history_still_read() -> None:
    p = Profile()
    p.apply(make("purchase", T0, items=[item("a", "x")]))
    old = p.to_dict()
    for name in ("first_purchase_ts", "savings"):
        del old[name]
    again = Profile.from_dict(orjson.loads(orjson.dumps(old)))
    assert again.first_purchase_ts is None and again.savings == [0, 0, 0]
    assert again.categories == p.categories and again.to_bytes()[0] == SCHEMA_VERSION
