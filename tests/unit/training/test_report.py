"""Report metrics on hand examples; plots and report.md written and linked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import report


def test_ndcg_hand_examples() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    groups = np.array([0, 0, 0, 1, 1, 2])  # group 2: one row, no positive -> skipped
    perfect = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.5])
    worst = np.array([0.9, 0.1, 0.8, 0.1, 0.8, 0.5])
    assert report.ndcg_at_k(y, perfect, groups, k=3) == (1.0, 2)
    # group 0: positive at rank 3 -> 1/log2(4) = 0.5; group 1: at rank 2 -> 1/log2(3)
    value, n = report.ndcg_at_k(y, worst, groups, k=3)
    assert n == 2 and value == pytest.approx((0.5 + 1 / np.log2(3)) / 2)
    # k=1: positive not at the top scores 0
    assert report.ndcg_at_k(y, worst, groups, k=1)[0] == 0.0
    # constant scores: the expectation over tie order, (1 + 1/log2(3) + 1/2) / 3 in group 0
    value, _ = report.ndcg_at_k(y[:3], np.zeros(3), groups[:3], k=3)
    assert value == pytest.approx((1 + 1 / np.log2(3) + 0.5) / 3)
    assert report.ndcg_at_k(np.zeros(3), np.zeros(3), np.zeros(3)) == (None, 0)


def test_calibration_table_and_lift() -> None:
    p = np.linspace(0.0, 1.0, 100)
    y = (np.arange(100) % 2).astype(float)
    table = report.calibration_table(y, p)
    assert len(table["bins"]) == 10 and sum(b["n"] for b in table["bins"]) == 100
    assert table["bins"][0]["mean_p"] == pytest.approx(p[:10].mean())
    assert table["bins"][0]["rate"] == 0.5
    assert table["ece"] == pytest.approx(np.mean([abs(p[i * 10:(i + 1) * 10].mean() - 0.5)
                                                  for i in range(10)]))
    lift = report.lift_table(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]), bins=4)
    assert lift[0]["lift"] == 4.0 and lift[-1]["lift"] == 1.0


def test_auc_standard_error() -> None:
    assert report.auc_standard_error(None, 3, 3) is None
    assert report.auc_standard_error(0.5, 10, 10) > report.auc_standard_error(0.5, 100, 100)


def test_bootstrap_auc_resamples_match_weighted_roc_auc_and_pair_the_scorers() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.05).astype(int)
    good = y * 0.4 + rng.random(3000)
    tied = np.round(y * 0.2 + rng.random(3000), 1)  # many ties: each counts one half
    one = report.bootstrap_auc(y, {"good": good, "tied": tied}, "good", n_boot=1, chunk=1, seed=5)
    counts = np.bincount(np.random.default_rng(5).integers(0, 3000, 3000), minlength=3000)
    assert one["auc_ci95"]["tied"][0] == pytest.approx(roc_auc_score(y, tied, sample_weight=counts))
    out = report.bootstrap_auc(y, {"good": good, "tied": tied}, "good", n_boot=400)
    vs = out["vs"]["tied"]
    assert vs["diff"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, tied))
    assert vs["ci95"][0] < vs["diff"] < vs["ci95"][1]
    assert out["n_boot"] == 400 and 0.0 <= vs["p_reference_better"] <= 1.0
    # a scorer against itself differs by exactly 0 in every resample (paired draws)
    same = report.bootstrap_auc(y, {"a": good, "b": good.copy()}, "a", n_boot=50)
    assert same["vs"]["b"]["ci95"] == [0.0, 0.0] and same["vs"]["b"]["p_reference_better"] == 0.0


def _metrics(y: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    groups = np.arange(y.size) // 5
    s = {name: report.score_metrics(y, p, groups) for name, p in scores.items()}
    return {
        "dataset": "synthetic", "rows": int(y.size), "positives": int(y.sum()),
        "data_range": ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"],
        "split": {"train_rows": 0, "test_rows": int(y.size), "split_at": "2024-01-01"},
        "decision": "five rows", "model": {**s["GBM"], "params": {},
                                            "permutation_importance": [("a", 0.1, 0.01)]},
        "baselines": {"logistic": s["logistic"], "popularity": s["popularity"]},
        "ope": {"available": False, "reason": "none logged"},
        "gate": {"passed": True, "reason": "ok", "allow_worse": False},
        "bundle": {"version": "v1", "registered": False, "promoted": False},
        "replay": {"counts": {"rows": int(y.size)}, "settings": {}},
        "uncertainty": report.bootstrap_auc(y, scores, "GBM", n_boot=100),
    }


def test_plots_and_report_are_written_and_linked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    scores = {"GBM": np.clip(y * 0.5 + rng.random(200) * 0.5, 0, 1),
              "logistic": rng.random(200), "popularity": np.full(200, 0.3)}
    plots = report.write_plots(tmp_path, y, scores, [("a", 0.1, 0.01), ("b", 0.0, 0.0)])
    metrics = _metrics(y, scores)
    report.write_metrics_json(tmp_path, metrics)
    text = report.write_report_md(tmp_path, metrics, plots).read_text()
    assert len(plots) == 4
    for name in plots.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    assert "| GBM (model) |" in text and "none logged" in text
    assert "| GBM - popularity |" in text and "95 % interval" in text
    assert (tmp_path / "metrics.json").is_file()
