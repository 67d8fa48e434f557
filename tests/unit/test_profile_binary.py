"""Schema v4, the binary stored form of a profile: exact round trips, old versions, bad bytes."""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import profile_binary
from models.errors import ValidationError
from models.profile import (
    CATEGORY_HALF_LIVES_MS,
    DAY_MS,
    HALF_LIVES_MS,
    JSON_STORED_VERSION,
    PROFILE_EVENT_TYPES,
    SCHEMA_VERSION,
    SPEND_HALF_LIVES_MS,
    Profile,
)
from stream.ingest_state import LiveState

T0 = 1_514_419_200_000


def _canonical(value: Any) -> Any:
    if type(value) is float:
        return ("f", struct.pack("<d", value))
    if isinstance(value, dict):
        return ("d", [(_canonical(k), _canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("l", [_canonical(v) for v in value])
    return (type(value).__name__, value)


def _bits(p: Profile) -> list[Any]:
    """Every field, floats bit for bit, int/float types and key order included."""
    return [_canonical(getattr(p, f.name)) for f in fields(p)]


def _realistic() -> Profile:
    """A Complete Journey household at about the p99 stored size: 3 event types, 8 categories,
    12 campaigns, 48 recent event keys, in-store orders (times at whole seconds)."""
    p = Profile(n_events=102, first_ts=T0 - 30_687_938_000, last_ts=T0,
                last_purchase_ts=T0 - 512_758_000, session=[T0, T0, 1])
    p.counts = {"purchase": [1513906442000.0, 1.0000000000000002, 1.3516334243003125,
                             10.072374650711694],
                "offer_impression": [1514419200000.0, 1.0, 1.0000002388842404, 2.82909616856631],
                "offer_redeem": [1513857600000.0, 2.0, 2.000000000001819, 3.241759463683966]}
    names = ["GROCERY", "MEAT-PCKGD", "DRUG GM", "PRODUCE", "FUEL", "DELI", "MEAT", "MISCELLANEOUS"]
    p.categories = {n: [1513906442000.0 - 86_400_000.0 * i, 5.0 + i / 7, 70.3952342294695 / (i + 1)]
                    for i, n in enumerate(names)}
    p.spend = [1513906442000.0, 59.809932521745445]
    for i in range(12):
        last_imp = T0 - (12 - i) * 14 * DAY_MS
        p.offers[f"cj-campaign-{5 + 2 * i}"] = [1, 0, i % 3, 0, last_imp, last_imp // DAY_MS, 1]
    p.seen = [f"{i * 2654435761 % 2**32:08x}" for i in range(48)]
    p.orders = {"store": [79.0, 515.3399999999999]}
    p.first_purchase_ts = T0 - 30_000_000_000
    p.savings = [40_321, 1_250, 6]
    return p


def test_layout_matches_the_profile_constants() -> None:
    # a change here needs a new schema version, not a silent change of the layout
    assert set(profile_binary.EVENT_TYPE_CODES) == PROFILE_EVENT_TYPES
    assert len(profile_binary.EVENT_TYPE_CODES) == len(set(profile_binary.EVENT_TYPE_CODES))
    cells = (len(HALF_LIVES_MS), len(CATEGORY_HALF_LIVES_MS), len(SPEND_HALF_LIVES_MS))
    assert cells == profile_binary.CELL_VALUES
    assert profile_binary.DAY_MS == DAY_MS and SCHEMA_VERSION == profile_binary.VERSION == 4


def test_realistic_profile_is_under_1_kib_and_exact() -> None:
    p = _realistic()
    raw = p.to_bytes(9_999_999_999)
    v3 = orjson.dumps({**p.to_state(), "_o": 9_999_999_999})
    assert raw[0] == SCHEMA_VERSION
    assert len(raw) <= 1024 and len(raw) < 0.65 * len(v3)
    again, offset = Profile.from_stored(raw)
    assert offset == 9_999_999_999 and _bits(again) == _bits(p)
    assert again.to_bytes(9_999_999_999) == raw


finite = st.floats(allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)
times = st.integers(T0 - 2**9, T0 + 2**9) | st.integers(-(2**40), 2**45)
name = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)


# any t_ref: integral or not, NaN, infinities, -0.0; within 2**53 so last_ts - t_ref fits 64 bits
# (beyond that a profile is stored as v3: test_what_v4_cannot_hold_...)
_SPECIAL = [float("nan"), float("inf"), float("-inf")]
t_refs = st.floats(-(2.0**53), 2.0**53) | st.sampled_from(_SPECIAL)


def _cell(n: int, integral_t: bool) -> Any:
    t_ref = times.map(float) if integral_t else t_refs
    return st.tuples(t_ref, *([any_float] * n)).map(list)


@st.composite
def profiles(draw: Any) -> Profile:
    integral = draw(st.booleans())
    p = Profile(n_events=draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        p.last_ts = draw(times)
        p.first_ts = draw(times)
        p.last_purchase_ts = draw(st.none() | times)
        p.session = [draw(times), draw(times), draw(st.integers(0, 2**32 - 1))]
        counter = st.integers(0, 300) | st.integers(0, 2**40)
        offer = st.tuples(*[counter] * 4, times, st.integers(-(2**31), 2**31),
                          st.integers(0, 300)).map(list)
        p.offers = draw(st.dictionaries(name, offer, max_size=6))
    types = draw(st.lists(st.sampled_from(sorted(PROFILE_EVENT_TYPES)), unique=True, max_size=4))
    p.counts = {t: draw(_cell(3, integral)) for t in types}
    p.categories = draw(st.dictionaries(name, _cell(2, integral), max_size=5))
    if draw(st.booleans()):
        p.spend = draw(_cell(1, integral))
    item = st.tuples(st.none() | name, any_float, any_float).map(list)
    p.cart = draw(st.dictionaries(name, item, max_size=3))
    p.orders = draw(st.dictionaries(name, st.tuples(any_float, any_float).map(list), max_size=2))
    p.returns = draw(st.tuples(any_float, any_float).map(list))
    p.seen = draw(st.lists(st.binary(min_size=4, max_size=4).map(bytes.hex), max_size=48))
    return p


@settings(max_examples=150, deadline=None)
@given(profiles(), st.none() | st.integers(-1, 2**62))
def test_random_profiles_round_trip_bit_for_bit(p: Profile, offset: int | None) -> None:
    raw = p.to_bytes(offset)
    assert raw[0] == SCHEMA_VERSION  # everything drawn here fits the binary layout
    again, stored_offset = Profile.from_stored(raw)
    assert _bits(again) == _bits(p)
    assert stored_offset == (-1 if offset is None else offset)
    assert again.to_bytes(offset) == raw


@pytest.mark.parametrize("divide", [False, True])
def test_int_columns_round_trip_at_every_width_boundary(divide: bool) -> None:
    edges = [0, 1, 127, 128, 255, 256, -1, -128, -129, 32767, 32768, -32768, -32769, 2**31 - 1,
             2**31, -(2**31), -(2**31) - 1, 2**63 - 1, -(2**63)]
    for values in [[v] for v in edges] + [[0, v] for v in edges] + [[255, 128, 0], [1000, 256_000]]:
        raw = profile_binary._int_column(values, divide)
        reader = profile_binary._Reader(raw)
        assert reader.ints(len(values), "t") == values and reader.pos == len(raw)


def test_small_counters_and_times_round_trip() -> None:
    # uint8 columns: every value 0..255, times whose deltas (divided by their divisor) are 128..255
    for n in range(256):
        p = Profile(first_ts=T0 - 2 * n, last_ts=T0, session=[T0 - 2 * n, T0 - 2, n],
                    counts={"search": [float(T0 - 2 * n), 1.0, 2.0, 3.0]},
                    offers={"o": [n, 255 - n, n // 2, 1, T0 - 2 * n, (T0 - 2 * n) // DAY_MS, n]})
        again, _ = Profile.from_stored(p.to_bytes(n))
        assert _bits(again) == _bits(p), n


def test_what_v4_cannot_hold_is_stored_as_v3_json_exactly() -> None:
    for change in ({"categories": {"a\x00b": [float(T0), 1.0, 2.0]}},  # NUL in a name
                   {"seen": ["0123456789ab", "ba9876543210"]},  # v1 event keys
                   {"n_events": 2**32},  # beyond the header's 32 bits
                   {"counts": {"search": [2.0**64, 1.0, 1.0, 1.0]}}):  # last_ts - t_ref: 64 bits
        p = Profile(first_ts=T0, last_ts=T0, session=[T0, T0, 1], **change)
        raw = p.to_bytes(12)
        assert orjson.loads(raw)["v"] == JSON_STORED_VERSION
        again, offset = Profile.from_stored(raw)
        assert offset == 12 and _bits(again) == _bits(p)


def test_old_stored_versions_are_read_with_their_offset() -> None:
    p = _realistic()
    v3 = orjson.dumps({**p.to_state(), "_o": 41})
    v2 = orjson.dumps({**p.to_dict(), "_o": 42})
    v1 = orjson.dumps({**p.to_dict(), "v": 1, "seen": p.seen})
    assert Profile.from_stored(v3)[1] == 41 and _bits(Profile.from_stored(v3)[0]) == _bits(p)
    assert Profile.from_stored(v2)[1] == 42 and _bits(Profile.from_stored(v2)[0]) == _bits(p)
    assert Profile.from_stored(v1)[1] == -1 and _bits(Profile.from_stored(v1)[0]) == _bits(p)
    assert Profile.from_stored(b"")[1] == -1 and Profile.from_stored(None)[0] == Profile()


class _Profiles:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def get(self, key: bytes) -> bytes:
        return self.raw


@pytest.mark.parametrize("stored", ["v3", "v4"])
def test_live_state_reads_the_stored_offset_of_either_form(stored: str) -> None:
    p = _realistic()
    raw = orjson.dumps({**p.to_state(), "_o": 77}) if stored == "v3" else p.to_bytes(77)
    state = LiveState(type("Topo", (), {"profiles": _Profiles(raw)})())
    assert state.already_applied("c1", 77) and not state.already_applied("c1", 78)
    assert _bits(state.read_profile("c1")) == _bits(p)


def test_every_truncation_is_an_error_naming_the_section() -> None:
    raw = _realistic().to_bytes(5)
    for cut in range(len(raw)):
        with pytest.raises(ValidationError) as info:
            Profile.from_stored(raw[:cut] if cut else raw[:1])
        assert info.value.field.startswith("profile.")
        assert "truncated" in info.value.reason or "names" in info.value.reason


def _corrupt(raw: bytes, at: int, byte: int) -> bytes:
    return raw[:at] + bytes([byte]) + raw[at + 1:]


def test_corrupt_bytes_give_clear_errors() -> None:
    raw = _realistic().to_bytes(5)
    cases = {
        "profile.end": raw + b"\x00",
        "profile.flags": _corrupt(raw, 1, profile_binary.PURCHASE_TS),  # without TIMES
        "profile.types": _corrupt(raw, profile_binary._HEADER.size + 16, 200),
        "profile.times": _corrupt(raw, profile_binary._HEADER.size + 19, 0x80),
        "profile.strings": raw[:-3] + b"\xff\xfe\xfd",
    }
    for field, bad in cases.items():
        with pytest.raises(ValidationError) as info:
            Profile.from_stored(bad)
        assert info.value.field == field, (field, str(info.value))
        assert "corrupt stored profile (schema v4)" in str(info.value)


def test_duplicate_names_and_bad_cart_bytes_are_rejected() -> None:
    p = Profile(first_ts=T0, last_ts=T0, session=[T0, T0, 1],
                categories={"a": [float(T0), 1.0, 2.0], "b": [float(T0), 1.0, 2.0]},
                cart={"x": ["a", 1.0, 2.0]})
    raw = p.to_bytes()
    with pytest.raises(ValidationError, match="occurs twice"):
        Profile.from_stored(raw.replace(b"a\x00b", b"a\x00a"))
    present_at = len(raw) - len(b"a\x00b\x00x\x00a") - 1
    assert raw[present_at] == 1
    with pytest.raises(ValidationError) as info:
        Profile.from_stored(_corrupt(raw, present_at, 2))
    assert info.value.field == "profile.cart"


def test_float_fields_keep_every_bit() -> None:
    nan = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]  # a NaN with a payload
    p = Profile(first_ts=T0, last_ts=T0, session=[T0, T0, 1], returns=[-0.0, nan],
                counts={"search": [float(T0), -0.0, float("inf"), 5e-324]},
                orders={"web": [1.0, float("-inf")]})
    again = Profile.from_bytes(p.to_bytes())
    assert _bits(again) == _bits(p)
    assert struct.pack("<d", again.returns[1]) == struct.pack("<d", nan)


def test_buys_section_is_checked() -> None:
    raw = _realistic().to_bytes(5)
    assert raw[1] & profile_binary.BUYS
    without = _realistic()
    without.first_purchase_ts = None  # savings without a first purchase: stored as v3 JSON
    with pytest.raises(ValueError, match="first purchase"):
        profile_binary.encode(without, 5)
    assert without.to_bytes()[0] != SCHEMA_VERSION and _bits(Profile.from_bytes(without.to_bytes())) == _bits(without)
    old = _realistic()
    old.first_purchase_ts, old.savings = None, [0, 0, 0]  # a profile from before: no BUYS flag
    assert not old.to_bytes(5)[1] & profile_binary.BUYS
    assert _bits(Profile.from_stored(old.to_bytes(5))[0]) == _bits(old)
