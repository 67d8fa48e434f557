"""``OFFERSTREAM_TCF_BASIS``: the setting, the CLI flag, and consent updates read under it (issue 16, item 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from models import consent
from models.consent import ConsentState, apply_update, check_tcf_basis, parse_update
from models.customer_state import DictState, apply_event
from models.decision import parse_score_request
from models.errors import InvalidConsent
from models.events import parse_event
from models.tcf import PublisherTC, TCString, VendorSet, encode_tc_string
from offerstream.cli import build_parser, main
from stream.settings import load_settings

CREATED = datetime(2026, 6, 1, tzinfo=UTC)
ALL = frozenset({5, 6, 7, 8, 9, 10})
# global purposes granted; the publisher granted nothing; vendor 9 consented and disclosed, 12 a ghost
GLOBAL_ONLY = encode_tc_string(TCString(
    created=CREATED, last_updated=CREATED, purpose_consents=ALL, vendor_consents=VendorSet.of([9, 12]),
    disclosed_vendors=VendorSet.of([9]), publisher_tc=PublisherTC(),
))
ALL_TRUE = {"profile": True, "personalize": True, "measurement": True, "training": True}
ALL_FALSE = dict.fromkeys(ALL_TRUE, False)


def test_default_basis_is_purposes() -> None:
    assert consent.DEFAULT_TCF_BASIS == "purposes"


@pytest.mark.parametrize(("basis", "expected"), [
    ("purposes", ALL_TRUE), ("vendor:9", ALL_TRUE), ("vendor:12", ALL_FALSE),
    ("publisher", ALL_FALSE), ("publisher:9", ALL_FALSE),
])
def test_consent_update_reads_the_tc_string_under_the_given_basis(basis: str, expected: dict) -> None:
    update = parse_update({"tcf": GLOBAL_ONLY}, basis=basis)
    assert update.proposals["tcf"] == expected
    assert update.tcf_basis == basis  # the change names the basis it was read under
    assert apply_update(ConsentState.unknown(), update, 1000).tcf_basis == basis
    request = parse_score_request({"customer_id": "c", "consent": {"tcf": GLOBAL_ONLY}}, tcf_basis=basis)
    assert request.consent is not None and request.consent.proposals["tcf"] == expected


def test_without_a_basis_a_tc_string_is_read_under_purposes_and_flags_alone_name_none() -> None:
    assert parse_update({"tcf": GLOBAL_ONLY}).tcf_basis == "purposes"
    assert parse_update({"flags": {"profile": True}}, basis="publisher").tcf_basis is None


@pytest.mark.parametrize(("basis", "granted"), [("purposes", True), ("vendor:12", False)])
def test_a_consent_event_is_applied_under_the_basis_the_caller_holds(basis: str, granted: bool) -> None:
    state = DictState()
    event = parse_event({"event_id": "e1", "type": "consent", "customer_id": "c", "ts": 1_780_000_000_000,
                         "consent": {"tcf": GLOBAL_ONLY}})
    apply_event(state, event, tcf_basis=basis)
    assert state.read_consent("c").flags["personalize"] is granted


def test_a_bad_basis_is_refused_naming_the_field() -> None:
    assert check_tcf_basis("vendor:9") == "vendor:9"
    with pytest.raises(InvalidConsent, match="tcf.basis"):
        check_tcf_basis("vendor:nine")


def test_v23_string_without_disclosed_vendors_is_an_invalid_consent_update() -> None:
    bad = encode_tc_string(TCString(created=CREATED, last_updated=CREATED, purpose_consents=ALL))
    with pytest.raises(InvalidConsent) as excinfo:
        parse_update({"tcf": bad})
    assert excinfo.value.field == "tcf.disclosed_vendors"


def test_setting_from_the_environment_and_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    monkeypatch.setenv("OFFERSTREAM_TCF_BASIS", "publisher")
    assert load_settings(data_dir=tmp_path).tcf_basis == "publisher"
    assert load_settings(data_dir=tmp_path, tcf_basis="vendor:755").tcf_basis == "vendor:755"  # CLI wins
    monkeypatch.delenv("OFFERSTREAM_TCF_BASIS")
    assert load_settings(data_dir=tmp_path).tcf_basis == "purposes"


@pytest.mark.parametrize("bad", ["vendor", "vendor:0", "everything", "publisher:abc"])
def test_bad_setting_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bad: str) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    monkeypatch.setenv("OFFERSTREAM_TCF_BASIS", bad)
    with pytest.raises(ValueError, match="OFFERSTREAM_TCF_BASIS"):
        load_settings(data_dir=tmp_path)


def test_serve_flag_parses() -> None:
    assert build_parser().parse_args(["serve", "--tcf-basis", "vendor:9"]).tcf_basis == "vendor:9"
    assert build_parser().parse_args(["serve"]).tcf_basis is None  # None = the environment decides


def test_serve_with_a_bad_basis_exits_2_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    with pytest.raises(SystemExit) as excinfo:
        main(["serve", "--data-dir", str(tmp_path), "--tcf-basis", "vendors:9"])
    assert excinfo.value.code == 2
    assert "OFFERSTREAM_TCF_BASIS" in capsys.readouterr().err


def test_a_consent_calls_archived_record_names_the_basis(tmp_path: Path) -> None:
    from stream.local_log import LocalLog

    log = LocalLog(tmp_path / "archive", tmp_path / "dead.jsonl", "w1")
    update = parse_update({"tcf": GLOBAL_ONLY}, basis="vendor:9")
    log.append_consent_call("c", apply_update(ConsentState.unknown(), update, 1_780_000_000_000), 1_780_000_000_000)
    log.append_consent_call("d", apply_update(ConsentState.unknown(), parse_update({"flags": {"profile": True}}),
                                              1_780_000_000_000), 1_780_000_000_000)
    files = sorted((tmp_path / "archive").rglob("*.jsonl"))
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert {rec["customer_id"]: rec.get("tcf_basis") for rec in lines} == {"c": "vendor:9", "d": None}


@pytest.mark.parametrize(("archived", "rows"), [(None, 1), ("purposes", 1), ("vendor:12", 0), ("publisher", 0)])
def test_replay_reads_an_archived_tc_string_under_the_basis_the_worker_used(archived: str | None, rows: int) -> None:
    """Training replay honours the basis a worker named in the archived consent event: under
    ``vendor:12`` (a ghost vendor) or ``publisher`` the string grants no training consent, so the
    customer's impression gives no training row; records naming none keep ``purposes``."""
    from models.catalog import parse_offer
    from training.replay import replay

    consent_event = {"event_id": "c1", "type": "consent", "customer_id": "c", "ts": 1_780_000_000_000,
                     "consent": {"tcf": GLOBAL_ONLY}}
    if archived is not None:
        consent_event["tcf_basis"] = archived
    events = [consent_event, {"event_id": "i1", "type": "offer_impression", "customer_id": "c",
                              "ts": 1_780_000_001_000, "offer_id": "o1", "decision_id": "d1", "position": 0,
                              "propensity": 1.0}]
    offers = {"o1": parse_offer({"offer_id": "o1", "title": "o", "category": "shoes", "kind": "discount"}, "o1")}
    result = replay(events, offers)
    assert len(result.meta) == rows
    assert result.counts["excluded_no_training_consent"] == 1 - rows


def test_an_archived_record_naming_a_bad_basis_is_refused() -> None:
    from models.consent import archived_tcf_basis

    with pytest.raises(InvalidConsent):
        archived_tcf_basis({"type": "consent", "tcf_basis": "everything"})
