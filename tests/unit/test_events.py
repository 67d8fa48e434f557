"""Tests of the event contract: parse_ts, parse_event, parse_payload."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidEvent, ValidationError
from models.events import EVENT_TYPES, Event, encode_event, parse_event, parse_payload, parse_ts

TS = 1_714_557_600_000  # 2024-05-01T10:00:00Z
BASE = {"event_id": "e1", "customer_id": "c1", "ts": TS}
ITEM = {"item_id": "sku1", "category": "shoes", "price": 20.0, "quantity": 2}

MINIMAL: dict[str, dict[str, Any]] = {
    "page_view": {"url": "/shoes", "category": "shoes"},
    "search": {"query": "red shoes", "category": "shoes"},
    "product_view": {"item_id": "sku1", "category": "shoes", "price": 20.0, "quantity": 1},
    "add_to_cart": dict(ITEM),
    "remove_from_cart": dict(ITEM),
    "purchase": {"order_id": "o1", "items": [dict(ITEM)], "total": 40.0, "channel": "store"},
    "return": {"order_id": "o1", "items": [dict(ITEM)], "total": 40.0},
    "offer_impression": {"offer_id": "of1", "decision_id": "d1", "position": 0, "propensity": 0.5},
    "offer_click": {"offer_id": "of1", "decision_id": "d1"},
    "offer_redeem": {"offer_id": "of1"},
    "offer_dismiss": {"offer_id": "of1", "decision_id": "d1"},
    "consent": {"consent": {"flags": {"profile": True}}},
    "preference": {"exclude_categories": ["toys"], "channels": ["web"]},
}


def ev(etype: str, **extra: Any) -> dict[str, Any]:
    return {**BASE, "type": etype, **MINIMAL[etype], **extra}


def field_of(obj: Any) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(obj)
    return info.value.field


def test_every_event_type_has_an_example() -> None:
    assert set(MINIMAL) == set(EVENT_TYPES)


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES))
def test_valid_minimal_event_parses(etype: str) -> None:
    obj = ev(etype)
    e = parse_event(obj)
    assert isinstance(e, Event)
    assert (e.event_id, e.type, e.customer_id, e.ts) == ("e1", etype, "c1", TS)
    assert e.data == obj


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES))
def test_only_the_required_fields_parse_where_type_fields_are_optional(etype: str) -> None:
    bare = {**BASE, "type": etype}
    needs = {"product_view": "item_id", "add_to_cart": "item_id", "remove_from_cart": "item_id",
             "purchase": "items", "return": "items", "offer_impression": "offer_id",
             "offer_click": "offer_id", "offer_redeem": "offer_id", "offer_dismiss": "offer_id",
             "consent": "consent"}
    if etype in needs:
        assert field_of(bare) == needs[etype]
    else:
        assert parse_event(bare).type == etype


@pytest.mark.parametrize("name", ["event_id", "type", "customer_id", "ts"])
@pytest.mark.parametrize("etype", ["page_view", "purchase", "offer_click"])
def test_missing_required_field_is_named(etype: str, name: str) -> None:
    obj = ev(etype)
    del obj[name]
    assert field_of(obj) == name


@pytest.mark.parametrize(
    "name, value",
    [("event_id", 5), ("event_id", ""), ("event_id", "   "), ("event_id", "x" * 257),
     ("customer_id", ["c"]), ("customer_id", ""), ("customer_id", True),
     ("type", "nope"), ("type", 3), ("type", ["page_view"]),
     ("ts", None), ("ts", [TS]), ("ts", {"ms": TS})],
)
def test_wrong_typed_required_field_is_named(name: str, value: Any) -> None:
    assert field_of({**ev("page_view"), name: value}) == name


@pytest.mark.parametrize(
    "etype, name, value",
    [("product_view", "item_id", 7), ("product_view", "price", "20"), ("product_view", "price", -1),
     ("add_to_cart", "quantity", 0), ("add_to_cart", "quantity", "2"),
     ("add_to_cart", "category", 5), ("page_view", "url", 1), ("search", "query", ["q"]),
     ("purchase", "items", []), ("purchase", "items", {"0": ITEM}), ("purchase", "total", "40"),
     ("purchase", "channel", "phone"), ("purchase", "order_id", 12),
     ("offer_impression", "position", -1), ("offer_impression", "position", 1.5),
     ("offer_impression", "propensity", 0), ("offer_impression", "propensity", 1.5),
     ("offer_impression", "offer_id", ""), ("offer_click", "decision_id", 3),
     ("consent", "consent", "yes"), ("preference", "exclude_categories", "toys"),
     ("preference", "channels", ["web", 1])],
)
def test_bad_type_field_is_named(etype: str, name: str, value: Any) -> None:
    assert field_of(ev(etype, **{name: value})) == name


@pytest.mark.parametrize(
    "patch, field",
    [({"price": "1"}, "items[1].price"), ({"item_id": None}, "items[1].item_id"),
     ({"quantity": 0}, "items[1].quantity"), ({"category": 3}, "items[1].category"),
     ({"price": float("nan")}, "items[1].price"), ({"price": True}, "items[1].price")],
)
def test_bad_item_field_is_named_with_its_index(patch: dict[str, Any], field: str) -> None:
    items = [dict(ITEM), {**ITEM, **patch}]
    assert field_of(ev("purchase", items=items)) == field


def test_item_that_is_not_an_object_is_named() -> None:
    assert field_of(ev("purchase", items=[dict(ITEM), "sku2"])) == "items[1]"


@pytest.mark.parametrize(
    "value, ms",
    [("2024-05-01T10:00:00+00:00", TS), ("2024-05-01T12:00:00+02:00", TS),
     ("2024-05-01T10:00:00Z", TS), ("2024-05-01T10:00:00.250Z", TS + 250),
     ("2024-05-01T05:00:00-05:00", TS), (TS, TS), (float(TS), TS), (TS + 0.7, TS)],
)
def test_ts_accepts_iso_with_zone_and_epoch_ms(value: Any, ms: int) -> None:
    assert parse_ts(value) == ms
    assert parse_event({**ev("page_view"), "ts": value}).ts == ms


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T10:00:00", "2024-05-01", "yesterday", "", True, False,
     float("nan"), float("inf"), float("-inf"),
     TS // 1000,  # seconds sent as milliseconds
     TS * 1000,  # microseconds sent as milliseconds
     0, -1, "1970-01-01T00:00:00Z", "2150-01-01T00:00:00Z"],
)
def test_ts_rejects_naive_iso_bools_non_finite_and_out_of_range(value: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_ts(value)
    assert info.value.field == "ts"
    assert field_of({**ev("page_view"), "ts": value}) == "ts"


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["price", "quantity"])
def test_bools_and_non_finite_rejected_where_numbers_expected(name: str, value: Any) -> None:
    assert field_of(ev("add_to_cart", **{name: value})) == name


@pytest.mark.parametrize("value", [True, float("nan"), float("inf")])
def test_bools_and_non_finite_rejected_for_total_and_propensity(value: Any) -> None:
    assert field_of(ev("purchase", total=value)) == "total"
    assert field_of(ev("offer_impression", propensity=value)) == "propensity"
    if value is True:
        assert field_of(ev("offer_impression", position=True)) == "position"


def test_errors_are_value_errors_with_a_readable_message() -> None:
    with pytest.raises(ValueError, match=r"^items\[0\]\.price: "):
        parse_event(ev("purchase", items=[{**ITEM, "price": "x"}]))
    assert issubclass(InvalidEvent, ValidationError)


def test_unknown_extra_fields_are_kept_in_data() -> None:
    obj = ev("page_view", referrer="newsletter", nested={"a": [1, 2]})
    e = parse_event(obj)
    assert e.get("referrer") == "newsletter"
    assert e.data["nested"] == {"a": [1, 2]}
    assert e.get("missing", 42) == 42
    assert orjson.loads(encode_event(e)) == obj


def test_non_object_event_rejected_with_empty_field() -> None:
    for value in ([], "e", 1, None, True):
        assert field_of(value) == ""


# ---- parse_payload ---------------------------------------------------------------------------


def test_payload_single_object() -> None:
    out = parse_payload(orjson.dumps(ev("page_view")))
    assert len(out) == 1 and isinstance(out[0], Event) and out[0].event_id == "e1"


def test_payload_array_mixed_good_and_bad_gives_per_index_results() -> None:
    good2 = {**ev("add_to_cart"), "event_id": "e2"}
    bad = {**ev("page_view"), "ts": "2024-05-01T10:00:00"}
    body = orjson.dumps([ev("page_view"), bad, good2, 5])
    out = parse_payload(body)
    assert len(out) == 4
    assert isinstance(out[0], Event) and out[0].event_id == "e1"
    assert isinstance(out[1], InvalidEvent) and out[1].field == "ts"
    assert isinstance(out[2], Event) and out[2].event_id == "e2"
    assert isinstance(out[3], InvalidEvent) and out[3].field == ""


def test_payload_empty_array_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="empty batch"):
        parse_payload(b" [ ] ")


def test_deeply_nested_and_oversized_events_are_refused() -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(InvalidEvent, match="nested deeper"):
        parse_event({**ev("page_view"), "extra": deep})
    big = orjson.dumps([{**ev("page_view"), "url": "u" * (600 * 1024)}, ev("search")])
    first, second = parse_payload(big)
    assert isinstance(first, InvalidEvent) and "larger than" in str(first)
    assert isinstance(second, Event)


def test_payload_ndjson_with_bad_line_names_the_line() -> None:
    lines = [orjson.dumps(ev("page_view")), b"{not json", orjson.dumps({**ev("search"), "event_id": "e3"}),
             orjson.dumps({**ev("offer_click"), "offer_id": None})]
    out = parse_payload(b"\n".join(lines) + b"\n")
    assert len(out) == 4
    assert isinstance(out[0], Event)
    assert isinstance(out[1], InvalidEvent) and "line 2" in str(out[1])
    assert isinstance(out[2], Event) and out[2].event_id == "e3"
    assert isinstance(out[3], InvalidEvent) and out[3].field == "offer_id"


def test_payload_ndjson_line_numbers_count_blank_lines() -> None:
    body = orjson.dumps(ev("page_view")) + b"\n\n\r\n" + b"oops\n" + orjson.dumps(ev("search"))
    out = parse_payload(body)
    assert len(out) == 3
    assert isinstance(out[1], InvalidEvent) and "line 4" in str(out[1])


def test_payload_ndjson_accepts_crlf() -> None:
    body = orjson.dumps(ev("page_view")) + b"\r\n" + orjson.dumps({**ev("search"), "event_id": "e2"}) + b"\r\n"
    out = parse_payload(body)
    assert [e.event_id for e in out if isinstance(e, Event)] == ["e1", "e2"]


@pytest.mark.parametrize("body", [b"", b"   \n\t "])
def test_payload_empty_body_rejected(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_payload(body)
    assert "empty" in str(info.value)


@pytest.mark.parametrize("body", [b"not json", b"{\"event_id\": ", b"\xff\xfe\x00", b"<xml/>"])
def test_payload_non_json_rejected(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_payload(body)


# ---- properties ------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["event_id", "type", "customer_id", "ts", "items", "item_id", "price",
                               "quantity", "category", "channel", "total", "offer_id", "position",
                               "propensity", "consent", "exclude_categories", "channels", "url"])
near_events = st.builds(
    lambda etype, patch, drop: {k: v for k, v in {**ev(etype), **patch}.items() if k not in drop},
    st.sampled_from(sorted(EVENT_TYPES)),
    st.dictionaries(field_names, json_values | st.sampled_from([TS, "2024-05-01T10:00:00Z", [ITEM]]),
                    max_size=3),
    st.sets(field_names, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(json_values | near_events)
def test_parse_event_returns_event_or_raises_invalid_event(value: Any) -> None:
    try:
        e = parse_event(value)
    except InvalidEvent as exc:
        assert isinstance(exc.field, str)
    else:
        assert isinstance(e, Event) and e.type in EVENT_TYPES
        assert isinstance(e.ts, int) and 631_152_000_000 <= e.ts < 4_102_444_800_000
        assert not isinstance(e.ts, bool) and math.isfinite(e.ts)


def _dumps(value: Any) -> bytes:
    # stdlib json: unlike orjson it writes big ints and NaN, which the parser must then refuse
    return json.dumps(value).encode()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200)
       | st.one_of(json_values, near_events, st.lists(near_events, max_size=3)).map(_dumps)
       | st.lists(near_events, min_size=1, max_size=3).map(lambda vs: b"\n".join(map(_dumps, vs))))
def test_parse_payload_returns_list_or_raises_invalid_event(body: bytes) -> None:
    try:
        out = parse_payload(body)
    except InvalidEvent:
        return
    assert isinstance(out, list)
    assert all(isinstance(x, Event | InvalidEvent) for x in out)


@pytest.mark.parametrize("value, ok", [
    ("c1", True), (" c1", True), ("c1 ", True), ("x" * 256, True), ("x" * 257, False), ("", False),
    ("   ", False), ("\t\n", False), (5, False), (True, False), (["c1"], False),
])
def test_id_fast_path_agrees_with_the_rule(value: Any, ok: bool) -> None:
    obj = {**BASE, "type": "page_view", "customer_id": value}
    if ok:
        assert parse_event(obj).customer_id == value
    else:
        assert field_of(obj) == "customer_id"


@pytest.mark.parametrize("ts, ok", [
    (631_152_000_000, True), (4_102_444_799_999, True), (631_151_999_999, False),
    (4_102_444_800_000, False), (True, False), (TS + 0.5, True),
])
def test_ts_fast_path_agrees_with_the_range(ts: Any, ok: bool) -> None:
    obj = {**BASE, "type": "page_view", "ts": ts}
    if ok:
        assert parse_event(obj).ts == int(ts)
    else:
        assert field_of(obj) == "ts"


def test_depth_limit_holds_in_lists_and_objects() -> None:
    deep: Any = "x"
    for i in range(40):
        deep = [deep] if i % 2 else {"k": deep}
    assert field_of({**BASE, "type": "page_view", "extra": deep}) == ""
    shallow: Any = "x"
    for i in range(30):
        shallow = [shallow] if i % 2 else {"k": shallow}
    assert parse_event({**BASE, "type": "page_view", "extra": shallow}).event_id == "e1"
