"""The one feature vector: shape, order, and what a missing profile zeroes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from models.catalog import parse_offer
from models.errors import InvalidRequest
from models.events import parse_event
from models.features import (
    CUSTOMER_FEATURES,
    FEATURE_INDEX,
    FEATURE_NAMES,
    PAIR_FEATURES,
    Context,
    OfferSetCache,
    customer_features,
    parse_context,
    vectorize,
)
from models.profile import DAY_MS, Profile

NOW = 1_714_557_600_000  # Wednesday 2024-05-01T10:00:00Z
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
CUST = [F[n] for n in CUSTOMER_FEATURES]
PAIR = [F[n] for n in PAIR_FEATURES]

OFFERS = [
    parse_offer({"offer_id": "o_shoes", "category": "shoes", "kind": "discount", "discount_pct": 20}),
    parse_offer({"offer_id": "o_bags", "category": "bags", "kind": "partner"}),
    parse_offer({"offer_id": "o_toys", "category": "toys", "kind": "loyalty",
                 "valid_from": NOW - 2 * DAY_MS, "valid_to": NOW + 5 * DAY_MS}),
]


def profile() -> Profile:
    p = Profile()
    n = 0

    def apply(etype: str, ts: int, **fields: Any) -> None:
        nonlocal n
        n += 1
        p.apply(parse_event({"event_id": f"e{n}", "type": etype, "customer_id": "c", "ts": ts, **fields}))

    for _ in range(3):
        apply("page_view", NOW - 3_600_000, category="shoes")
    apply("page_view", NOW - 3_600_000, category="bags")
    apply("add_to_cart", NOW - 600_000, item_id="s1", category="shoes", price=30.0, quantity=1)
    apply("offer_impression", NOW - 300_000, offer_id="o_shoes")
    apply("offer_impression", NOW - 200_000, offer_id="o_shoes")
    apply("offer_click", NOW - 100_000, offer_id="o_shoes")
    apply("purchase", NOW - 2 * DAY_MS, items=[{"item_id": "x", "category": "toys", "price": 10.0}],
          channel="store", total=10.0)
    return p


def test_feature_names_are_unique_and_blocks_ordered() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_NAMES[: len(CUSTOMER_FEATURES)] == CUSTOMER_FEATURES
    assert FEATURE_NAMES[0] == "personalized"


#: schema 2, as the registry's ONNX models read it: a change here needs a new FEATURE_SCHEMA_VERSION
SCHEMA_2 = (
    "personalized", "views_1h", "views_1d", "views_30d", "carts_1d", "carts_30d", "purchases_1d",
    "purchases_30d", "impressions_30d", "clicks_30d", "redeems_30d", "hours_since_event",
    "days_since_purchase", "session_events", "cart_items", "cart_value", "orders_total", "spend_total",
    "spend_30d", "store_share",
    "cat_affinity_1d", "cat_affinity_30d", "cart_has_category", "offer_impressions", "offer_clicks",
    "offer_redeems", "offer_seen_today", "days_since_offer_seen",
    "discount", "kind_discount", "kind_bundle", "kind_loyalty", "kind_third_party", "kind_other",
    "popularity_rate", "popularity_log_n", "offer_days_live", "offer_days_left",
    "hour_sin", "hour_cos", "is_weekend", "ctx_web", "ctx_app", "ctx_store", "ctx_category_match",
    "ctx_offer_affinity", "ctx_position",
)


#: schema 3 = schema 2 plus the full purchase history (issue 14): six customer columns after
#: ``store_share``; the offer category's recency and the offer's weighted categories against the
#: customer's category profile after ``cart_has_category``
SCHEMA_3 = (
    SCHEMA_2[:20]
    + ("avg_order_value", "days_between_purchases", "purchase_overdue", "discount_share",
       "coupon_share", "coupon_purchase_share")
    + SCHEMA_2[20:23] + ("days_since_cat", "offer_category_affinity") + SCHEMA_2[23:]
)


def test_the_feature_order_is_schema_3_and_every_column_is_read_from_it() -> None:
    from models.features import FEATURE_SCHEMA_VERSION

    assert (FEATURE_SCHEMA_VERSION, FEATURE_NAMES) == (3, SCHEMA_3)
    assert dict(FEATURE_INDEX) == {name: i for i, name in enumerate(SCHEMA_3)}
    with pytest.raises(TypeError):
        FEATURE_INDEX["personalized"] = 1  # type: ignore[index]  # read-only


def test_a_block_that_is_not_side_by_side_in_feature_names_is_refused() -> None:
    from models import features

    assert features._columns(("hour_sin", "hour_cos")) == slice(F["hour_sin"], F["hour_cos"] + 1)
    for names in (("hour_cos", "hour_sin"), ("views_1h", "views_30d"), ("ctx_position", "hour_sin")):
        with pytest.raises(RuntimeError, match="not adjacent"):
            features._columns(names)


def test_each_block_builder_places_every_value_under_its_name() -> None:
    """The row builders key their values by name: each lands in the column FEATURE_INDEX gives."""
    from models import features

    prof, offer = profile(), OFFERS[2]
    context = Context(channel="app", category="toys", offer_affinity={"o_toys": 0.5}, position=2)
    row = features.vectorize_rows(prof, [offer], context, NOW, {"o_toys": (0.25, 3.0)})[0]
    by_name = {name: float(row[F[name]]) for name in FEATURE_NAMES}
    assert by_name["ctx_app"] == 1.0 and by_name["ctx_web"] == by_name["ctx_store"] == 0.0
    assert by_name["ctx_category_match"] == 1.0 and by_name["ctx_offer_affinity"] == 0.5
    assert by_name["ctx_position"] == 2.0 and by_name["kind_loyalty"] == 1.0
    assert (by_name["popularity_rate"], by_name["popularity_log_n"]) == (0.25, 3.0)
    assert by_name["offer_days_live"] == pytest.approx(math.log1p(2.0))
    assert by_name["offer_days_left"] == pytest.approx(math.log1p(5.0))
    assert by_name["personalized"] == 1.0 and by_name["store_share"] == 1.0
    assert by_name["days_since_purchase"] == pytest.approx(math.log1p(2.0), rel=1e-6)


def test_the_purchase_history_features() -> None:
    """Frequency, monetary value, rhythm, savings and the offer's categories, by hand."""
    from models import features

    p = Profile()
    items = [{"item_id": "a", "category": "toys", "price": 6.0, "quantity": 1, "discount": 1.0},
             {"item_id": "b", "category": "shoes", "price": 2.0, "quantity": 2, "coupon_discount": 2.0}]
    for i, ts in enumerate((NOW - 10 * DAY_MS, NOW - 6 * DAY_MS, NOW - 2 * DAY_MS)):
        p.apply(parse_event({"event_id": f"p{i}", "type": "purchase", "customer_id": "c", "ts": ts,
                             "items": items[: 1 + (i == 2)], "channel": "store"}))
    row = features.vectorize_rows(p, [OFFERS[2]], Context(), NOW)[0]  # o_toys, category toys
    got = {name: float(row[F[name]]) for name in FEATURE_NAMES}
    assert got["avg_order_value"] == pytest.approx(math.log1p((6 + 6 + 10) / 3))
    assert got["days_between_purchases"] == pytest.approx(math.log1p(4.0))
    assert got["purchase_overdue"] == pytest.approx(math.log1p(2.0 / 4.0))
    gross = 2200 + 300 + 200  # cents paid, cut by price reductions, cut by coupons
    assert got["discount_share"] == pytest.approx(300 / gross)
    assert got["coupon_share"] == pytest.approx(200 / gross)
    assert got["coupon_purchase_share"] == pytest.approx(1 / 3)
    assert got["days_since_cat"] == pytest.approx(math.log1p(2.0))
    assert got["offer_category_affinity"] == got["cat_affinity_30d"]  # one category: its affinity
    mixed = parse_offer({"offer_id": "o_mix", "category": "toys",
                         "attributes": {"categories": {"toys": 1, "shoes": 2, "bags": 1, "x": "no"}}})
    rows = features.vectorize(p, [mixed, OFFERS[2], OFFERS[1]], Context(), NOW)
    assert np.array_equal(rows, features.vectorize_rows(p, [mixed, OFFERS[2], OFFERS[1]], Context(), NOW))
    toys, shoes = p.category_affinity("toys", 1, NOW), p.category_affinity("shoes", 1, NOW)
    assert float(rows[0, F["offer_category_affinity"]]) == pytest.approx((toys + 2 * shoes) / 4, rel=1e-6)
    other = features.vectorize_rows(p, [OFFERS[1]], Context(), NOW)[0]  # bags: never seen
    assert float(other[F["days_since_cat"]]) == pytest.approx(math.log1p(features.NEVER_HOURS))
    assert float(other[F["offer_category_affinity"]]) == 0.0


@pytest.mark.parametrize("p", [None, "profile"])
def test_shape_dtype_and_order(p: Any) -> None:
    prof = profile() if p else None
    X = vectorize(prof, OFFERS, Context(), NOW)
    assert X.shape == (len(OFFERS), len(FEATURE_NAMES)) and X.dtype == np.float32
    assert np.all(np.isfinite(X))
    # rows follow the offers' order
    assert X[:, F["discount"]].tolist() == pytest.approx([0.2, 0.0, 0.0])
    assert X[:, F["kind_discount"]].tolist() == [1.0, 0.0, 0.0]
    assert X[:, F["kind_third_party"]].tolist() == [0.0, 1.0, 0.0]
    assert X[:, F["kind_loyalty"]].tolist() == [0.0, 0.0, 1.0]
    assert vectorize(prof, list(reversed(OFFERS)), Context(), NOW).tolist() == X[::-1].tolist()


def test_no_offers_gives_an_empty_matrix() -> None:
    X = vectorize(profile(), [], Context(), NOW)
    assert X.shape == (0, len(FEATURE_NAMES)) and X.dtype == np.float32


def test_without_profile_customer_and_pair_features_are_exactly_zero() -> None:
    X = vectorize(None, OFFERS, Context(channel="app", category="shoes"), NOW, {"o_shoes": (0.3, 2.0)})
    assert np.all(X[:, CUST] == 0.0) and np.all(X[:, PAIR] == 0.0)
    assert np.all(X[:, F["personalized"]] == 0.0)
    assert customer_features(None, NOW) == [0.0] * len(CUSTOMER_FEATURES)
    # offer and context features still work
    assert X[0, F["popularity_rate"]] == pytest.approx(0.3) and X[0, F["popularity_log_n"]] == 2.0
    assert X[0, F["ctx_category_match"]] == 1.0 and X[1, F["ctx_category_match"]] == 0.0
    assert X[:, F["ctx_app"]].tolist() == [1.0] * 3


def test_with_profile_customer_block_is_the_same_for_every_row() -> None:
    X = vectorize(profile(), OFFERS, Context(), NOW)
    assert np.all(X[:, F["personalized"]] == 1.0)
    assert np.array_equal(X[:, CUST], np.repeat(X[:1, CUST], len(OFFERS), axis=0))
    assert np.any(X[:, CUST] != 0.0)


def test_category_affinity_features_for_a_known_profile() -> None:
    p = profile()
    X = vectorize(p, OFFERS, Context(), NOW)
    # 30-day weights: shoes 3 page views + 1 add_to_cart (x3), bags 1 view, toys 1 purchase (x5)
    h1, h30 = DAY_MS, 30 * DAY_MS

    def w(dt: float, h: float) -> float:
        return 2 ** (-dt / h)

    for h, name in ((h1, "cat_affinity_1d"), (h30, "cat_affinity_30d")):
        shoes = 3 * w(3_600_000, h) + 3 * w(600_000, h)
        bags = w(3_600_000, h)
        toys = 5 * w(2 * DAY_MS, h)
        total = shoes + bags + toys
        assert X[:, F[name]].tolist() == pytest.approx([shoes / total, bags / total, toys / total], rel=1e-6)
    assert X[:, F["cart_has_category"]].tolist() == [1.0, 0.0, 0.0]
    assert X[0, F["offer_impressions"]] == pytest.approx(math.log1p(2))
    assert X[0, F["offer_clicks"]] == pytest.approx(math.log1p(1))
    assert X[0, F["offer_seen_today"]] == 2.0 and X[1, F["offer_seen_today"]] == 0.0
    assert X[0, F["cart_value"]] == pytest.approx(math.log1p(30.0))
    assert X[0, F["store_share"]] == 1.0
    assert X[0, F["days_since_purchase"]] == pytest.approx(math.log1p(2.0))


def test_context_features() -> None:
    X = vectorize(None, OFFERS, Context(channel="store", offer_affinity={"o_bags": 0.7}), NOW)
    hour = 10.0
    assert X[0, F["hour_sin"]] == pytest.approx(math.sin(2 * math.pi * hour / 24), abs=1e-6)
    assert X[0, F["hour_cos"]] == pytest.approx(math.cos(2 * math.pi * hour / 24), abs=1e-6)
    assert X[0, F["is_weekend"]] == 0.0
    assert vectorize(None, OFFERS, Context(), NOW + 3 * DAY_MS)[0, F["is_weekend"]] == 1.0  # Saturday
    assert X[:, F["ctx_store"]].tolist() == [1.0] * 3 and X[:, F["ctx_web"]].tolist() == [0.0] * 3
    assert X[:, F["ctx_offer_affinity"]].tolist() == pytest.approx([0.0, 0.7, 0.0])
    assert X[2, F["offer_days_live"]] == pytest.approx(math.log1p(2.0))
    assert X[2, F["offer_days_left"]] == pytest.approx(math.log1p(5.0))
    assert X[:, F["ctx_position"]].tolist() == [0.0] * 3  # no slot given reads as slot 0


def test_position_is_the_context_slot_for_every_candidate() -> None:
    from models.features import vectorize_rows

    context = Context(position=2)
    for build in (vectorize, vectorize_rows):
        assert build(None, OFFERS, context, NOW)[:, F["ctx_position"]].tolist() == [2.0] * 3
    assert FEATURE_NAMES[-1] == "ctx_position"  # appended: older columns keep their index


def test_parse_context_defaults_and_values() -> None:
    assert parse_context(None) == Context()
    ctx = parse_context({"channel": "app", "category": "shoes", "offer_affinity": {"o1": 1, "o2": 0.5}})
    assert (ctx.channel, ctx.category, dict(ctx.offer_affinity)) == ("app", "shoes", {"o1": 1, "o2": 0.5})
    assert ctx.position is None and parse_context({"position": 1}).position == 1


@pytest.mark.parametrize(
    "body, field",
    [([], "context"), ("web", "context"), ({"channel": "tv"}, "context.channel"),
     ({"channel": None}, "context.channel"), ({"category": 5}, "context.category"),
     ({"offer_affinity": []}, "context.offer_affinity"), ({"offer_affinity": {"o1": "1"}}, "context.offer_affinity"),
     ({"offer_affinity": {"o1": True}}, "context.offer_affinity"),
     ({"offer_affinity": {"o1": float("nan")}}, "context.offer_affinity"),
     ({"position": -1}, "context.position"), ({"position": 1.5}, "context.position"),
     ({"position": True}, "context.position"), ({"position": "0"}, "context.position")],
)
def test_parse_context_errors_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_context(body)
    assert info.value.field == field


def test_vectorize_equals_its_row_by_row_definition() -> None:
    import random

    from models.catalog import parse_offer
    from models.events import parse_event
    from models.features import _vectorize_columns, vectorize_rows
    from models.profile import Profile

    rng = random.Random(11)
    cats = ["shoes", "hats", "bags", "socks"]
    kinds = ["discount", "bundle", "loyalty", "partner", "sponsored", "other"]
    t0 = 1_700_000_000_000
    offers = [parse_offer({"offer_id": f"o{i}", "category": rng.choice(cats), "kind": rng.choice(kinds),
                           "discount_pct": rng.randint(0, 50),
                           **({"valid_from": t0 - rng.randint(0, 10**9)} if i % 3 else {}),
                           **({"valid_to": t0 + rng.randint(0, 10**9)} if i % 4 else {})})
              for i in range(60)]
    stats = {f"o{i}": (rng.random(), rng.random() * 5) for i in range(0, 60, 2)}
    for trial in range(20):
        profile = Profile()
        for j in range(rng.randint(0, 40)):
            kind = rng.choice(["product_view", "add_to_cart", "offer_impression", "offer_click"])
            extra = ({"offer_id": f"o{rng.randrange(60)}"} if kind.startswith("offer") else
                     {"item_id": f"i{j}", "category": rng.choice(cats), "price": 5.0})
            profile.apply(parse_event({"event_id": f"{trial}-{j}", "type": kind, "customer_id": "c",
                                       "ts": t0 - rng.randint(0, 10**8), **extra}))
        context = Context(channel=rng.choice(["web", "app", "store"]), category=rng.choice([None, *cats]),
                          offer_affinity={"o3": 0.5} if trial % 2 else {},
                          position=rng.choice([None, 0, 1, 2]))
        subset = rng.sample(offers, rng.randint(0, 60))
        for used in (profile, None):
            fast = vectorize(used, subset, context, t0, stats)
            slow = vectorize_rows(used, subset, context, t0, stats)
            np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-7)
            for offer in subset[:3]:  # one offer goes to vectorize_rows; the numpy path agrees
                np.testing.assert_allclose(_vectorize_columns(used, [offer], context, t0, stats),
                                           vectorize(used, [offer], context, t0, stats),
                                           rtol=1e-6, atol=1e-7)
        stats[f"o{rng.randrange(60)}"] = (rng.random(), rng.random())  # updated in place, as replay does


# ---- the per-candidate-set cache (models.features.OfferSetCache, owned by its caller) --------------


def _exact(fast: np.ndarray, offers: list[Any], prof: Profile | None, context: Context, now: int,
           stats: dict[str, tuple[float, float]] | None = None) -> None:
    """``vectorize`` equals its row-by-row definition (the same tolerance as the random test above)."""
    from models.features import vectorize_rows

    slow = vectorize_rows(prof, offers, context, now, stats)
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-7)


def test_an_offer_updated_with_the_same_id_is_never_scored_with_its_old_columns() -> None:
    from models import features

    sets = features.OfferSetCache()
    offers = list(OFFERS)
    before = vectorize(None, offers, Context(), NOW, offer_sets=sets)
    assert sets.get(offers) is sets.get(list(OFFERS))  # cached: same objects
    updated = parse_offer({"offer_id": "o_bags", "category": "shoes", "kind": "discount", "discount_pct": 70,
                           "valid_from": NOW - DAY_MS, "valid_to": NOW + DAY_MS})
    offers[1] = updated
    after = vectorize(None, offers, Context(category="shoes"), NOW, offer_sets=sets)
    _exact(after, offers, None, Context(category="shoes"), NOW)
    assert after[1, F["discount"]] == pytest.approx(0.7) and after[1, F["kind_discount"]] == 1.0
    assert after[1, F["kind_third_party"]] == 0.0 and after[1, F["ctx_category_match"]] == 1.0
    assert after[1, F["offer_days_live"]] == pytest.approx(math.log1p(1.0))
    assert before[1, F["discount"]] == 0.0 and before[1, F["kind_third_party"]] == 1.0
    # the old objects still give the old rows (nothing was overwritten in place)
    assert np.array_equal(vectorize(None, list(OFFERS), Context(), NOW, offer_sets=sets), before)
    assert len(sets) == 2


def test_a_removed_offer_leaves_the_others_rows_unchanged() -> None:
    prof = profile()
    full = vectorize(prof, OFFERS, Context(), NOW)
    rest = [OFFERS[0], OFFERS[2]]
    X = vectorize(prof, rest, Context(), NOW)
    _exact(X, rest, prof, Context(), NOW)
    assert np.array_equal(X, full[[0, 2]])


def test_cached_set_with_and_without_a_profile_and_changing_context() -> None:
    prof, sets = profile(), OfferSetCache()
    contexts = [Context(), Context(channel="app", category="toys", position=3),
                Context(category="shoes", offer_affinity={"o_toys": 2, "o_shoes": 0.25, "other": 9.0}, position=0),
                Context(channel="store", offer_affinity={"o_bags": 1.5})]
    for _ in range(2):  # the second round reads every set from the cache
        for context in contexts:
            for used in (prof, None, prof):  # consent off -> profile None, then on again
                X = vectorize(used, OFFERS, context, NOW, {"o_toys": (0.4, 1.0)}, sets)
                _exact(X, OFFERS, used, context, NOW, {"o_toys": (0.4, 1.0)})
                if used is None:
                    assert np.all(X[:, CUST] == 0.0) and np.all(X[:, PAIR] == 0.0)
                assert X[:, F["ctx_position"]].tolist() == [float(context.position or 0)] * 3
    X = vectorize(None, OFFERS, contexts[2], NOW)
    assert X[:, F["ctx_offer_affinity"]].tolist() == [0.25, 0.0, 2.0]
    assert X[:, F["ctx_category_match"]].tolist() == [1.0, 0.0, 0.0]
    assert vectorize(None, OFFERS, Context(), NOW)[:, F["ctx_offer_affinity"]].tolist() == [0.0] * 3


def test_the_returned_matrix_is_a_copy_not_the_cached_template() -> None:
    sets = OfferSetCache()
    X = vectorize(profile(), OFFERS, Context(), NOW, offer_sets=sets)
    X[:] = 7.0
    again = vectorize(None, OFFERS, Context(), NOW, offer_sets=sets)
    _exact(again, OFFERS, None, Context(), NOW)


def test_popularity_updated_in_place_is_read_on_every_call() -> None:
    stats, sets = {"o_shoes": (0.1, 1.0)}, OfferSetCache()
    assert vectorize(None, OFFERS, Context(), NOW, stats, sets)[0, F["popularity_rate"]] == pytest.approx(0.1)
    stats["o_shoes"] = (0.9, 2.0)
    stats["o_toys"] = (0.5, 3.0)
    X = vectorize(None, OFFERS, Context(), NOW, stats, sets)
    assert X[:, F["popularity_rate"]].tolist() == pytest.approx([0.9, 0.0, 0.5])
    _exact(X, OFFERS, None, Context(), NOW, stats)


def test_validity_columns_follow_the_decision_time() -> None:
    sets = OfferSetCache()
    for now in (NOW, NOW + DAY_MS, NOW + 10 * DAY_MS, NOW - 5 * DAY_MS):
        X = vectorize(None, OFFERS, Context(), now, offer_sets=sets)
        _exact(X, OFFERS, None, Context(), now)


def test_an_offer_id_twice_gives_both_rows_their_own_history() -> None:
    prof = profile()
    twice = [OFFERS[0], OFFERS[1], OFFERS[0]]
    X = vectorize(prof, twice, Context(offer_affinity={"o_shoes": 1.0}), NOW)
    _exact(X, twice, prof, Context(offer_affinity={"o_shoes": 1.0}), NOW)
    assert np.array_equal(X[0], X[2]) and X[2, F["offer_impressions"]] == pytest.approx(math.log1p(2))


def test_the_cache_is_bounded() -> None:
    sets = OfferSetCache(max_sets=4, max_set_size=50, max_offers=7)
    kept = []
    for i in range(12):
        offers = [parse_offer({"offer_id": f"b{i}-{j}", "category": "c", "kind": "other"}) for j in range(2)]
        kept.append(offers)
        vectorize(None, offers, Context(), NOW, offer_sets=sets)
        assert len(sets) <= 4 and len(sets._rows) <= 7
    assert sets.get(kept[-1]) is sets.get(kept[-1]) and sets.get(kept[0]) is not sets.get(kept[0][:1])
    big = [parse_offer({"offer_id": f"big{j}", "category": "c"}) for j in range(51)]
    keys = set(sets._sets)
    X = vectorize(None, big, Context(), NOW, offer_sets=sets)
    assert X.shape == (len(big), len(FEATURE_NAMES))
    _exact(X, big, None, Context(), NOW)
    assert set(sets._sets) == keys  # too big to keep


def test_the_cache_is_its_callers_alone() -> None:
    """No state is shared between caches or kept without one: each owner sees only its own sets."""
    from models import features

    mine, yours = OfferSetCache(), OfferSetCache()
    assert mine.get(OFFERS) is mine.get(list(OFFERS)) is not yours.get(OFFERS)
    assert (len(mine), len(yours)) == (1, 1)
    assert features.OfferSet(tuple(OFFERS)) is not features.OfferSet(tuple(OFFERS))
    vectorize(None, OFFERS, Context(), NOW)  # no cache given: nothing kept anywhere
    assert (len(mine), len(yours)) == (1, 1)
    mutable = [name for name, value in vars(features).items()
               if isinstance(value, dict | list | set) and not name.startswith("__")]
    assert mutable == ["IMPLIED_REQUIREMENTS"]  # models.catalog's constant table, imported


def test_the_cache_least_recently_used_goes_first() -> None:
    sets = OfferSetCache(max_sets=2)
    a, b, c = ([parse_offer({"offer_id": f"{x}{j}", "category": "c"}) for j in range(2)] for x in "abc")
    first_a = sets.get(a)
    sets.get(b)
    assert sets.get(a) is first_a  # a used again: b is now the oldest
    sets.get(c)
    assert sets.get(a) is first_a and len(sets) == 2


def test_cached_path_equals_the_definition_under_catalogue_churn() -> None:
    import random

    from models.events import parse_event

    rng = random.Random(5)
    cats = ["shoes", "hats", "bags", "socks"]
    kinds = ["discount", "bundle", "loyalty", "partner", "sponsored", "other"]

    def offer(i: int, version: int) -> Any:
        return parse_offer({"offer_id": f"o{i}", "title": f"v{version}", "category": rng.choice(cats),
                            "kind": rng.choice(kinds), "discount_pct": rng.randint(0, 50),
                            **({"valid_from": NOW - rng.randint(-DAY_MS, 10 * DAY_MS)} if rng.random() < .3 else {}),
                            **({"valid_to": NOW + rng.randint(2 * DAY_MS, 10 * DAY_MS)} if rng.random() < .3 else {})})

    catalogue = {f"o{i}": offer(i, 0) for i in range(40)}
    sets = OfferSetCache(max_sets=4)  # small: the churn also evicts
    prof = Profile()
    for j in range(60):
        kind = rng.choice(["product_view", "add_to_cart", "offer_impression", "offer_click"])
        extra = ({"offer_id": f"o{rng.randrange(45)}"} if kind.startswith("offer") else
                 {"item_id": f"i{j}", "category": rng.choice(cats), "price": 5.0})
        prof.apply(parse_event({"event_id": f"e{j}", "type": kind, "customer_id": "c",
                                "ts": NOW - rng.randint(0, 2 * DAY_MS), **extra}))
    for trial in range(60):
        for _ in range(rng.randint(0, 3)):  # updates (same id, new object) and removals
            i = rng.randrange(45)
            if rng.random() < .3:
                catalogue.pop(f"o{i}", None)
            else:
                catalogue[f"o{i}"] = offer(i, trial)
        offers = sorted(catalogue.values(), key=lambda o: o.offer_id) if trial % 2 else list(catalogue.values())
        context = Context(channel=rng.choice(["web", "app", "store"]), category=rng.choice([None, *cats]),
                          offer_affinity={f"o{rng.randrange(45)}": rng.random()} if trial % 3 else {},
                          position=rng.choice([None, 0, 2]))
        now = NOW + rng.randint(-DAY_MS, DAY_MS)
        for used in (prof, None):
            _exact(vectorize(used, offers, context, now, offer_sets=sets), offers, used, context, now)
