"""``offerstream train`` end to end on small synthetic logs (fast: a few seconds per run)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from offerstream.cli import main
from training.datasets import TrainingInputError, parse_until, read_event_files

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR, DAY = 3_600_000, 86_400_000
CATEGORIES = ("shoes", "bags", "hats", "coats")


def _offers(same: bool = False) -> list[dict[str, Any]]:
    return [{"offer_id": f"o{i}", "category": "all" if same else CATEGORIES[i], "kind": "discount",
             "discount_pct": 10} for i in range(4)]


def _log(label_rule: str, n_customers: int = 150, days: int = 6, seed: int = 0) -> list[dict]:
    """Purchases build a favourite category; then two offers per customer, morning and evening.

    ``interaction``: click iff (offer in the favourite category) XOR (evening), 5 % flipped: a
    GBM learns it, a linear model and per-offer popularity cannot.
    ``offer``: click iff the offer is ``o0``, and every offer looks alike to the features: only
    the popularity baseline can rank, so the GBM cannot beat it.
    """
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    for c in range(n_customers):
        fav = CATEGORIES[c % 4]
        if label_rule == "interaction":
            events.append({"event_id": f"p{c}", "type": "purchase", "customer_id": f"c{c}",
                           "ts": T0 + c * 1000, "order_id": f"b{c}", "total": 20.0,
                           "items": [{"item_id": "i1", "category": fav, "price": 10.0, "quantity": 2}]})
        for d in range(1, days + 1):
            for slot, hour in enumerate((8, 20)):
                ts = T0 + d * DAY + hour * HOUR + c * 1000
                for o in rng.choice(4, size=2, replace=False):
                    decision = f"d{c}-{d}-{slot}"
                    events.append({"event_id": f"i{c}-{d}-{slot}-{o}", "type": "offer_impression",
                                   "customer_id": f"c{c}", "ts": ts, "offer_id": f"o{o}",
                                   "decision_id": decision, "position": int(o)})
                    if label_rule == "interaction":
                        click = (CATEGORIES[o] == fav) != (hour == 20)
                        click = click != (rng.random() < 0.05)
                    else:
                        click = o == 0
                    if click:
                        events.append({"event_id": f"k{c}-{d}-{slot}-{o}", "type": "offer_click",
                                       "customer_id": f"c{c}", "ts": ts + 60_000,
                                       "offer_id": f"o{o}", "decision_id": decision})
    events.sort(key=lambda e: e["ts"])
    return events


def _write(path: Path, rows: list[Any]) -> Path:
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path]:
    tmp = tmp_path_factory.mktemp("good")
    events = _write(tmp / "events.jsonl.gz", _log("interaction"))
    offers = _write(tmp / "offers.jsonl", _offers())
    code = main(["train", "--events", str(events), "--offers", str(offers), "--out",
                 str(tmp / "out"), "--registry", str(tmp / "reg"), "--assume-consent"])
    return code, tmp / "out", tmp / "reg"


def test_train_writes_metrics_report_and_registers(good_run: tuple[int, Path, Path]) -> None:
    code, out, reg = good_run
    assert code == 0
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    for key in ("auc", "log_loss", "ndcg_at_k", "calibration"):
        assert key in metrics["model"]
    assert set(metrics["baselines"]) == {"popularity", "logistic"}
    assert {"auc", "log_loss", "ndcg_at_k"} <= set(metrics["baselines"]["logistic"])
    assert "ope" in metrics and metrics["ope"]["available"] is False
    assert metrics["rows"] > 0 and len(metrics["data_range"]) == 2
    assert metrics["model"]["auc"] > max(b["auc"] for b in metrics["baselines"].values())
    assert metrics["gate"]["passed"] and metrics["bundle"]["promoted"]
    assert (reg / "CURRENT").read_text().strip() == metrics["bundle"]["version"]
    assert (out / "bundle" / "model.onnx").is_file()
    vs = metrics["uncertainty"]["vs"]
    # the baselines, and the pointwise GBM when the ranker won on validation
    candidates = set(metrics["model"]["candidates"])
    assert set(vs) == {"popularity", "logistic"} | candidates and metrics["uncertainty"]["n_boot"] == 1000
    assert candidates == ({"pointwise GBM"} if metrics["model"]["kind"] == "lambdamart" else set())
    assert vs["logistic"]["ci95"][0] > 0  # the XOR rule: the GBM is ahead in ~every resample
    importance = {name: (mean, sd) for name, mean, sd in metrics["model"]["permutation_importance"]}
    from models.features import FEATURE_NAMES

    assert set(importance) == set(FEATURE_NAMES)
    assert importance["views_1h"] == (0.0, 0.0)  # no page views in this log: never shuffled
    top = max(importance, key=lambda n: importance[n][0])
    assert top in {"hour_sin", "hour_cos", "cat_affinity_1d", "cat_affinity_30d"}, importance
    report = (out / "report.md").read_text()
    for png in ("roc.png", "calibration.png", "lift.png", "feature_importance.png"):
        assert (out / png).stat().st_size > 0 and f"]({png})" in report


def test_model_that_cannot_beat_popularity_fails_unless_allowed(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    events = _write(tmp_path / "events.jsonl", _log("offer", n_customers=60, days=4))
    offers = _write(tmp_path / "offers.jsonl", _offers(same=True))
    base = ["train", "--events", str(events), "--offers", str(offers), "--assume-consent"]
    assert main([*base, "--out", str(tmp_path / "a"), "--registry", str(tmp_path / "reg")]) == 1
    assert "does not beat the baselines" in capsys.readouterr().err
    assert not (tmp_path / "reg" / "CURRENT").exists()
    assert (tmp_path / "a" / "metrics.json").is_file()
    assert main([*base, "--out", str(tmp_path / "b"), "--allow-worse"]) == 0


def test_bad_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    offers = _write(tmp_path / "offers.jsonl", _offers())
    good = {"event_id": "e1", "type": "page_view", "customer_id": "c1", "ts": T0}
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n\n{not json\n")
    assert main(["train", "--events", str(path), "--offers", str(offers), "--out", str(tmp_path / "o")]) == 2
    assert f"{path}:3: not valid JSON" in capsys.readouterr().err
    path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({**good, "customer_id": None}) + b"\n")
    assert main(["train", "--events", str(path), "--offers", str(offers), "--out", str(tmp_path / "o")]) == 2
    assert f"{path}:2: customer_id" in capsys.readouterr().err


def test_missing_file_and_missing_input_are_readable_errors(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    offers = _write(tmp_path / "offers.jsonl", _offers())
    missing = tmp_path / "nope.jsonl"
    assert main(["train", "--events", str(missing), "--offers", str(offers), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err and "Traceback" not in err
    assert main(["train", "--events", str(offers), "--out", str(tmp_path)]) == 2  # offers are no events
    assert f"{offers}:1: event_id" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "give --events PATH..., --archive DATA_DIR or --dataset NAME" in capsys.readouterr().err


def test_until_and_merge_of_files(tmp_path: Path) -> None:
    a = {"event_id": "a", "type": "page_view", "customer_id": "c", "ts": T0 + 2}
    b = {"event_id": "b", "type": "page_view", "customer_id": "c", "ts": "2024-01-01T00:00:00.001+00:00"}
    c = {"event_id": "c", "type": "page_view", "customer_id": "c", "ts": T0 + DAY}
    f1, f2 = _write(tmp_path / "1.jsonl", [a, c]), _write(tmp_path / "2.jsonl.gz", [b])
    events, dropped = read_event_files([f1, f2], until=parse_until("2024-01-01T12:00:00+00:00"))
    assert [e["event_id"] for e in events] == ["b", "a"] and dropped == 1
    assert parse_until(str(T0)) == T0
    with pytest.raises(TrainingInputError, match="--until"):
        parse_until("yesterday")
