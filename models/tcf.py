"""Strict, fail-closed decoder for IAB TCF v2.2/v2.3 TC strings, and their mapping to offerstream flags.

A TC string is ``core[.segment]*``: each part unpadded base64url read as a bit string. The core
segment (version 2) is decoded in full: metadata, purposes, special features, vendor consents and
legitimate interests (bit field or range encoding) and publisher restrictions. Optional segments
are recognised by their 3-bit type: 1 DisclosedVendors, 2 AllowedVendors (an out-of-band segment
of TCF v2.0/2.1, still parsed so older strings stay readable), 3 PublisherTC.

Anything that cannot be fully parsed raises :class:`~models.errors.InvalidConsent` (field such as
``"tcf.core.vendor_consents"``) and never yields consent. Decisions:

- **Encoding.** Only the base64url alphabet ``A-Z a-z 0-9 - _``. ``=`` padding, ``+``/``/``,
  whitespace and empty segments are rejected: the spec says unpadded websafe base64, and any
  deviation means something rewrote the string on its way to us.
- **Padding bits.** Unread bits after the last field of a segment must all be zero. Encoders pad
  freely (the spec's own Publisher TC example carries 57 zero bits), so zero padding of any length
  is accepted; a single ``1`` bit there means we misread the layout, so the string is rejected.
- **Rejected outright.** Non-``str``, empty, longer than :data:`MAX_TC_STRING_LENGTH` characters,
  version != 2, any field read past the end of its segment, a range entry with id 0, end < start
  or id > MaxVendorId, NumEntries that cannot fit in the remaining bits, language or country
  letters outside A-Z, restriction type 3 (undefined), restriction purpose outside 1..24, a second
  core segment (type 0), an unknown segment type (4-7) and a repeated optional segment.
- **TCF v2.3.** A string created on or after :data:`V23_REQUIRED_FROM` (that is, after
  2026-02-28) must carry a DisclosedVendors segment; without one it is rejected
  (field ``"tcf.disclosed_vendors"``). In such a string a vendor that is not in DisclosedVendors
  has no consent even if its consent bit is set (the "ghost vendor"). Strings created earlier keep
  their v2.2 meaning: DisclosedVendors is optional and never read for consent.
- **Size.** The length cap bounds work; vendor sets are stored as merged ranges, so a hostile
  range of 1..65535 costs one tuple, not 65,535 ints.

Flag mapping (:func:`tcf_flags`), consent only::

    "profile"      <- purpose 5 (create profiles to personalise content)
    "personalize"  <- purpose 6 (use profiles to select personalised content)
    "measurement"  <- purposes 7 AND 8 AND 9 (fail closed: all three are needed)
    "training"     <- purposes 5 AND 10

Legitimate interest never grants a flag: TCF v2.2 forbids it for purposes 3-6, and for 7-10 we are
deliberately conservative (an LI bit records transparency, not a choice by the user). With
``vendor_id`` every purpose additionally needs that vendor's consent bit and no publisher
restriction of type 0 (not allowed) or type 2 (require legitimate interest, a basis we never use)
covering the vendor, and (TCF v2.3 strings) the vendor must be in DisclosedVendors.
``"marketing"`` and ``"sharing"`` are not derivable from TCF and are absent from the result (TCF
says nothing about them), not ``False``.

Which consents speak is the *basis* (:func:`parse_basis`, :func:`flags_for_basis`):
``purposes`` reads the core segment's global purpose consents; ``vendor:<id>`` additionally needs
that vendor's consent (as above); ``publisher`` reads the Publisher TC segment's purpose consents
(no segment = nothing granted), and ``publisher:<id>`` additionally applies the publisher
restrictions (and the v2.3 DisclosedVendors rule) to vendor ``<id>``.

Examples
--------
>>> tc = decode_tc_string(encode_tc_string(TCString(purpose_consents=frozenset({5, 6}))))
>>> tcf_flags(tc)
{'profile': True, 'personalize': True, 'measurement': False, 'training': False}
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from models._bits import BitReader, BitWriter, base64url_to_bits
from models.errors import InvalidConsent

__all__ = [
    "MAX_TC_STRING_LENGTH",
    "VendorSet",
    "PublisherRestriction",
    "PublisherTC",
    "TCString",
    "decode_tc_string",
    "encode_tc_string",
    "tcf_flags",
    "parse_basis",
    "flags_for_basis",
    "BASES",
    "V23_REQUIRED_FROM",
]

MAX_TC_STRING_LENGTH = 20_000
MAX_VENDOR_ID = 0xFFFF
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLAG_PURPOSES = {
    "profile": (5,),
    "personalize": (6,),
    "measurement": (7, 8, 9),
    "training": (5, 10),
}
_BLOCKING_RESTRICTIONS = frozenset({0, 2})
_ENTRY_MIN_BITS = 17  # IsARange + StartOrOnlyVendorId
#: TCF v2.3: TC strings created from this instant on must carry a DisclosedVendors segment.
V23_REQUIRED_FROM = datetime(2026, 3, 1, tzinfo=UTC)
#: The TCF bases (see :func:`parse_basis`).
BASES = ("purposes", "publisher", "vendor")


@dataclass(frozen=True, slots=True)
class VendorSet:
    """Immutable set of vendor ids, stored as sorted, disjoint, non-adjacent inclusive ranges.

    Equal sets compare equal whatever encoding they came from.

    Examples
    --------
    >>> s = VendorSet.of([3, 1, 2, 10])
    >>> s.ranges, 2 in s, 4 in s, len(s), list(s)
    (((1, 3), (10, 10)), True, False, 4, [1, 2, 3, 10])
    """

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, ids: Iterable[int]) -> VendorSet:
        """Build from individual vendor ids."""
        return cls.from_ranges((i, i) for i in ids)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> VendorSet:
        """Build from inclusive ``(start, end)`` ranges, merging overlaps and neighbours."""
        merged: list[tuple[int, int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return cls(tuple(merged))

    @property
    def max_id(self) -> int:
        """Largest id in the set, 0 if empty."""
        return self.ranges[-1][1] if self.ranges else 0

    def __contains__(self, vendor_id: object) -> bool:
        if not isinstance(vendor_id, int):
            return False
        i = bisect_right(self.ranges, (vendor_id, MAX_VENDOR_ID + 1)) - 1
        return i >= 0 and self.ranges[i][0] <= vendor_id <= self.ranges[i][1]

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """Publisher restriction: ``purpose_id`` restricted with ``restriction_type`` for ``vendors``.

    ``restriction_type``: 0 purpose flatly not allowed, 1 require consent, 2 require legitimate
    interest. Entries with the same purpose and type are merged when decoding.
    """

    purpose_id: int
    restriction_type: int
    vendors: VendorSet


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The Publisher TC segment (type 3): the publisher's own purposes and custom purposes."""

    purpose_consents: frozenset[int] = frozenset()
    purpose_legitimate_interests: frozenset[int] = frozenset()
    num_custom_purposes: int = 0
    custom_purpose_consents: frozenset[int] = frozenset()
    custom_purpose_legitimate_interests: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class TCString:
    """A fully decoded TC string. Id sets hold the 1-based ids whose bit is set.

    Timestamps are timezone-aware UTC with decisecond precision. Optional segments that were not
    present are ``None``. Defaults exist so tests and :func:`encode_tc_string` can build values.
    """

    version: int = 2
    created: datetime = _EPOCH
    last_updated: datetime = _EPOCH
    cmp_id: int = 0
    cmp_version: int = 0
    consent_screen: int = 0
    consent_language: str = "EN"
    vendor_list_version: int = 0
    tcf_policy_version: int = 4
    is_service_specific: bool = False
    use_non_standard_texts: bool = False
    special_feature_optins: frozenset[int] = frozenset()
    purpose_consents: frozenset[int] = frozenset()
    purpose_legitimate_interests: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    vendor_consents: VendorSet = field(default_factory=VendorSet)
    vendor_legitimate_interests: VendorSet = field(default_factory=VendorSet)
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    disclosed_vendors: VendorSet | None = None
    allowed_vendors: VendorSet | None = None
    publisher_tc: PublisherTC | None = None


# ----------------------------------------------------------------------------- decoding


def decode_tc_string(tc: str) -> TCString:
    """Decode a TC string, rejecting anything not fully and unambiguously parseable.

    Parameters
    ----------
    tc : str
        The TC string, ``core[.segment]*``.

    Returns
    -------
    TCString

    Raises
    ------
    InvalidConsent
        For every malformed input (see the module docstring); never another exception type.
    """
    if not isinstance(tc, str):
        raise InvalidConsent("tcf", f"must be a string, got {type(tc).__name__}")
    if not tc:
        raise InvalidConsent("tcf", "is empty")
    if len(tc) > MAX_TC_STRING_LENGTH:
        raise InvalidConsent("tcf", f"is longer than {MAX_TC_STRING_LENGTH} characters")
    core, *rest = tc.split(".")
    fields = _decode_core(_reader(core, "tcf.core"))
    for index, segment in enumerate(rest, start=1):
        name, value = _decode_optional(_reader(segment, f"tcf.segment[{index}]"), index)
        if fields.get(name) is not None:
            raise InvalidConsent(f"tcf.{name}", "segment appears more than once")
        fields[name] = value
    if fields["created"] >= V23_REQUIRED_FROM and fields.get("disclosed_vendors") is None:
        raise InvalidConsent(
            "tcf.disclosed_vendors",
            f"segment is missing; TCF v2.3 requires it in TC strings created after 2026-02-28 "
            f"(this one was created {fields['created'].isoformat()})",
        )
    return TCString(**fields)


def _reader(segment: str, field: str) -> BitReader:
    if not segment:
        raise InvalidConsent(field, "segment is empty")
    return BitReader(base64url_to_bits(segment, field))


def _decode_core(r: BitReader) -> dict[str, Any]:
    f = "tcf.core."
    version = r.read_int(6, f + "version")
    if version != 2:
        raise InvalidConsent(f + "version", f"is {version}; only TCF v2 strings are supported")
    out: dict[str, Any] = {
        "version": version,
        "created": _read_time(r, f + "created"),
        "last_updated": _read_time(r, f + "last_updated"),
        "cmp_id": r.read_int(12, f + "cmp_id"),
        "cmp_version": r.read_int(12, f + "cmp_version"),
        "consent_screen": r.read_int(6, f + "consent_screen"),
        "consent_language": _read_letters(r, f + "consent_language"),
        "vendor_list_version": r.read_int(12, f + "vendor_list_version"),
        "tcf_policy_version": r.read_int(6, f + "tcf_policy_version"),
        "is_service_specific": r.read_bool(f + "is_service_specific"),
        "use_non_standard_texts": r.read_bool(f + "use_non_standard_texts"),
        "special_feature_optins": _read_id_bits(r, 12, f + "special_feature_optins"),
        "purpose_consents": _read_id_bits(r, 24, f + "purpose_consents"),
        "purpose_legitimate_interests": _read_id_bits(r, 24, f + "purpose_legitimate_interests"),
        "purpose_one_treatment": r.read_bool(f + "purpose_one_treatment"),
        "publisher_cc": _read_letters(r, f + "publisher_cc"),
        "vendor_consents": _read_vendor_section(r, f + "vendor_consents"),
        "vendor_legitimate_interests": _read_vendor_section(r, f + "vendor_legitimate_interests"),
        "publisher_restrictions": _read_restrictions(r, f + "publisher_restrictions"),
    }
    r.expect_zero_tail("tcf.core")
    return out


def _decode_optional(r: BitReader, index: int) -> tuple[str, Any]:
    seg_type = r.read_int(3, f"tcf.segment[{index}].segment_type")
    if seg_type == 0:
        raise InvalidConsent(f"tcf.segment[{index}]", "a second core segment is not allowed")
    if seg_type not in _SEGMENTS:
        raise InvalidConsent(f"tcf.segment[{index}].segment_type", f"unknown type {seg_type}")
    name, parse = _SEGMENTS[seg_type]
    value = parse(r, f"tcf.{name}")
    r.expect_zero_tail(f"tcf.{name}")
    return name, value


def _read_publisher_tc(r: BitReader, field: str) -> PublisherTC:
    consents = _read_id_bits(r, 24, field + ".purpose_consents")
    li = _read_id_bits(r, 24, field + ".purpose_legitimate_interests")
    n = r.read_int(6, field + ".num_custom_purposes")
    return PublisherTC(
        purpose_consents=consents,
        purpose_legitimate_interests=li,
        num_custom_purposes=n,
        custom_purpose_consents=_read_id_bits(r, n, field + ".custom_purpose_consents"),
        custom_purpose_legitimate_interests=_read_id_bits(
            r, n, field + ".custom_purpose_legitimate_interests"
        ),
    )


def _read_time(r: BitReader, field: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=100 * r.read_int(36, field))


def _read_letters(r: BitReader, field: str) -> str:
    codes = (r.read_int(6, field), r.read_int(6, field))
    if max(codes) > 25:
        raise InvalidConsent(field, f"letter codes {codes} are outside A-Z (0-25)")
    return "".join(chr(ord("A") + c) for c in codes)


def _read_id_bits(r: BitReader, width: int, field: str) -> frozenset[int]:
    bits = r.read_bits(width, field)
    return frozenset(i for i, bit in enumerate(bits, start=1) if bit == "1")


def _read_vendor_section(r: BitReader, field: str) -> VendorSet:
    max_id = r.read_int(16, field + ".max_vendor_id")
    if r.read_bool(field + ".is_range_encoding"):
        return _read_ranges(r, field, max_id)
    bits = r.read_bits(max_id, field + ".bitfield")
    # maximal runs of 1s are already sorted, disjoint and non-adjacent: no merge needed
    return VendorSet(tuple((m.start() + 1, m.end()) for m in re.finditer("1+", bits)))


def _read_ranges(r: BitReader, field: str, max_id: int) -> VendorSet:
    n = r.read_int(12, field + ".num_entries")
    if n * _ENTRY_MIN_BITS > r.remaining:
        raise InvalidConsent(
            field + ".num_entries",
            f"{n} entries need at least {n * _ENTRY_MIN_BITS} bits, only {r.remaining} remain",
        )
    ranges = []
    for i in range(n):
        f = f"{field}.entries[{i}]"
        is_range = r.read_bool(f + ".is_a_range")
        start = r.read_int(16, f + ".start_vendor_id")
        end = r.read_int(16, f + ".end_vendor_id") if is_range else start
        if start < 1 or end < start or end > max_id:
            raise InvalidConsent(f, f"range {start}..{end} is not within 1..{max_id} ascending")
        ranges.append((start, end))
    return VendorSet.from_ranges(ranges)


def _read_restrictions(r: BitReader, field: str) -> tuple[PublisherRestriction, ...]:
    grouped: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(r.read_int(12, field + ".num_restrictions")):
        f = f"{field}[{i}]"
        purpose = r.read_int(6, f + ".purpose_id")
        if not 1 <= purpose <= 24:
            raise InvalidConsent(f + ".purpose_id", f"is {purpose}; must be 1..24")
        kind = r.read_int(2, f + ".restriction_type")
        if kind == 3:
            raise InvalidConsent(f + ".restriction_type", "3 is undefined in TCF v2")
        ranges = _read_ranges(r, f, MAX_VENDOR_ID).ranges
        grouped.setdefault((purpose, kind), []).extend(ranges)
    return tuple(
        PublisherRestriction(p, k, VendorSet.from_ranges(v))
        for (p, k), v in sorted(grouped.items())
    )


_SEGMENTS: dict[int, tuple[str, Callable[[BitReader, str], Any]]] = {
    1: ("disclosed_vendors", _read_vendor_section),
    2: ("allowed_vendors", _read_vendor_section),
    3: ("publisher_tc", _read_publisher_tc),
}


# ----------------------------------------------------------------------------- flags


def tcf_flags(tc: TCString, vendor_id: int | None = None, *, publisher: bool = False) -> dict[str, bool]:
    """Map a decoded TC string to the offerstream flags it speaks for (consent only).

    Parameters
    ----------
    tc : TCString
        A decoded TC string.
    vendor_id : int, optional
        Our GVL vendor id. When given, each purpose also needs no publisher restriction of type 0
        or 2 for that purpose covering the vendor and, in a TCF v2.3 string, the vendor's presence
        in DisclosedVendors; with ``publisher=False`` also the vendor's consent bit.
    publisher : bool, default False
        Read the Publisher TC segment's purpose consents instead of the global ones (the shop as
        publisher). Without a Publisher TC segment nothing is granted.

    Returns
    -------
    dict of str to bool
        ``profile``, ``personalize``, ``measurement``, ``training``; ``marketing`` and
        ``sharing`` are absent because TCF does not speak for them.

    Raises
    ------
    InvalidConsent
        If ``vendor_id`` is not an int in 1..65535.
    """
    _check_vendor_id(vendor_id, "tcf.vendor_id")
    if publisher:
        consents = tc.publisher_tc.purpose_consents if tc.publisher_tc is not None else frozenset()
    else:
        consents = tc.purpose_consents
    return {
        flag: all(_purpose_allowed(tc, consents, p, vendor_id, not publisher) for p in purposes)
        for flag, purposes in _FLAG_PURPOSES.items()
    }


def parse_basis(text: str) -> tuple[str, int | None]:
    """Parse a TCF basis: ``purposes``, ``publisher``, ``publisher:<id>`` or ``vendor:<id>``.

    Examples
    --------
    >>> parse_basis("vendor:755"), parse_basis("publisher"), parse_basis("purposes")
    (('vendor', 755), ('publisher', None), ('purposes', None))

    Raises
    ------
    InvalidConsent
        Field ``"tcf.basis"``: an unknown name, a missing or bad vendor id.
    """
    name, sep, rest = text.partition(":") if isinstance(text, str) else ("", "", "")
    if name not in BASES or (name == "purposes" and sep):
        raise InvalidConsent("tcf.basis", f"{text!r} is not purposes, publisher[:<id>] or vendor:<id>")
    if name == "vendor" and not sep:
        raise InvalidConsent("tcf.basis", "vendor needs an id: vendor:<id>")
    if not sep:
        return name, None
    if not rest.isascii() or not rest.isdigit():
        raise InvalidConsent("tcf.basis", f"vendor id {rest!r} is not a number")
    vendor_id = int(rest)
    _check_vendor_id(vendor_id, "tcf.basis")
    return name, vendor_id


def flags_for_basis(tc: TCString, basis: str) -> dict[str, bool]:
    """:func:`tcf_flags` under a basis string (see :func:`parse_basis`)."""
    name, vendor_id = parse_basis(basis)
    return tcf_flags(tc, vendor_id, publisher=name == "publisher")


def _check_vendor_id(vendor_id: int | None, field: str) -> None:
    if vendor_id is not None and (
        isinstance(vendor_id, bool)
        or not isinstance(vendor_id, int)
        or not 1 <= vendor_id <= MAX_VENDOR_ID
    ):
        raise InvalidConsent(field, f"vendor id must be an int in 1..{MAX_VENDOR_ID}")


def _purpose_allowed(tc: TCString, consents: frozenset[int], purpose: int, vendor_id: int | None,
                     needs_vendor_consent: bool) -> bool:
    if purpose not in consents:
        return False
    if vendor_id is None:
        return True
    if needs_vendor_consent and vendor_id not in tc.vendor_consents:
        return False
    if tc.created >= V23_REQUIRED_FROM and (tc.disclosed_vendors is None or vendor_id not in tc.disclosed_vendors):
        return False  # TCF v2.3 "ghost vendor": a consent bit without disclosure is no consent
    return not any(
        r.purpose_id == purpose
        and r.restriction_type in _BLOCKING_RESTRICTIONS
        and vendor_id in r.vendors
        for r in tc.publisher_restrictions
    )


# ----------------------------------------------------------------------------- encoding


def encode_tc_string(tc: TCString, *, range_encoding: bool = False) -> str:
    """Encode a :class:`TCString` (for tests and fixtures; offerstream never issues consent).

    Parameters
    ----------
    tc : TCString
        Values to encode. ``version`` is written as given, so invalid strings can be built.
    range_encoding : bool, default False
        Encode vendor sections (consents, LI, disclosed, allowed) as ranges instead of bit fields.
        MaxVendorId is the largest id in each set.

    Returns
    -------
    str
        Unpadded base64url segments joined by ``"."``; publisher restrictions are always ranges.

    Raises
    ------
    ValueError
        If a value does not fit its field (e.g. purpose 25, a three-letter language).
    """
    w = BitWriter()
    w.write_int(tc.version, 6)
    for ts in (tc.created, tc.last_updated):
        w.write_int((ts - _EPOCH) // timedelta(milliseconds=100), 36)
    for value, n in ((tc.cmp_id, 12), (tc.cmp_version, 12), (tc.consent_screen, 6)):
        w.write_int(value, n)
    _write_letters(w, tc.consent_language)
    w.write_int(tc.vendor_list_version, 12)
    w.write_int(tc.tcf_policy_version, 6)
    w.write_bool(tc.is_service_specific)
    w.write_bool(tc.use_non_standard_texts)
    _write_id_bits(w, tc.special_feature_optins, 12)
    _write_id_bits(w, tc.purpose_consents, 24)
    _write_id_bits(w, tc.purpose_legitimate_interests, 24)
    w.write_bool(tc.purpose_one_treatment)
    _write_letters(w, tc.publisher_cc)
    _write_vendor_section(w, tc.vendor_consents, range_encoding)
    _write_vendor_section(w, tc.vendor_legitimate_interests, range_encoding)
    w.write_int(len(tc.publisher_restrictions), 12)
    for pr in tc.publisher_restrictions:
        w.write_int(pr.purpose_id, 6)
        w.write_int(pr.restriction_type, 2)
        _write_ranges(w, pr.vendors)
    segments = [w.to_base64url()]
    for seg_type, vendors in ((1, tc.disclosed_vendors), (2, tc.allowed_vendors)):
        if vendors is not None:
            sw = BitWriter()
            sw.write_int(seg_type, 3)
            _write_vendor_section(sw, vendors, range_encoding)
            segments.append(sw.to_base64url())
    if tc.publisher_tc is not None:
        segments.append(_encode_publisher_tc(tc.publisher_tc))
    return ".".join(segments)


def _encode_publisher_tc(p: PublisherTC) -> str:
    w = BitWriter()
    w.write_int(3, 3)
    _write_id_bits(w, p.purpose_consents, 24)
    _write_id_bits(w, p.purpose_legitimate_interests, 24)
    w.write_int(p.num_custom_purposes, 6)
    _write_id_bits(w, p.custom_purpose_consents, p.num_custom_purposes)
    _write_id_bits(w, p.custom_purpose_legitimate_interests, p.num_custom_purposes)
    return w.to_base64url()


def _write_letters(w: BitWriter, letters: str) -> None:
    if len(letters) != 2 or not all("A" <= c <= "Z" for c in letters):
        raise ValueError(f"{letters!r} is not two letters A-Z")
    for c in letters:
        w.write_int(ord(c) - ord("A"), 6)


def _write_id_bits(w: BitWriter, ids: frozenset[int], width: int) -> None:
    if any(not 1 <= i <= width for i in ids):
        raise ValueError(f"ids {sorted(ids)} must be within 1..{width}")
    w.write_bits("".join("1" if i in ids else "0" for i in range(1, width + 1)))


def _write_vendor_section(w: BitWriter, vendors: VendorSet, range_encoding: bool) -> None:
    w.write_int(vendors.max_id, 16)
    w.write_bool(range_encoding)
    if range_encoding:
        _write_ranges(w, vendors)
    else:
        w.write_bits("".join("1" if i in vendors else "0" for i in range(1, vendors.max_id + 1)))


def _write_ranges(w: BitWriter, vendors: VendorSet) -> None:
    w.write_int(len(vendors.ranges), 12)
    for start, end in vendors.ranges:
        w.write_bool(start != end)
        w.write_int(start, 16)
        if start != end:
            w.write_int(end, 16)
