"""TCF v2.3 in the decoder (issue 16, item 1) and the TCF bases (item 2), on test vectors.

Vectors come from two places:

- the project's own encoder (:func:`models.tcf.encode_tc_string`), for every case;
- real TC strings published by others, decoded as given (sources next to each constant).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from models.errors import InvalidConsent
from models.tcf import (
    V23_REQUIRED_FROM,
    PublisherRestriction,
    PublisherTC,
    TCString,
    VendorSet,
    decode_tc_string,
    encode_tc_string,
    flags_for_basis,
    parse_basis,
    tcf_flags,
)

# The example string of the IAB TCF v2 spec ("Consent string and vendor list formats v2", section
# on the ${GDPR_CONSENT_XXXXX} URL macro): core + DisclosedVendors. Its core fields are asserted in
# the test suite of advancedSTORE/lib_tcstring (src/decode, test ``iab_tcf_v2_core_vendor_range``):
# created 1582243059300 ms, cmp_id 27, cmp_version 0, EN, vendor list 15, policy 2, purposes
# {1, 2, 3}, vendor consents {2, 6, 8}; bidtellect/tcf's TcStringParserTests parse the same string.
IAB_SPEC_EXAMPLE = (
    "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
    ".IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARA"
    "EQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw"
)
# A string written by a production CMP (Ethyca Fides, fides-js test suite for decodeFidesString):
# the same core once with an (empty) DisclosedVendors segment ``.IAAA`` ("TC string only") and
# once without it (the case the suite calls "Without vendors disclosed").
FIDES_WITH_DISCLOSED = "CPzvOIAPzvOIAGXABBENAUEAAACAAAAAAAAAAAAAAAAA.IAAA"
FIDES_WITHOUT_DISCLOSED = "CPzvOIAPzvOIAGXABBENAUEAAACAAAAAAAAAAAAAAAAA"
# The usage example of audienceproject/tcf-parser-java (README.md): core, DisclosedVendors
# ('I' = segment type 1) and PublisherTC ('Y' = segment type 3).
AUDIENCEPROJECT_README = (
    "COwaAK3OwaAK3GKAAAENAcCAAAAAAAAAAAAAAAAAAAAA"
    ".IF0EWSQgAYWwho0QUBzBAIYAfJgSCAMgSAAQIoCkFQICERBAEKiAQHAEQJAAAGBAAkACAAQAoHCBMCQABgAARiRCEQE"
    "CIDRNABIBAggAKYQFAAARmikHC3ZCY702yOmQ"
    ".YAAAAAAAAAAAAAAAAAA"
)

ALL_PURPOSES = frozenset({5, 6, 7, 8, 9, 10})
BEFORE = V23_REQUIRED_FROM - timedelta(milliseconds=100)  # 2026-02-28T23:59:59.9Z, last v2.2 instant
AFTER = datetime(2026, 6, 1, 12, tzinfo=UTC)
ALL_TRUE = {"profile": True, "personalize": True, "measurement": True, "training": True}
ALL_FALSE = dict.fromkeys(ALL_TRUE, False)


def own(created: datetime, disclosed: VendorSet | None, **kw) -> str:
    """A TC string from the project's encoder: all flag purposes granted, vendors 9 and 12 consented."""
    values = {"purpose_consents": ALL_PURPOSES, "vendor_consents": VendorSet.of([9, 12])} | kw
    return encode_tc_string(TCString(created=created, last_updated=created, disclosed_vendors=disclosed, **values))


# ----------------------------------------------------------------------------- own vectors


def test_the_cutoff_is_the_first_instant_after_2026_02_28():
    assert datetime(2026, 3, 1, tzinfo=UTC) == V23_REQUIRED_FROM


@pytest.mark.parametrize("created", [V23_REQUIRED_FROM, AFTER])
@pytest.mark.parametrize("range_encoding", [False, True])
def test_v23_string_without_disclosed_vendors_is_rejected_naming_the_segment(created, range_encoding):
    tc = TCString(created=created, last_updated=created, purpose_consents=ALL_PURPOSES)
    with pytest.raises(InvalidConsent) as excinfo:
        decode_tc_string(encode_tc_string(tc, range_encoding=range_encoding))
    assert excinfo.value.field == "tcf.disclosed_vendors"
    assert "TCF v2.3" in excinfo.value.reason and "2026-02-28" in excinfo.value.reason


def test_v23_string_with_disclosed_vendors_decodes():
    tc = decode_tc_string(own(AFTER, VendorSet.of([9])))
    assert tc.disclosed_vendors == VendorSet.of([9])
    assert tcf_flags(tc) == ALL_TRUE


def test_v23_empty_disclosed_vendors_segment_is_present_not_missing():
    tc = decode_tc_string(own(AFTER, VendorSet()))
    assert tc.disclosed_vendors == VendorSet()
    assert tcf_flags(tc, vendor_id=9) == ALL_FALSE  # nobody disclosed: vendor 9 is a ghost


def test_v22_string_without_disclosed_vendors_still_decodes():
    tc = decode_tc_string(own(BEFORE, None))
    assert tc.disclosed_vendors is None
    assert tcf_flags(tc, vendor_id=9) == ALL_TRUE


@pytest.mark.parametrize("range_encoding", [False, True])
def test_ghost_vendor_gets_no_consent_in_a_v23_string(range_encoding):
    tc = TCString(created=AFTER, last_updated=AFTER, purpose_consents=ALL_PURPOSES,
                  vendor_consents=VendorSet.of([9, 12]), disclosed_vendors=VendorSet.of([12, 40]))
    decoded = decode_tc_string(encode_tc_string(tc, range_encoding=range_encoding))
    assert 9 in decoded.vendor_consents  # the consent bit is set ...
    assert tcf_flags(decoded, vendor_id=9) == ALL_FALSE  # ... but 9 was never disclosed
    assert tcf_flags(decoded, vendor_id=12) == ALL_TRUE
    assert tcf_flags(decoded, vendor_id=40) == ALL_FALSE  # disclosed, no consent bit


def test_v22_string_keeps_v22_meaning_for_an_undisclosed_vendor():
    tc = decode_tc_string(own(BEFORE, VendorSet.of([12])))
    assert tcf_flags(tc, vendor_id=9) == ALL_TRUE  # DisclosedVendors is not read for consent in v2.2


def test_same_content_flips_at_the_cutoff():
    body = {"disclosed": VendorSet.of([12])}
    before = decode_tc_string(own(BEFORE, body["disclosed"]))
    after = decode_tc_string(own(V23_REQUIRED_FROM, body["disclosed"]))
    assert tcf_flags(before, vendor_id=9)["personalize"] is True
    assert tcf_flags(after, vendor_id=9)["personalize"] is False


def test_ghost_rule_needs_a_vendor_id():
    tc = decode_tc_string(own(AFTER, VendorSet.of([12])))
    assert tcf_flags(tc) == ALL_TRUE  # purposes basis: no vendor configured, nobody to be a ghost


# ----------------------------------------------------------------------------- real strings


def test_iab_spec_example_decodes_with_the_published_fields():
    tc = decode_tc_string(IAB_SPEC_EXAMPLE)
    assert tc.created == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=1582243059300)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_language) == (27, 0, "EN")
    assert (tc.vendor_list_version, tc.tcf_policy_version) == (15, 2)
    assert tc.purpose_consents == frozenset({1, 2, 3})
    assert tc.vendor_consents == VendorSet.of([2, 6, 8])
    assert tc.vendor_legitimate_interests == VendorSet.of([2, 6, 8])
    assert tc.disclosed_vendors is not None and {2, 6, 8} <= set(tc.disclosed_vendors)


def test_iab_spec_example_redated_after_the_cutoff_still_decodes_and_its_core_alone_does_not():
    tc = decode_tc_string(IAB_SPEC_EXAMPLE)
    redated = replace(tc, created=AFTER, last_updated=AFTER)
    assert decode_tc_string(encode_tc_string(redated)) == redated  # it has DisclosedVendors
    with pytest.raises(InvalidConsent, match="tcf.disclosed_vendors"):
        decode_tc_string(encode_tc_string(replace(redated, disclosed_vendors=None)))


def test_fides_strings_with_and_without_disclosed_vendors():
    with_dv, without = decode_tc_string(FIDES_WITH_DISCLOSED), decode_tc_string(FIDES_WITHOUT_DISCLOSED)
    assert with_dv.disclosed_vendors == VendorSet()  # 'IAAA': type 1, MaxVendorId 0
    assert without.disclosed_vendors is None
    assert replace(with_dv, disclosed_vendors=None) == without  # the same core
    assert with_dv.created < V23_REQUIRED_FROM  # made before the cutoff: v2.2 meaning, accepted
    # the same core dated after the cutoff: without the segment it is invalid under TCF v2.3
    redated = replace(without, created=AFTER, last_updated=AFTER)
    with pytest.raises(InvalidConsent, match="tcf.disclosed_vendors"):
        decode_tc_string(encode_tc_string(redated))
    assert decode_tc_string(encode_tc_string(replace(redated, disclosed_vendors=VendorSet()))).created == AFTER


def test_audienceproject_example_has_disclosed_vendors_and_publisher_tc():
    tc = decode_tc_string(AUDIENCEPROJECT_README)
    assert tc.disclosed_vendors is not None and len(tc.disclosed_vendors) > 0
    assert tc.publisher_tc == PublisherTC()  # 'YAAA...': type 3, nothing granted
    assert flags_for_basis(tc, "publisher") == ALL_FALSE


# ----------------------------------------------------------------------------- bases


def test_parse_basis():
    assert parse_basis("purposes") == ("purposes", None)
    assert parse_basis("publisher") == ("publisher", None)
    assert parse_basis("publisher:755") == ("publisher", 755)
    assert parse_basis("vendor:1") == ("vendor", 1)


@pytest.mark.parametrize("bad", ["", "Publisher", "vendor", "vendor:", "vendor:0", "vendor:65536",
                                 "vendor:x", "vendor:-1", "vendor:٣", "purposes:3", "global"])
def test_bad_basis_rejected_naming_the_field(bad):
    with pytest.raises(InvalidConsent) as excinfo:
        parse_basis(bad)
    assert excinfo.value.field == "tcf.basis"


def publisher_string(**kw) -> TCString:
    values = {"created": BEFORE, "last_updated": BEFORE, "purpose_consents": frozenset(),
              "vendor_consents": VendorSet.of([9]),
              "publisher_tc": PublisherTC(purpose_consents=ALL_PURPOSES)} | kw
    return decode_tc_string(encode_tc_string(TCString(**values)))


def test_publisher_basis_reads_the_publisher_segment_not_the_global_purposes():
    tc = publisher_string()
    assert flags_for_basis(tc, "purposes") == ALL_FALSE
    assert flags_for_basis(tc, "vendor:9") == ALL_FALSE
    assert flags_for_basis(tc, "publisher") == ALL_TRUE


def test_publisher_basis_without_a_publisher_segment_grants_nothing():
    tc = publisher_string(purpose_consents=ALL_PURPOSES, publisher_tc=None)
    assert flags_for_basis(tc, "purposes") == ALL_TRUE
    assert flags_for_basis(tc, "publisher") == ALL_FALSE


def test_publisher_basis_with_an_id_applies_publisher_restrictions():
    restriction = PublisherRestriction(6, 0, VendorSet.of([9]))  # purpose 6 not allowed for vendor 9
    tc = publisher_string(publisher_restrictions=(restriction,))
    assert flags_for_basis(tc, "publisher") == ALL_TRUE
    assert flags_for_basis(tc, "publisher:9") == ALL_TRUE | {"personalize": False}
    assert flags_for_basis(tc, "publisher:10") == ALL_TRUE  # restriction names vendor 9 only


def test_publisher_basis_with_an_id_applies_the_ghost_rule_in_v23():
    tc = publisher_string(created=AFTER, last_updated=AFTER, disclosed_vendors=VendorSet.of([10]))
    assert flags_for_basis(tc, "publisher:9") == ALL_FALSE
    assert flags_for_basis(tc, "publisher:10") == ALL_TRUE


def test_vendor_basis_is_tcf_flags_with_the_vendor_id():
    tc = decode_tc_string(own(AFTER, VendorSet.of([9, 12]), vendor_consents=VendorSet.of([9])))
    assert flags_for_basis(tc, "vendor:9") == tcf_flags(tc, 9) == ALL_TRUE
    assert flags_for_basis(tc, "vendor:12") == ALL_FALSE  # disclosed but no consent bit
