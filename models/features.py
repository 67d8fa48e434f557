"""The one feature vector: names, order and float32 dtype for (customer, offer, context).

:func:`vectorize` is the only place a feature row is built. Training matrices, the online row and
the ONNX input all come from it, so there is no training/serving skew by construction (and
``tests/parity`` checks it). Without ``personalize`` consent the caller passes ``profile=None``:
every customer and customer-x-offer feature is then exactly zero and ``personalized`` is 0, so the
model can rank by offer, popularity and context only.

Examples
--------
>>> from models.catalog import parse_offer
>>> offers = [parse_offer({"offer_id": "o1", "category": "shoes", "kind": "discount", "discount_pct": 10})]
>>> X = vectorize(None, offers, Context(channel="web"), 1_700_000_000_000)
>>> X.shape == (1, len(FEATURE_NAMES)), X.dtype.name
(True, 'float32')
>>> float(X[0, FEATURE_INDEX["personalized"]]), round(float(X[0, FEATURE_INDEX["discount"]]), 6)
(0.0, 0.1)

A caller that vectorizes the same candidates again and again (the score route, a replay) owns an
:class:`OfferSetCache` and passes it as ``offer_sets``; nothing is cached across callers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from models.catalog import IMPLIED_REQUIREMENTS, Offer
from models.decay import value_at
from models.errors import InvalidRequest
from models.events import CHANNELS
from models.profile import CATEGORY_HALF_LIVES_MS, DAY_MS, HOUR_MS, Profile

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "FEATURE_NAMES",
    "FEATURE_INDEX",
    "CUSTOMER_FEATURES",
    "Context",
    "parse_context",
    "vectorize",
    "vectorize_rows",
    "customer_features",
    "OfferSet",
    "OfferSetCache",
    "offer_category_weights",
    "vectorize_set",
]

#: 2: ``ctx_position`` (the page slot an offer is shown in) appended to the context block.
#: 3: the full purchase history: basket value, time between purchases, discount and coupon
#: shares (customer block); the recency of the offer's category and the offer's weighted
#: categories against the customer's category profile (pair block).
FEATURE_SCHEMA_VERSION = 3
BROWSE_TYPES = ("page_view", "product_view", "search")
NEVER_HOURS = 1e5  # "never happened" reads as a very long time ago, not as zero

CUSTOMER_FEATURES = (
    "personalized",
    "views_1h", "views_1d", "views_30d",
    "carts_1d", "carts_30d",
    "purchases_1d", "purchases_30d",
    "impressions_30d", "clicks_30d", "redeems_30d",
    "hours_since_event", "days_since_purchase",
    "session_events",
    "cart_items", "cart_value",
    "orders_total", "spend_total", "spend_30d", "store_share",
    "avg_order_value", "days_between_purchases", "purchase_overdue",
    "discount_share", "coupon_share", "coupon_purchase_share",
)
PAIR_FEATURES = (
    "cat_affinity_1d", "cat_affinity_30d", "cart_has_category",
    "days_since_cat", "offer_category_affinity",
    "offer_impressions", "offer_clicks", "offer_redeems", "offer_seen_today", "days_since_offer_seen",
)
OFFER_FEATURES = (
    "discount", "kind_discount", "kind_bundle", "kind_loyalty", "kind_third_party", "kind_other",
    "popularity_rate", "popularity_log_n", "offer_days_live", "offer_days_left",
)
CONTEXT_FEATURES = (
    "hour_sin", "hour_cos", "is_weekend", "ctx_web", "ctx_app", "ctx_store",
    "ctx_category_match", "ctx_offer_affinity", "ctx_position",
)
FEATURE_NAMES: tuple[str, ...] = CUSTOMER_FEATURES + PAIR_FEATURES + OFFER_FEATURES + CONTEXT_FEATURES
#: ``name -> column``: every column position in this module is read from it or from :func:`_columns`.
FEATURE_INDEX: Mapping[str, int] = MappingProxyType({name: i for i, name in enumerate(FEATURE_NAMES)})


def _columns(names: tuple[str, ...]) -> slice:
    """The columns of ``names``, which code fills as one block, in this order.

    Raises at import if ``FEATURE_NAMES`` does not hold them side by side in that order, so that a
    feature added or moved into a block fails loudly instead of shifting its neighbours' values.
    """
    start = FEATURE_INDEX[names[0]]
    if FEATURE_NAMES[start:start + len(names)] != names:
        raise RuntimeError(f"{names} are not adjacent, in this order, in FEATURE_NAMES")
    return slice(start, start + len(names))


# Groups written as one block, each in the order its values are produced below.
_OFFER_OWN = ("discount", "kind_discount", "kind_bundle", "kind_loyalty", "kind_third_party", "kind_other")
_POPULARITY = ("popularity_rate", "popularity_log_n")  # the order of an ``offer_stats`` value
_PAGE = ("hour_sin", "hour_cos", "is_weekend", "ctx_web", "ctx_app", "ctx_store")  # same for every offer
_PAGE_AND_OFFER = ("ctx_category_match", "ctx_offer_affinity", "ctx_position")
_CATEGORY_PAIR = ("cat_affinity_1d", "cat_affinity_30d", "cart_has_category",  # per category
                  "days_since_cat")
_OFFER_HISTORY = ("offer_impressions", "offer_clicks", "offer_redeems", "offer_seen_today", "days_since_offer_seen")

_CUSTOMER_COLUMNS = _columns(CUSTOMER_FEATURES)
#: what :func:`vectorize_rows` writes per row: the pair, offer and context blocks, one after the other
_ROW_COLUMNS = _columns(PAIR_FEATURES + OFFER_FEATURES + _PAGE + _PAGE_AND_OFFER)
_OWN_COLUMNS = _columns(_OFFER_OWN)
_POPULARITY_COLUMNS = _columns(_POPULARITY)
_PAGE_COLUMNS = _columns(_PAGE)
_CATEGORY_PAIR_COLUMNS = _columns(_CATEGORY_PAIR)
_HISTORY_COLUMNS = _columns(_OFFER_HISTORY)
_DAYS_SINCE_SEEN = FEATURE_INDEX["days_since_offer_seen"]
_DAYS_LIVE, _DAYS_LEFT = FEATURE_INDEX["offer_days_live"], FEATURE_INDEX["offer_days_left"]
_CATEGORY_MATCH, _OFFER_AFFINITY = FEATURE_INDEX["ctx_category_match"], FEATURE_INDEX["ctx_offer_affinity"]
_CAT_AFFINITY_30D, _OFFER_CATEGORY_AFFINITY = (FEATURE_INDEX["cat_affinity_30d"],
                                               FEATURE_INDEX["offer_category_affinity"])
_POSITION = FEATURE_INDEX["ctx_position"]
if _CUSTOMER_COLUMNS.stop != _ROW_COLUMNS.start or _ROW_COLUMNS.stop != len(FEATURE_NAMES):
    raise RuntimeError("the customer block and the per-row blocks must cover FEATURE_NAMES")

# A block's values are built keyed by feature name and read out in the block's order.
_CUSTOMER_ORDER = operator.itemgetter(*CUSTOMER_FEATURES)
_PAIR_ORDER = operator.itemgetter(*PAIR_FEATURES)
_OFFER_ORDER = operator.itemgetter(*OFFER_FEATURES)
_OWN_ORDER = operator.itemgetter(*_OFFER_OWN)
_PAGE_ORDER = operator.itemgetter(*_PAGE)
_PAGE_AND_OFFER_ORDER = operator.itemgetter(*_PAGE_AND_OFFER)


@dataclass(frozen=True, slots=True)
class Context:
    """What the shop tells us about the page: channel, the category shown, its own affinities,
    and the slot (0-based ``position``) the offers will be shown in; no slot reads as slot 0."""

    channel: str = "web"
    category: str | None = None
    offer_affinity: Mapping[str, float] = field(default_factory=dict)
    position: int | None = None


def parse_context(obj: Any) -> Context:
    """Validate a score request's ``context`` (``None`` gives the default web context)."""
    if obj is None:
        return Context()
    if not isinstance(obj, dict):
        raise InvalidRequest("context", "must be an object {channel?, category?, offer_affinity?, "
                             "position?}")
    channel = obj.get("channel", "web")
    if channel not in CHANNELS:
        raise InvalidRequest("context.channel", f"must be one of {', '.join(CHANNELS)}")
    category = obj.get("category")
    if category is not None and not isinstance(category, str):
        raise InvalidRequest("context.category", "must be a string")
    affinity = obj.get("offer_affinity", {})
    if not isinstance(affinity, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in affinity.values()
    ):
        raise InvalidRequest("context.offer_affinity", "must map offer ids to finite numbers")
    position = obj.get("position")
    if position is not None and (not isinstance(position, int) or isinstance(position, bool)
                                 or position < 0):
        raise InvalidRequest("context.position", "must be a non-negative integer (0-based slot)")
    return Context(channel=channel, category=category, offer_affinity=affinity, position=position)


def _log(x: float) -> float:
    return math.log1p(max(x, 0.0))


def customer_features(profile: Profile | None, now_ms: int) -> list[float]:
    """The customer block in ``CUSTOMER_FEATURES`` order; all zeros (``personalized`` = 0) without a
    usable profile."""
    if profile is None:
        return [0.0] * len(CUSTOMER_FEATURES)
    c = profile.count
    views = [sum(c(t, i, now_ms) for t in BROWSE_TYPES) for i in range(3)]
    n_orders = sum(o[0] for o in profile.orders.values())
    store_orders = profile.orders.get("store", [0.0, 0.0])[0]
    since_event = (now_ms - profile.last_ts) / HOUR_MS if profile.last_ts is not None else NEVER_HOURS
    since_buy = (now_ms - profile.last_purchase_ts) / DAY_MS if profile.last_purchase_ts else NEVER_HOURS
    session_live = profile.last_ts is not None and now_ms - profile.session[1] <= 30 * 60 * 1000
    spend_total = sum(o[1] for o in profile.orders.values())
    return list(_CUSTOMER_ORDER({
        **_purchase_history(profile, n_orders, spend_total, since_buy),
        "personalized": 1.0,
        "views_1h": _log(views[0]), "views_1d": _log(views[1]), "views_30d": _log(views[2]),
        "carts_1d": _log(c("add_to_cart", 1, now_ms)), "carts_30d": _log(c("add_to_cart", 2, now_ms)),
        "purchases_1d": _log(c("purchase", 1, now_ms)), "purchases_30d": _log(c("purchase", 2, now_ms)),
        "impressions_30d": _log(c("offer_impression", 2, now_ms)), "clicks_30d": _log(c("offer_click", 2, now_ms)),
        "redeems_30d": _log(c("offer_redeem", 2, now_ms)),
        "hours_since_event": _log(since_event), "days_since_purchase": _log(since_buy),
        "session_events": _log(profile.session[2]) if session_live else 0.0,
        "cart_items": _log(sum(q for _c, _p, q in profile.cart.values())), "cart_value": _log(profile.cart_value()),
        "orders_total": _log(n_orders), "spend_total": _log(spend_total),
        "spend_30d": _log(profile.decayed_spend(now_ms)),
        "store_share": store_orders / n_orders if n_orders else 0.0,
    }))


def _purchase_history(profile: Profile, n_orders: float, spend_total: float,
                      since_buy: float) -> dict[str, float]:
    """The customer's full-history purchase features (frequency, monetary value, rhythm, and how
    much of what they buy is discounted or couponed), by feature name."""
    first, last = profile.first_purchase_ts, profile.last_purchase_ts
    gap = 0.0  # mean days between purchases; 0 until two are known
    if first is not None and last is not None and n_orders >= 2 and last > first:
        gap = (last - first) / DAY_MS / (n_orders - 1)
    saved, coupons, coupon_orders = profile.savings
    gross = spend_total * 100.0 + saved + coupons  # cents before any saving
    return {
        "avg_order_value": _log(spend_total / n_orders) if n_orders else 0.0,
        "days_between_purchases": _log(gap),
        "purchase_overdue": _log(since_buy / gap) if gap > 0.0 else 0.0,
        "discount_share": saved / gross if gross > 0.0 else 0.0,
        "coupon_share": coupons / gross if gross > 0.0 else 0.0,
        "coupon_purchase_share": min(coupon_orders / n_orders, 1.0) if n_orders else 0.0,
    }


def _days_since_categories(profile: Profile, now_ms: int) -> dict[str, float]:
    """``days_since_cat`` of every category the profile holds: the log days since the newest
    interest in it (a view, a cart or a purchase: the category cell's reference time)."""
    return {category: _log((now_ms - cell[0]) / DAY_MS) for category, cell in profile.categories.items()}


_LOG_NEVER_DAYS = math.log1p(NEVER_HOURS)  # a category never seen


def offer_category_weights(offer: Offer) -> tuple[tuple[str, float], ...]:
    """The offer's categories and their weights (summing to 1): ``attributes.categories``
    (``{category: weight}``, e.g. a coupon book's share of products per category; entries that
    are not a positive finite number are ignored) if it names any, else ``((category, 1.0),)``.

    >>> from models.catalog import parse_offer
    >>> offer_category_weights(parse_offer({"offer_id": "o", "category": "a",
    ...                                     "attributes": {"categories": {"a": 3, "b": 1}}}))
    (('a', 0.75), ('b', 0.25))
    """
    given = offer.attributes.get("categories") if offer.attributes else None
    if isinstance(given, dict):
        kept = [(c, float(w)) for c, w in given.items() if isinstance(c, str)
                and isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0]
        total = sum(w for _c, w in kept)
        if kept and total > 0:
            return tuple((c, w / total) for c, w in kept)
    return ((offer.category, 1.0),)


def _category_affinity(weights: tuple[tuple[str, float], ...],
                       affinities: Mapping[str, tuple[float, float]]) -> float:
    """``offer_category_affinity``: the customer's 30-day share of interest in each of the offer's
    categories, weighted by the offer's weights (:func:`offer_category_weights`)."""
    if len(weights) == 1:  # the usual offer: its category's cat_affinity_30d, the same float
        return affinities.get(weights[0][0], _NO_AFFINITY)[1]
    return sum(w * affinities.get(c, _NO_AFFINITY)[1] for c, w in weights)


_NO_AFFINITY = (0.0, 0.0)


def _affinities(profile: Profile, now_ms: int) -> dict[str, tuple[float, float]]:
    """``Profile.category_affinity`` at both half-lives for every category, computed once.

    The same arithmetic in the same order as the method (so bit-identical), but the totals are
    summed once per decision instead of once per offer: O(categories + offers), not their product.
    """
    cells = profile.categories
    out: dict[str, list[float]] = {c: [0.0, 0.0] for c in cells}
    for index, h in enumerate(CATEGORY_HALF_LIVES_MS):
        values = [value_at(cell, now_ms, index, h) for cell in cells.values()]
        total = sum(values)
        if total <= 0.0:
            continue
        for category, value in zip(cells, values, strict=True):
            out[category][index] = value / total
    return {c: (a[0], a[1]) for c, a in out.items()}


_NO_PAIR = (0.0,) * len(PAIR_FEATURES)


def _pair_features(profile: Profile | None, offer: Offer, now_ms: int, cart_cats: set[str],
                   affinities: Mapping[str, tuple[float, float]] | None = None,
                   days_since: Mapping[str, float] | None = None) -> tuple[float, ...]:
    """The customer-x-offer block of one row, in ``PAIR_FEATURES`` order."""
    if profile is None:
        return _NO_PAIR
    if days_since is None:
        days_since = _days_since_categories(profile, now_ms)
    rec = profile.offers.get(offer.offer_id)
    imp, click, redeem = (rec[0], rec[1], rec[2]) if rec else (0, 0, 0)
    since_seen = (now_ms - rec[4]) / DAY_MS if rec and rec[4] else NEVER_HOURS
    if affinities is None:
        affinities = _affinities(profile, now_ms)
    aff_1d, aff_30d = affinities.get(offer.category, (0.0, 0.0))
    return _PAIR_ORDER({
        "cat_affinity_1d": aff_1d, "cat_affinity_30d": aff_30d,
        "cart_has_category": 1.0 if offer.category in cart_cats else 0.0,
        "days_since_cat": days_since.get(offer.category, _LOG_NEVER_DAYS),
        "offer_category_affinity": _category_affinity(offer_category_weights(offer), affinities),
        "offer_impressions": _log(imp), "offer_clicks": _log(click), "offer_redeems": _log(redeem),
        "offer_seen_today": float(profile.impressions_today(offer.offer_id, now_ms)),
        "days_since_offer_seen": _log(since_seen),
    })


def _offer_values(offer: Offer, now_ms: int, stats: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The offer block of one row, by feature name."""
    rate, log_n = stats.get(offer.offer_id, (0.0, 0.0))  # _POPULARITY order
    kind = offer.kind
    live = (now_ms - offer.valid_from) / DAY_MS if offer.valid_from is not None else 365.0
    left = (offer.valid_to - now_ms) / DAY_MS if offer.valid_to is not None else 365.0
    return {
        "discount": offer.discount_pct / 100.0, "kind_discount": float(kind == "discount"),
        "kind_bundle": float(kind == "bundle"), "kind_loyalty": float(kind == "loyalty"),
        "kind_third_party": float(kind in ("partner", "sponsored")), "kind_other": float(kind == "other"),
        "popularity_rate": float(rate), "popularity_log_n": float(log_n),
        "offer_days_live": _log(live), "offer_days_left": _log(left),
    }


def _offer_features(offer: Offer, now_ms: int, stats: Mapping[str, Sequence[float]]) -> tuple[float, ...]:
    """The offer block of one row, in ``OFFER_FEATURES`` order."""
    return _OFFER_ORDER(_offer_values(offer, now_ms, stats))


def _context_features(context: Context, offer: Offer, page: tuple[float, ...]) -> tuple[float, ...]:
    """The context block of one row: ``page`` (from :func:`_context_base`), then ``_PAGE_AND_OFFER``."""
    return page + _PAGE_AND_OFFER_ORDER({
        "ctx_category_match": float(context.category is not None and context.category == offer.category),
        "ctx_offer_affinity": float(context.offer_affinity.get(offer.offer_id, 0.0)),
        "ctx_position": _position(context),
    })


def _position(context: Context) -> float:
    return float(context.position) if context.position is not None else 0.0


def _context_base(context: Context, now_ms: int) -> tuple[float, ...]:
    """The context columns that are the same for every offer of a request, in ``_PAGE`` order."""
    hour = (now_ms % DAY_MS) / HOUR_MS
    weekday = (now_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday (index 3, Monday = 0)
    return _PAGE_ORDER({
        "hour_sin": math.sin(2 * math.pi * hour / 24), "hour_cos": math.cos(2 * math.pi * hour / 24),
        "is_weekend": float(weekday >= 5), "ctx_web": float(context.channel == "web"),
        "ctx_app": float(context.channel == "app"), "ctx_store": float(context.channel == "store"),
    })


def vectorize(
    profile: Profile | None,
    offers: Sequence[Offer],
    context: Context,
    now_ms: int,
    offer_stats: Mapping[str, Sequence[float]] | None = None,
    offer_sets: OfferSetCache | None = None,
) -> np.ndarray:
    """Build the ``(len(offers), len(FEATURE_NAMES))`` float32 matrix for one decision.

    Parameters
    ----------
    profile : Profile or None
        The customer's profile, or ``None`` when it may not be used (no ``personalize``
        consent) or does not exist.
    offers : sequence of Offer
        The candidates, in the order their scores are wanted.
    context : Context
        The page the shop is showing.
    now_ms : int
        The decision time (event time in replay, wall clock online).
    offer_stats : mapping, optional
        ``offer_id -> (popularity_rate, log_n)`` from the model bundle.
    offer_sets : OfferSetCache, optional
        The caller's cache of candidate sets. Without one, the offers' own columns are built on
        every call (the same values, more CPU).

    Notes
    -----
    Column by column with numpy, from the candidates' :class:`OfferSet` (a copy of its template
    holds every column that depends only on the offers); per call only the profile, popularity,
    time and context columns are filled. Category affinities are looked up per category, and offer
    history is filled only for the offers the profile has seen. :func:`vectorize_rows` is the
    row-by-row definition it must equal (``tests/unit/test_features.py`` checks it); a single offer
    goes straight to it, which is ~35 % faster than the numpy path for one row (the replay
    vectorizes one impression at a time).
    """
    if len(offers) == 1:  # one row (a replayed impression): numpy's per-call overhead costs more
        return vectorize_rows(profile, offers, context, now_ms, offer_stats)
    return _vectorize_columns(profile, offers, context, now_ms, offer_stats, offer_sets)


def _vectorize_columns(profile: Profile | None, offers: Sequence[Offer], context: Context,
                       now_ms: int, offer_stats: Mapping[str, Sequence[float]] | None,
                       offer_sets: OfferSetCache | None = None) -> np.ndarray:
    """The numpy path of :func:`vectorize`, for any number of offers."""
    if not offers:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    candidates = OfferSet(tuple(offers)) if offer_sets is None else offer_sets.get(offers)
    if not candidates.unique:  # an offer id twice: rows keyed by id would collide; use the definition
        return vectorize_rows(profile, offers, context, now_ms, offer_stats)
    return vectorize_set(candidates, profile, context, now_ms, offer_stats)


_LOG_NEVER = _log(NEVER_HOURS)
_LOG_YEAR = math.log1p(365.0)  # offer_days_live / _left of an offer without that bound


class OfferSet:
    """Everything about a tuple of offers that depends only on the offers themselves, computed once.

    Kept by an :class:`OfferSetCache` under the identity of the offer objects. ``Offer`` is frozen
    and the catalogue replaces an updated offer by a new object, so a changed or removed offer gives a
    new key and is never matched with stale columns.

    Parameters
    ----------
    offers : tuple of Offer
        The candidates, in row order.
    static_row : callable, optional
        ``offer -> (_OFFER_OWN values..., valid_from, valid_to)`` (bounds as float ms, NaN = open);
        a cache passes its memoized one.

    Attributes
    ----------
    offers, ids, categories
        The offers in the given order, their ids and categories.
    unique : bool
        Every offer id occurs once (``row_of`` is then a complete index).
    row_of : dict
        ``offer_id -> row``.
    cat_rows : dict
        ``category -> list of rows``.
    template : ndarray
        ``(n, len(FEATURE_NAMES))`` float32 with the offer's own columns (discount, kind, and
        ``offer_days_live`` / ``offer_days_left`` where the offer has no bound) filled, zeros elsewhere.
    from_rows, from_ms, to_rows, to_ms
        Rows with a ``valid_from`` / ``valid_to`` bound and the bound (float64 epoch ms).
    bounded : list of int
        Rows with any validity bound (eligibility must compare them with the time).
    flag_groups : dict
        ``(requires, implied) -> rows``: the consent flags an offer needs, in the order
        :func:`models.catalog.ineligibility` checks them.
    capped : list of (int, int)
        ``(row, max_impressions_per_day)`` for the capped offers.
    weighted : list of (int, tuple)
        ``(row, offer_category_weights(offer))`` for the offers of several weighted categories.
    """

    __slots__ = ("offers", "ids", "categories", "n", "unique", "row_of", "cat_rows", "cat_names", "cat_code",
                 "weighted",
                 "template", "from_rows", "from_ms", "to_rows", "to_ms", "bounded", "flag_groups", "capped")

    def __init__(self, offers: tuple[Offer, ...],
                 static_row: Callable[[Offer], tuple[float, ...]] | None = None) -> None:
        self.offers = offers
        self.n = n = len(offers)
        self.ids = ids = [offer.offer_id for offer in offers]
        self.categories = categories = [offer.category for offer in offers]
        self.row_of = {offer_id: i for i, offer_id in enumerate(ids)}
        self.unique = len(self.row_of) == n
        groups: dict[str, list[int]] = {}
        for i, category in enumerate(categories):
            groups.setdefault(category, []).append(i)
        self.cat_rows = groups
        self.cat_names = list(groups)
        code = {c: j for j, c in enumerate(self.cat_names)}
        self.cat_code = np.array([code[c] for c in categories], dtype=np.intp)
        rows = list(map(static_row or _static_row, offers))
        static = np.array(rows, dtype=np.float64).reshape(n, len(_OFFER_OWN) + 2)
        self._fill_template(static)
        self._index_rules()
        self.weighted = [(i, w) for i, w in enumerate(map(offer_category_weights, offers))
                         if len(w) > 1]  # offers with several weighted categories

    def _fill_template(self, static: np.ndarray) -> None:
        """The template and the validity bounds from the static rows (see ``static_row``)."""
        X = np.zeros((self.n, len(FEATURE_NAMES)), dtype=np.float32)
        X[:, _OWN_COLUMNS] = static[:, :-2]
        # the same value as the per-request expression on the open rows (365 days either way)
        no_from, no_to = np.isnan(static[:, -2]), np.isnan(static[:, -1])
        X[no_from, _DAYS_LIVE] = _LOG_YEAR
        X[no_to, _DAYS_LEFT] = _LOG_YEAR
        self.template = X
        self.from_rows = np.flatnonzero(~no_from)
        self.from_ms = static[self.from_rows, -2]
        self.to_rows = np.flatnonzero(~no_to)
        self.to_ms = static[self.to_rows, -1]
        self.bounded = np.flatnonzero(~(no_from & no_to)).tolist()

    def _index_rules(self) -> None:
        """The consent-flag groups and the capped rows, for the eligibility rule."""
        flag_groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
        capped = []
        for i, offer in enumerate(self.offers):
            implied = IMPLIED_REQUIREMENTS.get(offer.kind, ())
            if offer.requires or implied:
                flag_groups.setdefault((offer.requires, implied), []).append(i)
            if offer.max_impressions_per_day is not None:
                capped.append((i, offer.max_impressions_per_day))
        self.flag_groups = flag_groups
        self.capped = capped


def _static_row(offer: Offer) -> tuple[float, ...]:
    """The offer's ``_OFFER_OWN`` values plus its validity bounds (float ms, NaN = open).

    Popularity is not part of it: it comes from ``offer_stats``, which a replay updates in place.
    """
    return (*_OWN_ORDER(_offer_values(offer, 0, {})),  # the columns that need neither time nor stats
            float("nan") if offer.valid_from is None else float(offer.valid_from),
            float("nan") if offer.valid_to is None else float(offer.valid_to))


class OfferSetCache:
    """The :class:`OfferSet` s of recently used tuples of offer objects, least recently used out.

    Its owner creates it and passes it in: the worker's score route (through
    :class:`models.decision.CandidateCache`), a replay, a test. Sets are keyed by the identity of
    the offer objects, so the same catalogue objects hit on every request; an entry holds its
    offers, so none of their ``id()`` s can be reused while it is kept. The static row of each
    offer object is kept too (up to ``max_offers``), so a new set of known offers is cheap to build.

    Parameters
    ----------
    max_sets : int
        Sets kept; a set's template is ``n x len(FEATURE_NAMES)`` float32 (200 offers: ~38 KB).
    max_set_size : int
        Larger sets are built per call, not kept.
    max_offers : int
        Static rows kept; all are dropped when there would be more.

    Examples
    --------
    >>> from models.catalog import parse_offer
    >>> offers = [parse_offer({"offer_id": f"o{i}", "category": "shoes"}) for i in range(3)]
    >>> cache = OfferSetCache(max_sets=2)
    >>> cache.get(offers) is cache.get(list(offers)), len(cache)
    (True, 1)
    >>> cache.get(offers[:2]) is cache.get(offers[1:]), len(cache)
    (False, 2)
    """

    __slots__ = ("max_sets", "max_set_size", "max_offers", "_sets", "_rows")

    def __init__(self, max_sets: int = 32, max_set_size: int = 4096, max_offers: int = 100_000) -> None:
        self.max_sets, self.max_set_size, self.max_offers = max_sets, max_set_size, max_offers
        self._sets: dict[tuple[int, ...], OfferSet] = {}  # most recently used last
        self._rows: dict[str, tuple[Offer, tuple[float, ...]]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def get(self, offers: Sequence[Offer]) -> OfferSet:
        """The :class:`OfferSet` of these offer objects, in this order (built on a miss)."""
        if len(offers) > self.max_set_size:
            return OfferSet(tuple(offers), self._static_row)
        key = tuple(map(id, offers))
        sets = self._sets
        hit = sets.pop(key, None)
        if hit is None or not all(map(operator.is_, hit.offers, offers)):  # the is-check cannot fail
            hit = OfferSet(tuple(offers), self._static_row)                 # (the entry keeps them alive)
            while len(sets) >= self.max_sets:
                sets.pop(next(iter(sets)), None)
        sets[key] = hit
        return hit

    def _static_row(self, offer: Offer) -> tuple[float, ...]:
        """:func:`_static_row`, kept per offer id for as long as the id maps to this very object."""
        hit = self._rows.get(offer.offer_id)
        if hit is not None and hit[0] is offer:
            return hit[1]
        row = _static_row(offer)
        if len(self._rows) >= self.max_offers:
            self._rows.clear()
        self._rows[offer.offer_id] = (offer, row)
        return row


def vectorize_set(candidates: OfferSet, profile: Profile | None, context: Context, now_ms: int,
                  offer_stats: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """:func:`vectorize` for an :class:`OfferSet` with unique offer ids (and at least one offer).

    Starts from a copy of the set's template and fills only what depends on the request: the
    customer block, the customer-x-offer block, popularity, the bounded validity columns and context.
    """
    X = candidates.template.copy()
    if profile is not None:
        X[:, _CUSTOMER_COLUMNS] = customer_features(profile, now_ms)
        _fill_pairs(X, profile, candidates, now_ms)
    if offer_stats:
        found = list(map(offer_stats.get, candidates.ids))
        rows = [i for i, v in enumerate(found) if v is not None]
        if rows:
            X[rows, _POPULARITY_COLUMNS] = [tuple(v) for v in found if v is not None]  # the rows' values
    if len(candidates.from_rows):
        X[candidates.from_rows, _DAYS_LIVE] = np.log1p(np.maximum((now_ms - candidates.from_ms) / DAY_MS, 0.0))
    if len(candidates.to_rows):
        X[candidates.to_rows, _DAYS_LEFT] = np.log1p(np.maximum((candidates.to_ms - now_ms) / DAY_MS, 0.0))
    _fill_context(X, candidates, context, now_ms)
    return X


def _fill_context(X: np.ndarray, candidates: OfferSet, context: Context, now_ms: int) -> None:
    X[:, _PAGE_COLUMNS] = _context_base(context, now_ms)
    if context.category is not None:
        in_category = candidates.cat_rows.get(context.category)
        if in_category is not None:
            X[in_category, _CATEGORY_MATCH] = 1.0
    affinity = context.offer_affinity
    if affinity:
        if len(affinity) <= candidates.n:
            row_of = candidates.row_of
            for offer_id, value in affinity.items():
                i = row_of.get(offer_id)
                if i is not None:
                    X[i, _OFFER_AFFINITY] = float(value)
        else:
            X[:, _OFFER_AFFINITY] = [float(affinity.get(offer_id, 0.0)) for offer_id in candidates.ids]
    if context.position:
        X[:, _POSITION] = float(context.position)


def _fill_pairs(X: np.ndarray, profile: Profile, candidates: OfferSet, now_ms: int) -> None:
    affinities = _affinities(profile, now_ms)
    days_since = _days_since_categories(profile, now_ms)
    cart_cats = profile.cart_categories()
    table = np.array([(*affinities.get(c, _NO_AFFINITY), 1.0 if c in cart_cats else 0.0,  # _CATEGORY_PAIR
                       days_since.get(c, _LOG_NEVER_DAYS)) for c in candidates.cat_names],
                     dtype=np.float64)
    X[:, _CATEGORY_PAIR_COLUMNS] = table[candidates.cat_code]
    X[:, _OFFER_CATEGORY_AFFINITY] = X[:, _CAT_AFFINITY_30D]  # an offer of one category: its affinity
    for row, weights in candidates.weighted:
        X[row, _OFFER_CATEGORY_AFFINITY] = _category_affinity(weights, affinities)
    X[:, _DAYS_SINCE_SEEN] = _LOG_NEVER
    if not profile.offers:
        return
    row_of = candidates.row_of
    log1p = math.log1p
    hit_rows: list[int] = []
    values: list[float] = []
    for offer_id, rec in profile.offers.items():
        i = row_of.get(offer_id)
        if i is None:
            continue
        imp, click, redeem = rec[0], rec[1], rec[2]
        since_seen = (now_ms - rec[4]) / DAY_MS if rec[4] else NEVER_HOURS
        hit_rows.append(i)
        # in _OFFER_HISTORY order; _log inlined: log1p(max(x, 0.0)), max(x, 0.0) is ``0.0 if 0.0 > x else x``
        values += (log1p(0.0 if imp < 0.0 else imp), log1p(0.0 if click < 0.0 else click),
                   log1p(0.0 if redeem < 0.0 else redeem), float(profile.impressions_today(offer_id, now_ms)),
                   log1p(0.0 if since_seen < 0.0 else since_seen))
    if hit_rows:
        X[hit_rows, _HISTORY_COLUMNS] = np.array(values, dtype=np.float64).reshape(len(hit_rows),
                                                                                    len(_OFFER_HISTORY))


def vectorize_rows(
    profile: Profile | None,
    offers: Sequence[Offer],
    context: Context,
    now_ms: int,
    offer_stats: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """The row-by-row definition of :func:`vectorize` (slower; the reference its tests use).

    Every value is built under its feature's name and placed by ``FEATURE_NAMES``.
    """
    stats = offer_stats or {}
    X = np.empty((len(offers), len(FEATURE_NAMES)), dtype=np.float32)
    X[:, _CUSTOMER_COLUMNS] = customer_features(profile, now_ms)
    cart_cats = profile.cart_categories() if profile is not None else set()
    affinities = _affinities(profile, now_ms) if profile is not None else None
    days_since = _days_since_categories(profile, now_ms) if profile is not None else None
    page = _context_base(context, now_ms)
    for row, offer in enumerate(offers):
        X[row, _ROW_COLUMNS] = (  # _ROW_COLUMNS: these blocks, in this order
            _pair_features(profile, offer, now_ms, cart_cats, affinities, days_since)
            + _offer_features(offer, now_ms, stats)
            + _context_features(context, offer, page)
        )
    return X
