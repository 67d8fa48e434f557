"""Consent policy: fail closed, most restrictive wins, late grants never undo revocations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.consent import (
    FLAGS,
    MAX_DISMISSED,
    ConsentState,
    apply_update,
    parse_update,
    restrict,
)
from models.errors import InvalidConsent
from models.tcf import TCString, encode_tc_string

ALL_ON = dict.fromkeys(FLAGS, True)


def state_with(flags: dict[str, bool], ts: int = 1000) -> ConsentState:
    return apply_update(ConsentState.unknown(), parse_update({"flags": flags}), ts).state


def test_unknown_is_all_off() -> None:
    s = ConsentState.unknown()
    assert s.flags == dict.fromkeys(FLAGS, False)
    assert not s.allows_personalization()
    assert s.epoch == 0
    assert ConsentState.from_dict(None).flags == s.flags
    assert ConsentState.from_dict({}).flags == s.flags


def test_grant_and_revoke() -> None:
    change = apply_update(ConsentState.unknown(), parse_update({"flags": {"profile": True, "personalize": True}}), 1000)
    assert sorted(change.granted) == ["personalize", "profile"] and change.revoked == [] and change.ignored == []
    s = change.state
    assert s.allows_personalization() and s.flags["marketing"] is False
    assert s.sources["profile"] == "explicit" and s.granted_at["profile"] == 1000
    change = apply_update(s, parse_update({"flags": {"personalize": False}}), 2000)
    assert change.revoked == ["personalize"]
    assert not change.state.allows_personalization()
    assert change.state.flags["profile"] is True  # a flag not named keeps its value
    assert change.state.revoked_at["personalize"] == 2000


def test_personalization_needs_both_profile_and_personalize() -> None:
    assert not state_with({"personalize": True}).allows_personalization()
    assert not state_with({"profile": True}).allows_personalization()
    assert state_with({"profile": True, "personalize": True}).allows_personalization()


def test_apply_does_not_mutate_the_input_state() -> None:
    s = ConsentState.unknown()
    apply_update(s, parse_update({"flags": ALL_ON}), 1000)
    assert s.flags == dict.fromkeys(FLAGS, False) and s.epoch == 0


def test_explicit_grant_with_gpc_leaves_sharing_off() -> None:
    change = apply_update(ConsentState.unknown(), parse_update({"flags": {"sharing": True}, "gpc": True}), 1000)
    assert change.state.flags["sharing"] is False
    assert change.state.sources["sharing"] == "gpc"
    assert "sharing" in change.revoked and "sharing" not in change.granted
    # the Sec-GPC header does the same
    change = apply_update(ConsentState.unknown(), parse_update({"flags": {"sharing": True}}, header_gpc=True), 1000)
    assert change.state.flags["sharing"] is False


def test_gpc_false_restricts_nothing() -> None:
    assert parse_update({"gpc": False}).proposals == {}


@pytest.mark.parametrize(
    "gcm_field, flags",
    [("analytics_storage", {"measurement"}), ("ad_personalization", {"personalize", "marketing"}),
     ("ad_user_data", {"sharing"}), ("ad_storage", set())],
)
def test_gcm_denied_turns_mapped_flags_off(gcm_field: str, flags: set[str]) -> None:
    update = parse_update({"flags": ALL_ON, "gcm": {gcm_field: "denied"}})
    s = apply_update(ConsentState.unknown(), update, 1000).state
    assert {f for f, v in s.flags.items() if not v} == flags
    for f in flags:
        assert s.sources[f] == "gcm"


def test_gcm_granted_never_grants() -> None:
    update = parse_update({"gcm": dict.fromkeys(["analytics_storage", "ad_personalization", "ad_user_data",
                                                 "ad_storage"], "granted")})
    s = apply_update(ConsentState.unknown(), update, 1000).state
    assert s.flags == dict.fromkeys(FLAGS, False)


def test_grant_not_newer_than_last_revocation_is_ignored() -> None:
    s = state_with({"profile": True, "personalize": True}, ts=1000)
    s = apply_update(s, parse_update({"flags": {"personalize": False}}), 5000).state
    for ts in (4000, 5000):  # older, and the same instant
        change = apply_update(s, parse_update({"flags": {"personalize": True, "marketing": True}}), ts)
        assert change.ignored == ["personalize"]
        assert change.granted == ["marketing"]
        assert change.state.flags["personalize"] is False
    change = apply_update(s, parse_update({"flags": {"personalize": True}}), 5001)
    assert change.granted == ["personalize"] and change.state.flags["personalize"] is True


def test_late_revocation_still_revokes_and_keeps_the_newest_revocation_time() -> None:
    s = state_with({"marketing": True}, ts=9000)
    s = apply_update(s, parse_update({"flags": {"marketing": False}}), 3000).state  # late: fail closed
    assert s.flags["marketing"] is False
    s = apply_update(s, parse_update({"flags": {"marketing": False}}), 7000).state
    s = apply_update(s, parse_update({"flags": {"marketing": False}}), 2000).state
    assert s.revoked_at["marketing"] == 7000


def test_epoch_increments_on_each_applied_update() -> None:
    s = ConsentState.unknown()
    epochs = []
    for ts, body in enumerate([{"flags": {"profile": True}}, {"flags": {"profile": False}},
                               {"gpc": True}, {"gcm": {"analytics_storage": "denied"}}], start=1):
        s = apply_update(s, parse_update(body), ts * 1000).state
        epochs.append(s.epoch)
    assert epochs == [1, 2, 3, 4]
    # an update whose only grant is ignored changes nothing
    change = apply_update(s, parse_update({"flags": {"profile": True}}), 1500)
    assert change.ignored == ["profile"] and change.state.epoch == s.epoch
    assert apply_update(s, parse_update({}), 9000).state.epoch == s.epoch


@pytest.mark.parametrize(
    "body, field",
    [({"flags": {"prof": True}}, "flags.prof"), ({"flags": {"profile": "yes"}}, "flags.profile"),
     ({"flags": {"profile": 1}}, "flags.profile"), ({"flags": {"sharing": None}}, "flags.sharing"),
     ({"flags": ["profile"]}, "flags"), ({"flagz": {}}, "flagz"), ({"gpc": "1"}, "gpc"),
     ({"gcm": {"ad_storage": "maybe"}}, "gcm.ad_storage"), ({"gcm": {"ad_storage": True}}, "gcm.ad_storage"),
     ({"gcm": {"functionality_storage": "denied"}}, "gcm.functionality_storage"),
     ({"gcm": "denied"}, "gcm"), ({"tcf": 5}, "tcf"), ([], ""), ("flags", "")],
)
def test_malformed_update_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidConsent) as info:
        parse_update(body)
    assert info.value.field == field


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FLAGS), st.booleans()),
       st.dictionaries(st.sampled_from(FLAGS), st.booleans(), min_size=1),
       st.booleans(),
       st.dictionaries(st.sampled_from(["analytics_storage", "ad_personalization", "ad_user_data", "ad_storage"]),
                       st.sampled_from(["granted", "denied"])))
def test_restrict_never_widens(stored: dict[str, bool], flags: dict[str, bool], gpc: bool,
                               gcm: dict[str, str]) -> None:
    stored = dict.fromkeys(FLAGS, False) | stored
    out = restrict(stored, parse_update({"flags": flags, "gpc": gpc, "gcm": gcm}))
    assert set(out) == set(FLAGS)
    for f in FLAGS:
        assert out[f] <= stored[f]
        if flags.get(f) is False:
            assert out[f] is False
    if gpc:
        assert out["sharing"] is False
    assert restrict(stored, None) == stored


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.dictionaries(st.sampled_from(FLAGS), st.booleans(),
                                                                   min_size=1)), max_size=12))
def test_grant_counts_only_if_newer_than_last_revocation(updates: list[tuple[int, dict[str, bool]]]) -> None:
    s = ConsentState.unknown()
    last_revoked: dict[str, int] = {}
    for ts, flags in updates:
        s = apply_update(s, parse_update({"flags": flags}), ts).state
        for f, v in flags.items():
            if not v:
                last_revoked[f] = max(ts, last_revoked.get(f, ts))
    for f in FLAGS:
        if s.flags[f]:
            granted_after = [ts for ts, fl in updates if fl.get(f) is True and ts > last_revoked.get(f, -1)]
            assert granted_after, f"{f} on without a grant newer than its last revocation"


def test_to_dict_round_trips_through_json() -> None:
    s = state_with({"profile": True, "sharing": True}, ts=1000)
    s = apply_update(s, parse_update({"flags": {"sharing": False}, "gcm": {"analytics_storage": "denied"}}), 2000).state
    s.exclude_categories.append("toys")
    s.channels.append("email")
    s.add_dismissed("o1")
    data = orjson.loads(orjson.dumps(s.to_dict()))
    restored = ConsentState.from_dict(data)
    assert restored == s
    assert restored.to_dict() == s.to_dict()


def test_from_dict_wrong_version_rejected() -> None:
    with pytest.raises(InvalidConsent) as info:
        ConsentState.from_dict(ConsentState.unknown().to_dict() | {"v": 99})
    assert info.value.field == "v"


def test_from_dict_drops_unknown_flags_and_fills_missing_ones_closed() -> None:
    data = ConsentState.unknown().to_dict() | {"flags": {"profile": True, "godmode": True}}
    s = ConsentState.from_dict(data)
    assert s.flags == dict.fromkeys(FLAGS, False) | {"profile": True}


def test_dismissed_is_bounded_and_deduplicated() -> None:
    s = ConsentState.unknown()
    s.add_dismissed("o0")
    s.add_dismissed("o0")
    assert s.dismissed == ["o0"]
    for k in range(MAX_DISMISSED + 20):
        s.add_dismissed(f"o{k}")
    assert len(s.dismissed) == MAX_DISMISSED
    assert s.dismissed[-1] == f"o{MAX_DISMISSED + 19}" and "o0" not in s.dismissed


# ---- TCF -------------------------------------------------------------------------------------


def test_tcf_purposes_1_to_10_grant_the_mapped_flags() -> None:
    tc = encode_tc_string(TCString(purpose_consents=frozenset(range(1, 11))))
    update = parse_update({"tcf": tc})
    assert update.proposals["tcf"] == {"profile": True, "personalize": True, "measurement": True,
                                       "training": True}
    assert update.tc_hash is not None and tc not in update.tc_hash and len(update.tc_hash) == 64
    change = apply_update(ConsentState.unknown(), update, 1000)
    s = change.state
    assert s.allows_personalization() and s.flags["measurement"] and s.flags["training"]
    assert not s.flags["marketing"] and not s.flags["sharing"]  # TCF does not speak for them
    assert s.tc_hash == update.tc_hash and s.sources["profile"] == "tcf"
    assert tc not in orjson.dumps(s.to_dict()).decode()  # the string itself is never kept


def test_tcf_without_purpose_revokes_and_explicit_grant_loses() -> None:
    tc = encode_tc_string(TCString(purpose_consents=frozenset({5})))
    update = parse_update({"tcf": tc, "flags": {"personalize": True, "profile": True}})
    s = apply_update(ConsentState.unknown(), update, 1000).state
    assert s.flags["profile"] is True and s.flags["personalize"] is False
    assert s.sources["personalize"] == "tcf"


@pytest.mark.parametrize(
    "mangle",
    [lambda s: s[: len(s) // 2], lambda s: s + "=", lambda s: s.replace(s[0], "!", 1), lambda s: "",
     lambda s: s + ".", lambda s: "A" * 5, lambda s: s[:-4] + "////"],
)
def test_malformed_tc_string_is_rejected_never_granted(mangle: Any) -> None:
    tc = mangle(encode_tc_string(TCString(purpose_consents=frozenset(range(1, 11)))))
    with pytest.raises(InvalidConsent) as info:
        parse_update({"tcf": tc, "flags": {"marketing": True}})
    assert info.value.field.startswith("tcf")


def test_an_event_older_than_the_last_profile_revocation_is_never_profiled() -> None:
    granted = apply_update(ConsentState.unknown(), parse_update({"flags": {"profile": True}}), 1_000).state
    assert granted.may_profile(900) and granted.may_profile(2_000)
    revoked = apply_update(granted, parse_update({"flags": {"profile": False}}), 3_000).state
    regranted = apply_update(revoked, parse_update({"flags": {"profile": True}}), 5_000).state
    assert not revoked.may_profile(4_000)
    assert not regranted.may_profile(2_500), "accepted before the revocation, applied after the re-grant"
    assert regranted.may_profile(4_000) and regranted.may_profile(6_000)
