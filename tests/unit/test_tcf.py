"""Tests for models.tcf: the strict TCF v2.2 TC string decoder and its flag mapping."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models._bits import ALPHABET, BitReader, BitWriter, base64url_to_bits
from models.errors import InvalidConsent
from models.tcf import (
    MAX_TC_STRING_LENGTH,
    V23_REQUIRED_FROM,
    PublisherRestriction,
    PublisherTC,
    TCString,
    VendorSet,
    decode_tc_string,
    encode_tc_string,
    tcf_flags,
)

# Examples published in the IAB "Consent string and vendor list formats v2" spec.
SPEC_SERVICE_SPECIFIC = (
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA"
    ".argAC0gAAAAAAAAAAAA"
)
_SPEC_OOB_BODY = (
    "FukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQAA"
    "AAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA"
)
SPEC_GLOBAL_FOUR_SEGMENTS = (
    "COw4XqLOw4XqLAAAAAENAXCAAAAAAAAAAAAAAAAAAAAA"
    f".I{_SPEC_OOB_BODY}"  # DisclosedVendors: 'I' = 001000, segment type 1
    f".Q{_SPEC_OOB_BODY}"  # AllowedVendors: 'Q' = 010000, segment type 2
    ".YAAAAAAAAAAAAAAAAAA"  # PublisherTC: 'Y' = 011000, segment type 3
)
SPEC_WITH_DISCLOSED = (
    "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
    ".IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARA"
    "EQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw"
)
REAL_WORLD_LOOKING = (
    "CGL23UdMFJzvuA9ACCENAXCEAC0AAGrAAA5YA5ht7-_d_7_vd-f-nrf4_4A4hM4JCKoK4YhmAqABgAEgAA"
    ".IFut_a83_Ma_t-_SvB3v4-IAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAE"
    "QAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA"
    ".QFulWfTw4obx_Z2zUj6XkNIAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAE"
    "QAAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA"
)
VALID_EXAMPLES = [
    SPEC_SERVICE_SPECIFIC,
    SPEC_GLOBAL_FOUR_SEGMENTS,
    SPEC_WITH_DISCLOSED,
    REAL_WORLD_LOOKING,
]
CORE_FIXED_BITS = 213  # Version .. PublisherCC


def ts(deciseconds: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=100 * deciseconds)


def core_header_bits() -> str:
    """The 213 fixed bits of a valid core segment, to which tests append hand-built sections."""
    return base64url_to_bits(encode_tc_string(TCString(cmp_id=7)), "t")[:CORE_FIXED_BITS]


def to_b64(bits: str) -> str:
    w = BitWriter()
    w.write_bits(bits)
    return w.to_base64url()


def bits_of(*fields: tuple[int, int]) -> str:
    return "".join(format(v, f"0{n}b") for v, n in fields)


def empty_vendor_sections() -> str:
    return bits_of((0, 16), (0, 1)) * 2 + bits_of((0, 12))


def assert_rejected(tc: object, field_prefix: str = "tcf") -> InvalidConsent:
    with pytest.raises(InvalidConsent) as info:
        decode_tc_string(tc)  # type: ignore[arg-type]
    assert info.value.field.startswith(field_prefix), info.value.field
    assert info.value.reason
    return info.value


# ----------------------------------------------------------------------------- spec examples


def test_spec_service_specific_example_fields():
    tc = decode_tc_string(SPEC_SERVICE_SPECIFIC)
    assert tc.version == 2
    assert int(tc.created.timestamp()) == 1228644257
    assert int(tc.last_updated.timestamp()) == 1326215413
    assert tc.created.tzinfo is UTC
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (21, 7, 2)
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 23
    assert tc.is_service_specific is True
    assert tc.purpose_consents == frozenset({1, 3, 9, 10})
    assert tc.purpose_legitimate_interests == frozenset({3, 4, 5, 8, 9, 10})
    assert tc.vendor_consents.max_id == 115
    assert tc.publisher_restrictions == ()
    assert tc.disclosed_vendors is None and tc.allowed_vendors is None
    assert tc.publisher_tc is not None
    assert tc.publisher_tc.num_custom_purposes == 0


def test_spec_global_example_with_all_four_segments():
    tc = decode_tc_string(SPEC_GLOBAL_FOUR_SEGMENTS)
    assert tc.vendor_list_version == 23
    assert tc.is_service_specific is False
    assert tc.purpose_consents == frozenset()
    assert len(tc.vendor_consents) == 0
    assert tc.disclosed_vendors is not None and tc.allowed_vendors is not None
    assert tc.disclosed_vendors == tc.allowed_vendors  # the spec reuses the same body
    assert tc.publisher_tc == PublisherTC()


def test_spec_example_with_disclosed_vendors():
    tc = decode_tc_string(SPEC_WITH_DISCLOSED)
    assert (tc.cmp_id, tc.vendor_list_version) == (27, 15)
    assert tc.purpose_consents == frozenset({1, 2, 3})
    assert list(tc.vendor_consents) == [2, 6, 8]
    assert tc.disclosed_vendors is not None and len(tc.disclosed_vendors) > 0


def test_real_world_looking_string_decodes():
    tc = decode_tc_string(REAL_WORLD_LOOKING)
    assert tc.version == 2 and tc.cmp_id == 61
    assert tc.publisher_cc.isalpha() and len(tc.publisher_cc) == 2


def test_spec_example_with_malformed_allowed_segment_is_rejected():
    # The spec's "Example 3" appends ".PVAfDObdrA": type 1 with a range section far longer than
    # the segment. It cannot be parsed, so it must not be trusted.
    assert_rejected(SPEC_WITH_DISCLOSED + ".PVAfDObdrA", "tcf.disclosed_vendors")


@pytest.mark.parametrize("example", VALID_EXAMPLES)
@pytest.mark.parametrize("range_encoding", [False, True])
def test_spec_examples_reencode_to_same_value(example, range_encoding):
    tc = decode_tc_string(example)
    assert decode_tc_string(encode_tc_string(tc, range_encoding=range_encoding)) == tc


@pytest.mark.parametrize("example", VALID_EXAMPLES)
def test_every_core_prefix_raises_or_equals(example):
    # Spec strings carry zero padding, so a prefix that only drops padding may decode, and then
    # it must decode to exactly the same value; anything shorter must raise.
    core = example.split(".")[0]
    full = decode_tc_string(core)
    for k in range(1, len(core)):
        with contextlib.suppress(InvalidConsent):
            assert decode_tc_string(core[:k]) == full
    for k in range(1, (CORE_FIXED_BITS + 17 * 2 + 12) // 6):
        assert_rejected(core[:k], "tcf.core")


def test_bit_offsets_follow_the_spec_layout():
    tc = TCString(
        created=ts(0xABCDEF12),
        last_updated=ts(0x123456789),
        cmp_id=0xABC,
        cmp_version=0x123,
        consent_screen=33,
        consent_language="FR",
        vendor_list_version=0xFED,
        tcf_policy_version=4,
        is_service_specific=True,
        special_feature_optins=frozenset({1, 12}),
        purpose_consents=frozenset({1, 24}),
        purpose_legitimate_interests=frozenset({2}),
        purpose_one_treatment=True,
        publisher_cc="DE",
    )
    r = BitReader(base64url_to_bits(encode_tc_string(tc), "t"))
    read = [
        r.read_int(n, "t") for n in (6, 36, 36, 12, 12, 6, 6, 6, 12, 6, 1, 1, 12, 24, 24, 1, 6, 6)
    ]
    assert read == [
        2, 0xABCDEF12, 0x123456789, 0xABC, 0x123, 33, 5, 17, 0xFED, 4, 1, 0,
        0b100000000001, 0b100000000000000000000001, 0b010000000000000000000000, 1, 3, 4,
    ]  # fmt: skip


# ----------------------------------------------------------------------------- round trips

FULL = TCString(
    version=2,
    created=ts(15_000_000_000),
    last_updated=ts(17_000_000_003),
    cmp_id=300,
    cmp_version=12,
    consent_screen=3,
    consent_language="DE",
    vendor_list_version=150,
    tcf_policy_version=4,
    is_service_specific=True,
    use_non_standard_texts=True,
    special_feature_optins=frozenset({1, 2}),
    purpose_consents=frozenset({1, 2, 5, 6, 7, 8, 9, 10}),
    purpose_legitimate_interests=frozenset({2, 7}),
    purpose_one_treatment=False,
    publisher_cc="FR",
    vendor_consents=VendorSet.from_ranges([(1, 40), (755, 755), (1000, 1200)]),
    vendor_legitimate_interests=VendorSet.of([3, 99]),
    publisher_restrictions=(
        PublisherRestriction(2, 1, VendorSet.of([7])),
        PublisherRestriction(5, 0, VendorSet.from_ranges([(10, 20)])),
    ),
    disclosed_vendors=VendorSet.from_ranges([(1, 2000)]),
    allowed_vendors=VendorSet.of([4]),
    publisher_tc=PublisherTC(
        frozenset({1, 3}), frozenset({2}), 5, frozenset({1, 5}), frozenset({2})
    ),
)


@pytest.mark.parametrize("range_encoding", [False, True])
def test_round_trip_full_string(range_encoding):
    encoded = encode_tc_string(FULL, range_encoding=range_encoding)
    assert encoded.count(".") == 3
    assert decode_tc_string(encoded) == FULL


def test_bitfield_and_range_encodings_decode_to_the_same_vendors():
    a = encode_tc_string(FULL, range_encoding=False)
    b = encode_tc_string(FULL, range_encoding=True)
    assert a != b
    assert decode_tc_string(a).vendor_consents == decode_tc_string(b).vendor_consents


def test_minimal_string_round_trips():
    assert decode_tc_string(encode_tc_string(TCString())) == TCString()


def test_publisher_restrictions_with_same_key_are_merged():
    bits = core_header_bits() + bits_of((0, 16), (0, 1)) * 2 + bits_of((2, 12))
    entry = bits_of((5, 6), (0, 2), (1, 12), (0, 1), (4, 16))
    core = to_b64(bits + entry + bits_of((5, 6), (0, 2), (1, 12), (1, 1), (5, 16), (9, 16)))
    tc = decode_tc_string(core)
    assert tc.publisher_restrictions == (
        PublisherRestriction(5, 0, VendorSet.from_ranges([(4, 9)])),
    )


def test_optional_segments_in_any_order():
    base = encode_tc_string(FULL).split(".")
    assert decode_tc_string(".".join([base[0], base[3], base[1], base[2]])) == FULL
    assert decode_tc_string(base[0] + "." + base[3]).disclosed_vendors is None


def test_vendor_set_behaviour():
    s = VendorSet.from_ranges([(5, 9), (1, 2), (3, 3), (8, 12)])
    assert s.ranges == ((1, 3), (5, 12))
    assert 4 not in s and 12 in s and 13 not in s and "5" not in s
    assert len(s) == 11 and s.max_id == 12
    assert VendorSet.of(iter(s)) == s
    assert len(VendorSet()) == 0 and VendorSet().max_id == 0


# ----------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("value", [None, b"CAAA", 42, ["C"], SPEC_SERVICE_SPECIFIC.encode()])
def test_non_strings_rejected(value):
    assert assert_rejected(value).field == "tcf"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " " + SPEC_WITH_DISCLOSED,
        SPEC_WITH_DISCLOSED + "\n",
        SPEC_WITH_DISCLOSED.replace("AAAAAAAAAAA", "AAAAA AAAAA", 1),
        SPEC_WITH_DISCLOSED.replace("-", "+").replace("A", "/", 1),
        SPEC_WITH_DISCLOSED.split(".")[0] + "=",
        SPEC_WITH_DISCLOSED.split(".")[0] + "A==",
        "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAé",
        "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKA\x00",
    ],
)
def test_bad_text_rejected(value):
    assert_rejected(value)


@pytest.mark.parametrize(
    "value",
    [
        SPEC_WITH_DISCLOSED.split(".")[0] + ".",
        "." + SPEC_WITH_DISCLOSED,
        SPEC_WITH_DISCLOSED.replace(".", ".."),
    ],
)
def test_empty_segments_rejected(value):
    assert "empty" in assert_rejected(value).reason


def test_too_long_rejected():
    assert_rejected(encode_tc_string(TCString()) + "A" * MAX_TC_STRING_LENGTH)


@pytest.mark.parametrize("version", [0, 1, 3, 63])
def test_wrong_version_rejected(version):
    error = assert_rejected(encode_tc_string(TCString(version=version)), "tcf.core.version")
    assert str(version) in error.reason


def test_tcf_v1_string_rejected():
    assert_rejected("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "tcf.core.version")


@pytest.mark.parametrize("range_encoding", [False, True])
def test_every_truncated_prefix_of_constructed_core_raises(range_encoding):
    core = encode_tc_string(FULL, range_encoding=range_encoding).split(".")[0]
    for k in range(1, len(core) - 1):  # padding is < 12 bits, so these all drop real bits
        assert_rejected(core[:k], "tcf.core")
    with contextlib.suppress(InvalidConsent):
        assert decode_tc_string(core[:-1]) == decode_tc_string(core)


@pytest.mark.parametrize("part", [1, 2, 3])
def test_truncated_optional_segment_rejected(part):
    segments = encode_tc_string(FULL).split(".")
    segments[part] = segments[part][: len(segments[part]) // 2]
    assert_rejected(".".join(segments), "tcf.")


def range_core(entries: list[tuple[int, int, int]], max_id: int = 50, num: int | None = None):
    section = bits_of((max_id, 16), (1, 1), (len(entries) if num is None else num, 12))
    for is_range, start, end in entries:
        section += bits_of((is_range, 1), (start, 16)) + (bits_of((end, 16)) if is_range else "")
    return to_b64(core_header_bits() + section + bits_of((0, 16), (0, 1), (0, 12)))


def test_hand_built_range_section_decodes():
    tc = decode_tc_string(range_core([(0, 3, 0), (1, 10, 12), (1, 50, 50)]))
    assert list(tc.vendor_consents) == [3, 10, 11, 12, 50]


@pytest.mark.parametrize(
    "entries",
    [
        [(1, 10, 9)],  # end < start
        [(0, 0, 0)],  # id 0
        [(1, 0, 5)],  # start 0
        [(0, 51, 0)],  # > MaxVendorId
        [(1, 40, 51)],  # end > MaxVendorId
        [(0, 3, 0), (1, 60, 70)],
    ],
)
def test_bad_ranges_rejected(entries):
    assert_rejected(range_core(entries), "tcf.core.vendor_consents.entries")


def test_num_entries_overrun_rejected():
    error = assert_rejected(
        range_core([(0, 3, 0)], num=4000), "tcf.core.vendor_consents.num_entries"
    )
    assert "4000" in error.reason


def test_bitfield_longer_than_string_rejected():
    bits = core_header_bits() + bits_of((60000, 16), (0, 1)) + "1" * 100
    assert_rejected(to_b64(bits), "tcf.core.vendor_consents.bitfield")


@pytest.mark.parametrize(
    ("purpose", "kind", "field"),
    [(5, 3, "restriction_type"), (0, 0, "purpose_id"), (25, 0, "purpose_id")],
)
def test_bad_publisher_restrictions_rejected(purpose, kind, field):
    bits = core_header_bits() + bits_of((0, 16), (0, 1)) * 2 + bits_of((1, 12))
    bits += bits_of((purpose, 6), (kind, 2), (1, 12), (0, 1), (4, 16))
    assert_rejected(to_b64(bits), f"tcf.core.publisher_restrictions[0].{field}")


def test_restriction_range_with_vendor_zero_rejected():
    bits = core_header_bits() + bits_of((0, 16), (0, 1)) * 2 + bits_of((1, 12))
    bits += bits_of((5, 6), (0, 2), (1, 12), (0, 1), (0, 16))
    assert_rejected(to_b64(bits), "tcf.core.publisher_restrictions[0].entries[0]")


def test_bad_letters_rejected():
    bits = core_header_bits()
    bad = bits[:108] + bits_of((26, 6)) + bits[114:]
    assert_rejected(to_b64(bad + empty_vendor_sections()), "tcf.core.consent_language")


def test_zero_padding_accepted_but_nonzero_trailing_bits_rejected():
    bits = core_header_bits() + empty_vendor_sections()
    assert decode_tc_string(to_b64(bits + "0" * 60)).cmp_id == 7
    assert "padding" in assert_rejected(to_b64(bits + "0" * 20 + "1"), "tcf.core").reason


def test_nonzero_trailing_bits_in_optional_segment_rejected():
    seg = to_b64(bits_of((1, 3), (3, 16), (0, 1)) + "111" + "0001")
    assert_rejected(encode_tc_string(TCString()) + "." + seg, "tcf.disclosed_vendors")


def test_second_core_segment_rejected():
    core = encode_tc_string(TCString())
    assert "core" in assert_rejected(f"{core}.{core}", "tcf.segment[1]").reason


@pytest.mark.parametrize("seg_type", [4, 5, 6, 7])
def test_unknown_segment_type_rejected(seg_type):
    seg = to_b64(bits_of((seg_type, 3)) + "0" * 30)
    error = assert_rejected(encode_tc_string(TCString()) + "." + seg, "tcf.segment[1].segment_type")
    assert str(seg_type) in error.reason


def test_duplicate_optional_segment_rejected():
    encoded = encode_tc_string(TCString(publisher_tc=PublisherTC()))
    assert_rejected(encoded + "." + encoded.split(".")[1], "tcf.publisher_tc")


def test_malformed_publisher_tc_custom_purposes_rejected():
    seg = to_b64(bits_of((3, 3), (0, 24), (0, 24), (40, 6)) + "1" * 40)  # LI bits missing
    assert_rejected(encode_tc_string(TCString()) + "." + seg, "tcf.publisher_tc")


def test_encoder_refuses_values_that_do_not_fit():
    for bad in (
        TCString(purpose_consents=frozenset({25})),
        TCString(consent_language="ENG"),
        TCString(cmp_id=4096),
        TCString(publisher_cc="d1"),
    ):
        with pytest.raises(ValueError):
            encode_tc_string(bad)


# ----------------------------------------------------------------------------- flags


TCF_FLAGS = ("profile", "personalize", "measurement", "training")


def flags_for(purposes: set[int], **kw) -> dict[str, bool]:
    tc = decode_tc_string(encode_tc_string(TCString(purpose_consents=frozenset(purposes), **kw)))
    return tcf_flags(tc)


def test_flag_mapping():
    assert flags_for(set()) == dict.fromkeys(TCF_FLAGS, False)
    assert flags_for({5}) == {**dict.fromkeys(TCF_FLAGS, False), "profile": True}
    assert flags_for({6})["personalize"] is True
    assert flags_for({7, 8, 9})["measurement"] is True
    assert flags_for({5, 10})["training"] is True
    assert flags_for(set(range(1, 25))) == dict.fromkeys(TCF_FLAGS, True)


@pytest.mark.parametrize("missing", [7, 8, 9])
def test_measurement_needs_all_of_7_8_9(missing):
    assert flags_for({7, 8, 9} - {missing})["measurement"] is False


def test_training_needs_5_and_10():
    assert flags_for({10})["training"] is False
    assert flags_for({5})["training"] is False


def test_marketing_and_sharing_are_absent_not_false():
    flags = flags_for(set(range(1, 25)))
    assert "marketing" not in flags and "sharing" not in flags


def test_legitimate_interest_never_grants():
    tc = TCString(
        purpose_legitimate_interests=frozenset(range(1, 25)),
        vendor_legitimate_interests=VendorSet.of([9]),
    )
    tc = decode_tc_string(encode_tc_string(tc))
    assert not any(tcf_flags(tc).values())
    assert not any(tcf_flags(tc, vendor_id=9).values())


def test_vendor_id_requires_vendor_consent():
    tc = TCString(purpose_consents=frozenset(range(1, 11)), vendor_consents=VendorSet.of([9]))
    assert all(tcf_flags(tc, vendor_id=9).values())
    assert not any(tcf_flags(tc, vendor_id=10).values())
    assert all(tcf_flags(tc).values())


@pytest.mark.parametrize("kind", [0, 2])
def test_blocking_restriction_removes_only_that_purpose(kind):
    tc = TCString(
        purpose_consents=frozenset(range(1, 11)),
        vendor_consents=VendorSet.of([9, 11]),
        publisher_restrictions=(PublisherRestriction(8, kind, VendorSet.from_ranges([(5, 9)])),),
    )
    tc = decode_tc_string(encode_tc_string(tc))
    flags = tcf_flags(tc, vendor_id=9)
    assert flags == {"profile": True, "personalize": True, "measurement": False, "training": True}
    assert all(tcf_flags(tc, vendor_id=11).values())  # restriction covers 5..9 only
    assert all(tcf_flags(tc).values())  # purpose-level view ignores per-vendor restrictions


def test_require_consent_restriction_does_not_block():
    tc = TCString(
        purpose_consents=frozenset({5, 6}),
        vendor_consents=VendorSet.of([9]),
        publisher_restrictions=(PublisherRestriction(5, 1, VendorSet.of([9])),),
    )
    assert tcf_flags(tc, vendor_id=9)["profile"] is True


@pytest.mark.parametrize("vendor_id", [0, -1, 65536, True, "9", 9.0])
def test_bad_vendor_id_rejected(vendor_id):
    with pytest.raises(InvalidConsent) as info:
        tcf_flags(TCString(), vendor_id=vendor_id)
    assert info.value.field == "tcf.vendor_id"


def test_spec_example_flags():
    # Purposes 1, 3, 9, 10 only: nothing offerstream uses is granted.
    assert not any(tcf_flags(decode_tc_string(SPEC_SERVICE_SPECIFIC)).values())


# ----------------------------------------------------------------------------- properties

B64_TEXT = st.text(alphabet=ALPHABET + ".", max_size=200)


def check_total(value: object) -> None:
    try:
        tc = decode_tc_string(value)  # type: ignore[arg-type]
    except InvalidConsent:
        return
    assert isinstance(tc, TCString) and tc.version == 2
    assert decode_tc_string(encode_tc_string(tc)) == tc


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_raises_invalid_consent_or_parses(value):
    check_total(value)


@settings(max_examples=500)
@given(B64_TEXT.map(lambda s: "C" + s))
def test_base64url_text_starting_like_v2_raises_invalid_consent_or_parses(value):
    check_total(value)


@settings(max_examples=300)
@given(st.sampled_from(VALID_EXAMPLES), st.integers(0, 10_000), st.sampled_from(ALPHABET + "."))
def test_mutated_examples_raise_invalid_consent_or_parse(example, pos, char):
    pos %= len(example)
    check_total(example[:pos] + char + example[pos + 1 :])


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_random_bits_after_valid_header_raise_invalid_consent_or_parse(data):
    check_total(to_b64(core_header_bits() + "".join(format(b, "08b") for b in data)))


ids = st.frozensets(st.integers(1, 24), max_size=24)
vendor_sets = st.one_of(
    st.frozensets(st.integers(1, 700), max_size=40).map(VendorSet.of),
    st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 400)), max_size=8).map(
        lambda rs: VendorSet.from_ranges((s, s + n) for s, n in rs)
    ),
)
letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
times = st.integers(0, 2**36 - 1).map(ts)
restrictions = st.dictionaries(
    st.tuples(st.integers(1, 24), st.integers(0, 2)), vendor_sets, max_size=4
).map(lambda d: tuple(PublisherRestriction(p, k, v) for (p, k), v in sorted(d.items())))
publisher_tcs = st.integers(0, 63).flatmap(
    lambda n: st.builds(
        PublisherTC,
        ids,
        ids,
        st.just(n),
        st.frozensets(st.integers(1, n), max_size=n) if n else st.just(frozenset()),
        st.frozensets(st.integers(1, n), max_size=n) if n else st.just(frozenset()),
    )
)
tc_strings = st.builds(
    TCString,
    created=times,
    last_updated=times,
    cmp_id=st.integers(0, 4095),
    cmp_version=st.integers(0, 4095),
    consent_screen=st.integers(0, 63),
    consent_language=letters,
    vendor_list_version=st.integers(0, 4095),
    tcf_policy_version=st.integers(0, 63),
    is_service_specific=st.booleans(),
    use_non_standard_texts=st.booleans(),
    special_feature_optins=st.frozensets(st.integers(1, 12)),
    purpose_consents=ids,
    purpose_legitimate_interests=ids,
    purpose_one_treatment=st.booleans(),
    publisher_cc=letters,
    vendor_consents=vendor_sets,
    vendor_legitimate_interests=vendor_sets,
    publisher_restrictions=restrictions,
    disclosed_vendors=st.none() | vendor_sets,
    allowed_vendors=st.none() | vendor_sets,
    publisher_tc=st.none() | publisher_tcs,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tc_strings, st.booleans())
def test_encode_decode_round_trip(tc, range_encoding):
    encoded = encode_tc_string(tc, range_encoding=range_encoding)
    assert set(encoded) <= set(ALPHABET + ".")
    if tc.created >= V23_REQUIRED_FROM and tc.disclosed_vendors is None:
        with pytest.raises(InvalidConsent) as excinfo:  # TCF v2.3: the segment is mandatory
            decode_tc_string(encoded)
        assert excinfo.value.field == "tcf.disclosed_vendors"
    else:
        assert decode_tc_string(encoded) == tc
