"""The Complete Journey at coupon level: each campaign a household receives is a decision over
the campaign's coupons, the redeemed ones positive.

The campaign-level mapping (:mod:`training.adapters.completejourney`) makes one offer of each of
the 27 campaigns. Measured on the full data, that leaves almost nothing to rank: in the latest
20 % of impressions a household holds 1.7 campaigns on average (677 of 1,225 households exactly
one), 6 campaigns in all, and one of them (18, Type A) is redeemed by 19 % of its households
against 2-12 % for the others, so the offer's own redemption rate already orders nearly every
household's campaigns (popularity NDCG@3 0.967). This module asks the question the data can
answer and a shop's scorer faces: *of the coupons in a campaign a household received, which will
it redeem?*

Mapping (everything else as in :mod:`training.adapters.completejourney`)
------------------------------------------------------------------------
* **Offers**: one per ``coupon_upc`` (981), ``offer_id = "cj-coupon-{coupon_upc}"``, ``kind =
  "discount"`` (a coupon is money off; face values are not in the data, ``discount_pct`` 0).
  ``category`` is the most common **commodity** (``products.product_category``; the department
  when it is missing) of the products the coupon is redeemable for; ``attributes.categories``
  holds the commodities' shares of those products (the offer's weighted categories; the largest
  :data:`MAX_OFFER_CATEGORIES`). Departments
  are too coarse for coupons: 660 of the 981 coupons are GROCERY. ``valid_from``/``valid_to`` span
  the campaigns that hold the coupon (151 coupons are in more than one).
* **purchase**: as the campaign mapping, but an item's ``category`` is its product's commodity
  (303 in the data), so that the customer's category profile and the coupon's categories meet.
* **offer_impression**: one per coupon of each ``campaigns`` row (household received campaign),
  at the campaign's start, ``decision_id = "cj-camp-{campaign_id}-{household_id}"``,
  ``position = 0`` (a mailer has no slots). Types B and C send every household the campaign's
  whole coupon set, so these impressions are the data's. Type A sends each household a selection
  from the campaign's pool that the data do not record; its decision is the pool, which is the
  choice a targeting scorer makes (of these coupons, which suit this household).
* **offer_redeem**: one per distinct (household, campaign, coupon, redemption date), at 12:00 UTC,
  ``decision_id`` as the impression's: it labels that decision's impression of the coupon only.

Facts measured on the full data: 957,819 events: 155,518 purchases, 800,199 impressions (Type A
749,961, B 37,727, C 12,511) in 6,589 decisions, 2,102 redeem events (one per redemption row) that
label 2,075 impressions (a coupon redeemed on two days of one decision labels its one impression).
The latest 20 % of impressions by time (the test part of ``offerstream train``) hold 254,213
rows, 749 positive, in 2,031 decisions, 260 with a redemption. Building the events takes about
18 s and their replay about 95 s (one row per impression: about 0.1 ms each).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from training.adapters.common import DAY_MS, date_to_epoch_ms
from training.adapters.completejourney import (
    _TYPE_RANK,
    UNKNOWN_CATEGORY,
    Line,
    Tables,
    _purchase_events,
)

__all__ = ["MAX_OFFER_CATEGORIES", "CommodityTables", "build_coupon_offers", "build_coupon_events"]

_MISSING = ("", "nan", "None")


def _text(value: object) -> str:
    """A cell as text; "" for a missing one (an empty CSV cell, or a NaN of the parquet tables)."""
    return value if isinstance(value, str) and value not in _MISSING else ""


class CommodityTables:
    """``tables`` with each product's commodity (``product_category``) as its category."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._commodities: dict[str, str] | None = None

    def departments(self) -> dict[str, str]:
        """``product_id`` -> commodity (the department when the commodity is missing)."""
        if self._commodities is None:
            out = {}
            for row in self.tables.rows("products"):
                name = _text(row.get("product_category"))
                out[row["product_id"]] = name or _text(row.get("department")) or UNKNOWN_CATEGORY
            self._commodities = out
        return self._commodities

    def rows(self, table: str) -> Iterable[dict[str, str]]:
        return self.tables.rows(table)

    def lines(self, households: Collection[str] | None) -> Iterable[Line]:
        return self.tables.lines(households)


def _coupons(tables: Tables) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """(coupon_upc -> its product ids, campaign_id -> its coupon upcs, sorted)."""
    products: dict[str, set[str]] = defaultdict(set)
    by_campaign: dict[str, set[str]] = defaultdict(set)
    for row in tables.rows("coupons"):
        products[row["coupon_upc"]].add(row["product_id"])
        by_campaign[row["campaign_id"]].add(row["coupon_upc"])
    return products, {cid: sorted(upcs) for cid, upcs in by_campaign.items()}


#: At most this many commodities per coupon offer (the largest shares; a few store-wide coupons
#: name products of up to 84 commodities).
MAX_OFFER_CATEGORIES = 8


def _shares(product_ids: set[str], categories: dict[str, str]) -> dict[str, float]:
    """The largest commodity shares of the known products (4 places), largest first (ties: by
    name), at most :data:`MAX_OFFER_CATEGORIES`."""
    counts = Counter(categories[p] for p in product_ids if p in categories)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_OFFER_CATEGORIES]
    return {c: round(n / total, 4) for c, n in ranked}


def build_coupon_offers(tables: Tables) -> list[dict[str, Any]]:
    """One offer per coupon (see the module notes), ordered by ``coupon_upc``."""
    commodities = CommodityTables(tables).departments()
    products, by_campaign = _coupons(tables)
    windows: dict[str, list[int]] = {}
    campaigns: dict[str, list[str]] = defaultdict(list)
    for row in sorted(tables.rows("campaign_descriptions"), key=lambda r: int(r["campaign_id"])):
        start, end = date_to_epoch_ms(row["start_date"]), date_to_epoch_ms(row["end_date"]) + DAY_MS - 1
        for upc in by_campaign.get(row["campaign_id"], ()):
            window = windows.setdefault(upc, [start, end])
            window[0], window[1] = min(window[0], start), max(window[1], end)
            campaigns[upc].append(row["campaign_id"])
    offers = []
    for upc in sorted(products):
        shares = _shares(products[upc], commodities)
        span: list[int | None] = list(windows.get(upc, (None, None)))
        offers.append({
            "offer_id": f"cj-coupon-{upc}", "title": f"Coupon {upc}",
            "category": next(iter(shares), UNKNOWN_CATEGORY), "kind": "discount",
            "discount_pct": 0.0, "valid_from": span[0], "valid_to": span[1], "requires": ["marketing"],
            "max_impressions_per_day": None,
            "attributes": {"campaigns": campaigns.get(upc, []), "n_products": len(products[upc]),
                           "categories": shares},
        })
    return offers


def _impressions(tables: Tables, keep: Collection[str] | None) -> Iterator[dict[str, Any]]:
    starts = {row["campaign_id"]: date_to_epoch_ms(row["start_date"])
              for row in tables.rows("campaign_descriptions")}
    _products, by_campaign = _coupons(tables)
    for row in tables.rows("campaigns"):
        cid, hid = row["campaign_id"], row["household_id"]
        if keep is not None and hid not in keep:
            continue
        decision = f"cj-camp-{cid}-{hid}"
        for upc in by_campaign.get(cid, ()):
            yield {"event_id": f"cj-imp-{cid}-{hid}-{upc}", "type": "offer_impression",
                   "customer_id": hid, "ts": starts[cid], "offer_id": f"cj-coupon-{upc}",
                   "decision_id": decision, "position": 0}


def _redeems(tables: Tables, keep: Collection[str] | None) -> Iterator[dict[str, Any]]:
    seen: set[tuple[str, str, str, str]] = set()
    for row in tables.rows("coupon_redemptions"):
        hid, cid, upc, day = (row["household_id"], row["campaign_id"], row["coupon_upc"],
                              row["redemption_date"])
        if (keep is not None and hid not in keep) or (hid, cid, upc, day) in seen:
            continue
        seen.add((hid, cid, upc, day))
        yield {"event_id": f"cj-red-{hid}-{cid}-{upc}-{day}", "type": "offer_redeem",
               "customer_id": hid, "ts": date_to_epoch_ms(day, hour=12),
               "offer_id": f"cj-coupon-{upc}", "decision_id": f"cj-camp-{cid}-{hid}"}


def build_coupon_events(tables: Tables, households: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every purchase (items by commodity), coupon impression and coupon redemption as contract
    events, in ``ts`` order (then impression < purchase < redeem, then ``event_id``)."""
    keep = None if households is None else {str(h) for h in households}
    events = [*_impressions(tables, keep), *_purchase_events(CommodityTables(tables), keep),
              *_redeems(tables, keep)]
    events.sort(key=lambda e: (e["ts"], _TYPE_RANK[e["type"]], e["event_id"]))
    return events
