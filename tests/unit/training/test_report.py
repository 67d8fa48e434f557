"""The report: plots and report.md written and linked, metrics.json written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import metrics, report


def _metrics(y: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    groups = np.arange(y.size) // 5
    s = {name: metrics.score_metrics(y, p, groups) for name, p in scores.items()}
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
        "uncertainty": metrics.bootstrap_auc(y, scores, "GBM", n_boot=100),
    }


def test_plots_and_report_are_written_and_linked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    scores = {"GBM": np.clip(y * 0.5 + rng.random(200) * 0.5, 0, 1),
              "logistic": rng.random(200), "popularity": np.full(200, 0.3)}
    plots = report.write_plots(tmp_path, y, scores, [("a", 0.1, 0.01), ("b", 0.0, 0.0)])
    content = _metrics(y, scores)
    report.write_metrics_json(tmp_path, content)
    text = report.write_report_md(tmp_path, content, plots).read_text()
    assert len(plots) == 4
    for name in plots.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    assert "| model (gbm) |" in text and "none logged" in text
    assert "| model - popularity |" in text and "95 % interval" in text
    assert (tmp_path / "metrics.json").is_file()


def test_the_gate_plot_shows_each_difference_with_its_interval(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.3).astype(float)
    scores = {"GBM": np.clip(y * 0.5 + rng.random(300) * 0.5, 0, 1), "logistic": rng.random(300)}
    groups = np.arange(300) // 5
    intervals = {"AUC": metrics.bootstrap_auc(y, scores, "GBM", n_boot=100)["vs"],
                 "NDCG@3": metrics.bootstrap_ndcg(y, scores, groups, "GBM", 3, 100)["vs"]}
    plots = report.write_plots(tmp_path, y, scores, [("a", 0.1, 0.01)], intervals)
    assert plots["gate"] == "gate.png" and (tmp_path / "gate.png").read_bytes()[:4] == b"\x89PNG"
    assert "gate" not in report.write_plots(tmp_path / "none", y, scores, [("a", 0.1, 0.01)],
                                            {"AUC": {}, "NDCG@3": {}})
