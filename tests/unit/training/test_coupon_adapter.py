"""The coupon-level Complete Journey mapping (:mod:`training.adapters.completejourney_coupons`)
against the sample's CSV files, read independently here."""

from __future__ import annotations

import csv
import gzip
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from models.catalog import parse_offer
from models.events import parse_event
from training.adapters import completejourney as cj
from training.adapters import completejourney_coupons as cc
from training.replay import replay

CJ_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "completejourney"
HOUSEHOLDS = {"2261", "1029", "165"}  # 165 and 1029 redeemed coupons of campaign 26


def _rows(name: str) -> list[dict[str, str]]:
    with gzip.open(CJ_DIR / f"{name}.csv.gz", "rt", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def offers() -> list[dict[str, Any]]:
    return cc.build_coupon_offers(cj.CsvSample(CJ_DIR))


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return cc.build_coupon_events(cj.CsvSample(CJ_DIR), HOUSEHOLDS)


def test_one_offer_per_coupon_weighted_by_commodity(offers: list[dict[str, Any]]) -> None:
    coupons = _rows("coupons")
    assert len(offers) == len({r["coupon_upc"] for r in coupons}) == 981
    commodity = {r["product_id"]: r["product_category"] for r in _rows("products")}
    products: dict[str, set[str]] = defaultdict(set)
    for r in coupons:
        products[r["coupon_upc"]].add(r["product_id"])
    for offer in offers[:50]:
        parse_offer(offer)
        upc = offer["offer_id"].removeprefix("cj-coupon-")
        counts = Counter(commodity[p] or "?" for p in products[upc] if p in commodity)
        assert offer["category"] == max(sorted(counts), key=lambda c: counts[c])
        shares = offer["attributes"]["categories"]
        assert len(shares) == min(len(counts), cc.MAX_OFFER_CATEGORIES)
        assert sum(shares.values()) <= 1.0 + 1e-3 and list(shares)[0] == offer["category"]


def test_a_decision_is_a_household_campaign_over_its_coupons(events: list[dict[str, Any]]) -> None:
    for e in events:
        parse_event(e)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    per_campaign = Counter(r["campaign_id"] for r in
                           {(r["campaign_id"], r["coupon_upc"]): r for r in _rows("coupons")}.values())
    received = [r for r in _rows("campaigns") if r["household_id"] in HOUSEHOLDS]
    impressions = Counter(e["decision_id"] for e in events if e["type"] == "offer_impression")
    assert impressions == Counter({f"cj-camp-{r['campaign_id']}-{r['household_id']}":
                                   per_campaign[r["campaign_id"]] for r in received})
    redeemed = {(r["household_id"], r["campaign_id"], r["coupon_upc"], r["redemption_date"])
                for r in _rows("coupon_redemptions") if r["household_id"] in HOUSEHOLDS}
    redeems = [e for e in events if e["type"] == "offer_redeem"]
    assert len(redeems) == len(redeemed) > 0
    shown = {(e["decision_id"], e["offer_id"]) for e in events if e["type"] == "offer_impression"}
    assert all((e["decision_id"], e["offer_id"]) in shown for e in redeems)


def test_items_carry_commodities_and_replay_labels_redeemed_coupons(
        offers: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    commodities = set(cc.CommodityTables(cj.CsvSample(CJ_DIR)).departments().values())
    items = [i["category"] for e in events if e["type"] == "purchase" for i in e["items"]]
    assert items and set(items) <= commodities
    catalogue = {o["offer_id"]: parse_offer(o) for o in offers}
    result = replay(events, catalogue, assume_consent=True)
    labelled = {(m.decision_id, m.offer_id) for m, y in zip(result.meta, result.y, strict=True) if y}
    redeemed = {(e["decision_id"], e["offer_id"]) for e in events if e["type"] == "offer_redeem"}
    assert labelled == redeemed
