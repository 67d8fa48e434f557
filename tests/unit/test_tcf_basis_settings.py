"""``OFFERSTREAM_TCF_BASIS``: the setting, the CLI flag, and consent updates read under it (issue 16, item 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models import consent
from models.consent import parse_update, set_tcf_basis, tcf_basis
from models.errors import InvalidConsent
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


@pytest.fixture(autouse=True)
def _restore_basis() -> Iterator[None]:
    before = tcf_basis()
    yield
    set_tcf_basis(before)


def test_default_basis_is_purposes() -> None:
    assert consent.DEFAULT_TCF_BASIS == "purposes"


@pytest.mark.parametrize(("basis", "expected"), [
    ("purposes", ALL_TRUE), ("vendor:9", ALL_TRUE), ("vendor:12", ALL_FALSE),
    ("publisher", ALL_FALSE), ("publisher:9", ALL_FALSE),
])
def test_consent_update_reads_the_tc_string_under_the_configured_basis(basis: str, expected: dict) -> None:
    set_tcf_basis(basis)
    assert parse_update({"tcf": GLOBAL_ONLY}).proposals["tcf"] == expected
    set_tcf_basis("purposes")
    assert parse_update({"tcf": GLOBAL_ONLY}, basis=basis).proposals["tcf"] == expected  # explicit wins


def test_a_bad_basis_is_refused_and_the_current_one_kept() -> None:
    set_tcf_basis("vendor:9")
    with pytest.raises(InvalidConsent, match="tcf.basis"):
        set_tcf_basis("vendor:nine")
    assert tcf_basis() == "vendor:9"


def test_v23_string_without_disclosed_vendors_is_an_invalid_consent_update() -> None:
    bad = encode_tc_string(TCString(created=CREATED, last_updated=CREATED, purpose_consents=ALL))
    with pytest.raises(InvalidConsent) as excinfo:
        parse_update({"tcf": bad})
    assert excinfo.value.field == "tcf.disclosed_vendors"


def test_setting_from_the_environment_installs_the_basis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    monkeypatch.setenv("OFFERSTREAM_TCF_BASIS", "publisher")
    assert load_settings(data_dir=tmp_path).tcf_basis == "publisher"
    assert tcf_basis() == "publisher"
    assert load_settings(data_dir=tmp_path, tcf_basis="vendor:755").tcf_basis == "vendor:755"  # CLI wins
    assert tcf_basis() == "vendor:755"
    monkeypatch.delenv("OFFERSTREAM_TCF_BASIS")
    assert load_settings(data_dir=tmp_path).tcf_basis == "purposes"
    assert tcf_basis() == "purposes"


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
