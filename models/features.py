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
>>> float(X[0, FEATURE_NAMES.index("personalized")]), round(float(X[0, FEATURE_NAMES.index("discount")]), 6)
(0.0, 0.1)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "CUSTOMER_FEATURES",
    "Context",
    "parse_context",
    "vectorize",
    "vectorize_rows",
    "customer_features",
    "OfferSet",
    "offer_set",
    "vectorize_set",
]

#: 2: ``ctx_position`` (the page slot an offer is shown in) appended to the context block.
FEATURE_SCHEMA_VERSION = 2
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
)
PAIR_FEATURES = (
    "cat_affinity_1d", "cat_affinity_30d", "cart_has_category",
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
_N_CUST, _N_PAIR, _N_OFFER = len(CUSTOMER_FEATURES), len(PAIR_FEATURES), len(OFFER_FEATURES)


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
    """The customer block; all zeros (``personalized`` = 0) without a usable profile."""
    if profile is None:
        return [0.0] * _N_CUST
    c = profile.count
    views = [sum(c(t, i, now_ms) for t in BROWSE_TYPES) for i in range(3)]
    n_orders = sum(o[0] for o in profile.orders.values())
    store_orders = profile.orders.get("store", [0.0, 0.0])[0]
    since_event = (now_ms - profile.last_ts) / HOUR_MS if profile.last_ts is not None else NEVER_HOURS
    since_buy = (now_ms - profile.last_purchase_ts) / DAY_MS if profile.last_purchase_ts else NEVER_HOURS
    session_live = profile.last_ts is not None and now_ms - profile.session[1] <= 30 * 60 * 1000
    return [
        1.0,
        _log(views[0]), _log(views[1]), _log(views[2]),
        _log(c("add_to_cart", 1, now_ms)), _log(c("add_to_cart", 2, now_ms)),
        _log(c("purchase", 1, now_ms)), _log(c("purchase", 2, now_ms)),
        _log(c("offer_impression", 2, now_ms)), _log(c("offer_click", 2, now_ms)),
        _log(c("offer_redeem", 2, now_ms)),
        _log(since_event), _log(since_buy),
        _log(profile.session[2]) if session_live else 0.0,
        _log(sum(q for _c, _p, q in profile.cart.values())), _log(profile.cart_value()),
        _log(n_orders), _log(sum(o[1] for o in profile.orders.values())),
        _log(profile.decayed_spend(now_ms)), store_orders / n_orders if n_orders else 0.0,
    ]


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


def _pair_features(profile: Profile | None, offer: Offer, now_ms: int, cart_cats: set[str],
                   affinities: Mapping[str, tuple[float, float]] | None = None) -> list[float]:
    if profile is None:
        return [0.0] * _N_PAIR
    rec = profile.offers.get(offer.offer_id)
    imp, click, redeem = (rec[0], rec[1], rec[2]) if rec else (0, 0, 0)
    since_seen = (now_ms - rec[4]) / DAY_MS if rec and rec[4] else NEVER_HOURS
    if affinities is None:
        affinities = _affinities(profile, now_ms)
    aff_1d, aff_30d = affinities.get(offer.category, (0.0, 0.0))
    return [
        aff_1d,
        aff_30d,
        1.0 if offer.category in cart_cats else 0.0,
        _log(imp), _log(click), _log(redeem),
        float(profile.impressions_today(offer.offer_id, now_ms)), _log(since_seen),
    ]


def _offer_features(offer: Offer, now_ms: int, stats: Mapping[str, Sequence[float]]) -> list[float]:
    rate, log_n = stats.get(offer.offer_id, (0.0, 0.0))
    kind = offer.kind
    live = (now_ms - offer.valid_from) / DAY_MS if offer.valid_from is not None else 365.0
    left = (offer.valid_to - now_ms) / DAY_MS if offer.valid_to is not None else 365.0
    return [
        offer.discount_pct / 100.0, float(kind == "discount"), float(kind == "bundle"),
        float(kind == "loyalty"), float(kind in ("partner", "sponsored")), float(kind == "other"),
        float(rate), float(log_n), _log(live), _log(left),
    ]


def _context_features(context: Context, offer: Offer, now_ms: int, base: list[float]) -> list[float]:
    return [*base, float(context.category is not None and context.category == offer.category),
            float(context.offer_affinity.get(offer.offer_id, 0.0)), _position(context)]


def _position(context: Context) -> float:
    return float(context.position) if context.position is not None else 0.0


def _context_base(context: Context, now_ms: int) -> list[float]:
    hour = (now_ms % DAY_MS) / HOUR_MS
    weekday = (now_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday (index 3, Monday = 0)
    return [math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
            float(weekday >= 5), float(context.channel == "web"), float(context.channel == "app"),
            float(context.channel == "store")]


def vectorize(
    profile: Profile | None,
    offers: Sequence[Offer],
    context: Context,
    now_ms: int,
    offer_stats: Mapping[str, Sequence[float]] | None = None,
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

    Notes
    -----
    Column by column with numpy, from the candidates' :class:`OfferSet` (cached by the identity of
    the offer objects: a copy of its template holds every column that depends only on the offers);
    per call only the profile, popularity, time and context columns are filled. Category
    affinities are looked up per category, and offer history is filled only for the offers the
    profile has seen. :func:`vectorize_rows` is the row-by-row definition it must equal
    (``tests/unit/test_features.py`` checks it); a single offer goes straight to it, which is
    ~35 % faster than the numpy path for one row (the replay vectorizes one impression at a time).
    """
    if len(offers) == 1:  # one row (a replayed impression): numpy's per-call overhead costs more
        return vectorize_rows(profile, offers, context, now_ms, offer_stats)
    return _vectorize_columns(profile, offers, context, now_ms, offer_stats)


def _vectorize_columns(profile: Profile | None, offers: Sequence[Offer], context: Context,
                       now_ms: int, offer_stats: Mapping[str, Sequence[float]] | None,
                       ) -> np.ndarray:
    """The numpy path of :func:`vectorize`, for any number of offers."""
    if not offers:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    candidates = offer_set(offers)
    if not candidates.unique:  # an offer id twice: rows keyed by id would collide; use the definition
        return vectorize_rows(profile, offers, context, now_ms, offer_stats)
    return vectorize_set(candidates, profile, context, now_ms, offer_stats)


_O = _N_CUST + _N_PAIR           # first offer column
_C = _O + _N_OFFER               # first context column
_LOG_NEVER = _log(NEVER_HOURS)


class OfferSet:
    """Everything about a tuple of offers that depends only on the offers themselves, computed once.

    Built by :func:`offer_set` and cached by the identity of the offer objects. ``Offer`` is frozen
    and the catalogue replaces an updated offer by a new object, so a changed or removed offer gives a
    new key and is never matched with stale columns. The set holds its offers, so none of their
    ``id()`` s can be reused while it is cached.

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
    """

    __slots__ = ("offers", "ids", "categories", "n", "unique", "row_of", "cat_rows", "cat_names", "cat_code",
                 "template", "from_rows", "from_ms", "to_rows", "to_ms", "bounded", "flag_groups", "capped")

    def __init__(self, offers: tuple[Offer, ...]) -> None:
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
        static = np.array([_static_row(offer) for offer in offers], dtype=np.float64).reshape(n, 8)
        X = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
        X[:, _O:_O + 6] = static[:, :6]
        # the same expressions as the per-request ones, on the open rows (365 days either way)
        no_from, no_to = np.isnan(static[:, 6]), np.isnan(static[:, 7])
        X[no_from, _O + 8] = np.log1p(np.maximum(np.full(int(no_from.sum()), 365.0), 0.0))
        X[no_to, _O + 9] = np.log1p(np.maximum(np.full(int(no_to.sum()), 365.0), 0.0))
        self.template = X
        self.from_rows = np.flatnonzero(~no_from)
        self.from_ms = static[self.from_rows, 6]
        self.to_rows = np.flatnonzero(~no_to)
        self.to_ms = static[self.to_rows, 7]
        self.bounded = np.flatnonzero(~(no_from & no_to)).tolist()
        flag_groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
        capped = []
        for i, offer in enumerate(offers):
            implied = IMPLIED_REQUIREMENTS.get(offer.kind, ())
            if offer.requires or implied:
                flag_groups.setdefault((offer.requires, implied), []).append(i)
            if offer.max_impressions_per_day is not None:
                capped.append((i, offer.max_impressions_per_day))
        self.flag_groups = flag_groups
        self.capped = capped


_SETS: dict[tuple[int, ...], OfferSet] = {}
_MAX_SETS = 32          # entries; an entry's template is n x 53 float32 (200 offers: ~42 KB)
_MAX_SET_SIZE = 4096    # larger sets are built per call, not cached (at most ~28 MB cached in all)


def offer_set(offers: Sequence[Offer]) -> OfferSet:
    """The :class:`OfferSet` of these offer objects, from a small LRU cache keyed by identity."""
    if len(offers) > _MAX_SET_SIZE:
        return OfferSet(tuple(offers))
    key = tuple(map(id, offers))
    hit = _SETS.pop(key, None)
    if hit is None or not all(map(operator.is_, hit.offers, offers)):  # the is-check cannot fail
        hit = OfferSet(tuple(offers))                                     # (the entry keeps them alive)
        while len(_SETS) >= _MAX_SETS:
            _SETS.pop(next(iter(_SETS)), None)
    _SETS[key] = hit  # most recently used last
    return hit


def vectorize_set(candidates: OfferSet, profile: Profile | None, context: Context, now_ms: int,
                  offer_stats: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """:func:`vectorize` for an :class:`OfferSet` with unique offer ids (and at least one offer).

    Starts from a copy of the set's template and fills only what depends on the request: the
    customer block, the customer-x-offer block, popularity, the bounded validity columns and context.
    """
    X = candidates.template.copy()
    if profile is not None:
        X[:, :_N_CUST] = customer_features(profile, now_ms)
        _fill_pairs(X, profile, candidates, now_ms)
    if offer_stats:
        found = list(map(offer_stats.get, candidates.ids))
        rows = [i for i, v in enumerate(found) if v is not None]
        if rows:
            X[rows, _O + 6:_O + 8] = [tuple(v) for v in found if v is not None]  # the rows' values
    if len(candidates.from_rows):
        X[candidates.from_rows, _O + 8] = np.log1p(np.maximum((now_ms - candidates.from_ms) / DAY_MS, 0.0))
    if len(candidates.to_rows):
        X[candidates.to_rows, _O + 9] = np.log1p(np.maximum((candidates.to_ms - now_ms) / DAY_MS, 0.0))
    X[:, _C:_C + 6] = _context_base(context, now_ms)
    if context.category is not None:
        in_category = candidates.cat_rows.get(context.category)
        if in_category is not None:
            X[in_category, _C + 6] = 1.0
    affinity = context.offer_affinity
    if affinity:
        if len(affinity) <= candidates.n:
            row_of = candidates.row_of
            for offer_id, value in affinity.items():
                i = row_of.get(offer_id)
                if i is not None:
                    X[i, _C + 7] = float(value)
        else:
            X[:, _C + 7] = [float(affinity.get(offer_id, 0.0)) for offer_id in candidates.ids]
    if context.position:
        X[:, _C + 8] = float(context.position)
    return X


_STATIC: dict[str, tuple[Offer, tuple[float, ...]]] = {}


def _static_row(offer: Offer) -> tuple[float, ...]:
    """The offer's own time-independent columns plus its validity bounds (NaN = open), cached.

    Popularity is not cached here: it comes from ``offer_stats``, which a replay updates in place.
    """
    hit = _STATIC.get(offer.offer_id)
    if hit is not None and hit[0] is offer:
        return hit[1]
    kind = offer.kind
    row = (offer.discount_pct / 100.0, float(kind == "discount"), float(kind == "bundle"),
           float(kind == "loyalty"), float(kind in ("partner", "sponsored")), float(kind == "other"),
           float("nan") if offer.valid_from is None else float(offer.valid_from),
           float("nan") if offer.valid_to is None else float(offer.valid_to))
    if len(_STATIC) > 100_000:
        _STATIC.clear()
    _STATIC[offer.offer_id] = (offer, row)
    return row


def _fill_pairs(X: np.ndarray, profile: Profile, candidates: OfferSet, now_ms: int) -> None:
    p = _N_CUST
    affinities = _affinities(profile, now_ms)
    cart_cats = profile.cart_categories()
    if affinities or cart_cats:  # per category: (cat_affinity_1d, cat_affinity_30d, cart_has_category)
        zero = (0.0, 0.0)
        table = np.array([(*affinities.get(c, zero), 1.0 if c in cart_cats else 0.0) for c in candidates.cat_names],
                         dtype=np.float64)
        X[:, p:p + 3] = table[candidates.cat_code]
    X[:, p + 7] = _LOG_NEVER
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
        # _log inlined: log1p(max(x, 0.0)), and max(x, 0.0) is ``0.0 if 0.0 > x else x``
        values += (log1p(0.0 if imp < 0.0 else imp), log1p(0.0 if click < 0.0 else click),
                   log1p(0.0 if redeem < 0.0 else redeem), float(profile.impressions_today(offer_id, now_ms)),
                   log1p(0.0 if since_seen < 0.0 else since_seen))
    if hit_rows:
        X[hit_rows, p + 3:p + 8] = np.array(values, dtype=np.float64).reshape(len(hit_rows), 5)


def vectorize_rows(
    profile: Profile | None,
    offers: Sequence[Offer],
    context: Context,
    now_ms: int,
    offer_stats: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """The row-by-row definition of :func:`vectorize` (slower; the reference its tests use)."""
    stats = offer_stats or {}
    X = np.empty((len(offers), len(FEATURE_NAMES)), dtype=np.float32)
    X[:, :_N_CUST] = customer_features(profile, now_ms)
    cart_cats = profile.cart_categories() if profile is not None else set()
    affinities = _affinities(profile, now_ms) if profile is not None else None
    base = _context_base(context, now_ms)
    for row, offer in enumerate(offers):
        X[row, _N_CUST:] = (
            _pair_features(profile, offer, now_ms, cart_cats, affinities)
            + _offer_features(offer, now_ms, stats)
            + _context_features(context, offer, now_ms, base)
        )
    return X
