"""The offer catalogue: validation and eligibility reason codes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import KINDS, Offer, ineligibility, parse_offer
from models.consent import FLAGS
from models.errors import InvalidOffer

NOW = 1_714_557_600_000
DAY = 86_400_000
ALL_ON = dict.fromkeys(FLAGS, True)


def offer(**fields: Any) -> Offer:
    return parse_offer({"offer_id": "o1", "title": "10% off", "category": "shoes", "kind": "discount", **fields})


def test_minimal_offer_defaults() -> None:
    o = parse_offer({"offer_id": "o1"})
    assert (o.title, o.category, o.kind, o.discount_pct, o.requires) == ("o1", "general", "other", 0.0, ())
    assert o.valid_from is None and o.valid_to is None and o.max_impressions_per_day is None


def test_full_offer_parses_and_serializes() -> None:
    o = offer(discount_pct=15, valid_from="2024-05-01T00:00:00Z", valid_to=NOW + DAY,
              requires=["marketing", "marketing", "measurement"], max_impressions_per_day=3,
              attributes={"brand": "x"})
    assert o.discount_pct == 15.0 and isinstance(o.discount_pct, float)
    assert o.valid_from == NOW - 10 * 3_600_000 and o.valid_to == NOW + DAY
    assert o.requires == ("marketing", "measurement")
    data = orjson.loads(orjson.dumps(o.to_dict()))
    assert parse_offer(data) == o


@pytest.mark.parametrize(
    "fields, field",
    [({"kind": "coupon"}, "kind"), ({"kind": ["discount"]}, "kind"),
     ({"discount_pct": -1}, "discount_pct"), ({"discount_pct": 100.5}, "discount_pct"),
     ({"discount_pct": "10"}, "discount_pct"), ({"discount_pct": True}, "discount_pct"),
     ({"discount_pct": float("nan")}, "discount_pct"), ({"discount_pct": float("inf")}, "discount_pct"),
     ({"requires": ["sharing", "telepathy"]}, "requires"), ({"requires": "sharing"}, "requires"),
     ({"requires": [["sharing"]]}, "requires"),
     ({"max_impressions_per_day": 0}, "max_impressions_per_day"),
     ({"max_impressions_per_day": -3}, "max_impressions_per_day"),
     ({"max_impressions_per_day": 2.5}, "max_impressions_per_day"),
     ({"max_impressions_per_day": True}, "max_impressions_per_day"),
     ({"attributes": []}, "attributes"),
     ({"valid_from": "2024-05-01T00:00:00"}, "valid_from"), ({"valid_to": "soon"}, "valid_to"),
     ({"valid_from": NOW, "valid_to": NOW - 1}, "valid_to"),
     ({"offer_id": ""}, "offer_id"), ({"offer_id": 5}, "offer_id"), ({"title": 5}, "title"),
     ({"category": ""}, "category"), ({"title": "x" * 257}, "title")],
)
def test_invalid_offer_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOffer) as info:
        offer(**fields)
    assert info.value.field == field


def test_boundary_values_accepted() -> None:
    assert offer(discount_pct=0).discount_pct == 0.0
    assert offer(discount_pct=100).discount_pct == 100.0
    assert offer(max_impressions_per_day=1).max_impressions_per_day == 1
    assert offer(valid_from=NOW, valid_to=NOW).valid_to == NOW


def test_non_object_rejected() -> None:
    with pytest.raises(InvalidOffer):
        parse_offer(["o1"])


def test_url_id_must_match_body() -> None:
    with pytest.raises(InvalidOffer) as info:
        parse_offer({"offer_id": "o1", "title": "t"}, offer_id="o2")
    assert info.value.field == "offer_id"
    assert parse_offer({"offer_id": "o2"}, offer_id="o2").offer_id == "o2"
    assert parse_offer({"title": "t"}, offer_id="o3").offer_id == "o3"  # id from the URL only


@pytest.mark.parametrize("kind", ["partner", "sponsored"])
def test_third_party_kinds_imply_sharing(kind: str) -> None:
    o = offer(kind=kind)
    assert o.requires == () and o.required_flags() == ("sharing",)
    assert ineligibility(o, ALL_ON | {"sharing": False}, [], [], 0, NOW) == "consent:sharing"
    assert ineligibility(o, ALL_ON, [], [], 0, NOW) is None
    both = offer(kind=kind, requires=["sharing", "marketing"])
    assert both.required_flags() == ("sharing", "marketing")


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("partner", "sponsored")])
def test_other_kinds_imply_nothing(kind: str) -> None:
    assert offer(kind=kind).required_flags() == ()


def test_eligible_offer_has_no_reason() -> None:
    o = offer(valid_from=NOW - DAY, valid_to=NOW + DAY, requires=["marketing"], max_impressions_per_day=2)
    assert ineligibility(o, {"marketing": True}, ["toys"], ["o9"], 1, NOW) is None


@pytest.mark.parametrize(
    "fields, flags, exclude, dismissed, seen, reason",
    [({"valid_from": NOW + 1}, ALL_ON, [], [], 0, "not_yet_valid"),
     ({"valid_to": NOW - 1}, ALL_ON, [], [], 0, "expired"),
     ({"requires": ["marketing"]}, ALL_ON | {"marketing": False}, [], [], 0, "consent:marketing"),
     ({"requires": ["measurement"]}, {}, [], [], 0, "consent:measurement"),  # unknown flag = off
     ({}, ALL_ON, ["shoes"], [], 0, "excluded_category"),
     ({}, ALL_ON, [], ["o1"], 0, "dismissed"),
     ({"max_impressions_per_day": 2}, ALL_ON, [], [], 2, "daily_cap"),
     ({"max_impressions_per_day": 2}, ALL_ON, [], [], 5, "daily_cap")],
)
def test_ineligibility_reason_codes(fields: dict[str, Any], flags: dict[str, bool], exclude: list[str],
                                    dismissed: list[str], seen: int, reason: str) -> None:
    assert ineligibility(offer(**fields), flags, exclude, dismissed, seen, NOW) == reason


def test_validity_bounds_are_inclusive() -> None:
    o = offer(valid_from=NOW, valid_to=NOW + 10)
    assert ineligibility(o, {}, [], [], 0, NOW) is None
    assert ineligibility(o, {}, [], [], 0, NOW + 10) is None
    assert ineligibility(o, {}, [], [], 0, NOW + 11) == "expired"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(KINDS), st.lists(st.sampled_from(FLAGS), max_size=4),
       st.dictionaries(st.sampled_from(FLAGS), st.booleans()))
def test_eligible_offers_have_every_required_flag(kind: str, requires: list[str], flags: dict[str, bool]) -> None:
    o = offer(kind=kind, requires=requires)
    reason = ineligibility(o, flags, [], [], 0, NOW)
    missing = [f for f in o.required_flags() if not flags.get(f, False)]
    if reason is None:
        assert not missing
    else:
        assert reason == f"consent:{missing[0]}"
