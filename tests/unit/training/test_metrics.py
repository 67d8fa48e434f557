"""Evaluation metrics on hand examples and against scikit-learn's answers."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics


def test_ndcg_hand_examples() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    groups = np.array([0, 0, 0, 1, 1, 2])  # group 2: one row, no positive -> skipped
    perfect = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.5])
    worst = np.array([0.9, 0.1, 0.8, 0.1, 0.8, 0.5])
    assert metrics.ndcg_at_k(y, perfect, groups, k=3) == (1.0, 2)
    # group 0: positive at rank 3 -> 1/log2(4) = 0.5; group 1: at rank 2 -> 1/log2(3)
    value, n = metrics.ndcg_at_k(y, worst, groups, k=3)
    assert n == 2 and value == pytest.approx((0.5 + 1 / np.log2(3)) / 2)
    # k=1: positive not at the top scores 0
    assert metrics.ndcg_at_k(y, worst, groups, k=1)[0] == 0.0
    # constant scores: the expectation over tie order, (1 + 1/log2(3) + 1/2) / 3 in group 0
    value, _ = metrics.ndcg_at_k(y[:3], np.zeros(3), groups[:3], k=3)
    assert value == pytest.approx((1 + 1 / np.log2(3) + 0.5) / 3)
    assert metrics.ndcg_at_k(np.zeros(3), np.zeros(3), np.zeros(3)) == (None, 0)


def test_calibration_table_and_lift() -> None:
    p = np.linspace(0.0, 1.0, 100)
    y = (np.arange(100) % 2).astype(float)
    table = metrics.calibration_table(y, p)
    assert len(table["bins"]) == 10 and sum(b["n"] for b in table["bins"]) == 100
    assert table["bins"][0]["mean_p"] == pytest.approx(p[:10].mean())
    assert table["bins"][0]["rate"] == 0.5
    assert table["ece"] == pytest.approx(np.mean([abs(p[i * 10:(i + 1) * 10].mean() - 0.5)
                                                  for i in range(10)]))
    lift = metrics.lift_table(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]), bins=4)
    assert lift[0]["lift"] == 4.0 and lift[-1]["lift"] == 1.0


def test_auc_standard_error() -> None:
    assert metrics.auc_standard_error(None, 3, 3) is None
    assert metrics.auc_standard_error(0.5, 10, 10) > metrics.auc_standard_error(0.5, 100, 100)


def test_bootstrap_auc_resamples_match_weighted_roc_auc_and_pair_the_scorers() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.05).astype(int)
    good = y * 0.4 + rng.random(3000)
    tied = np.round(y * 0.2 + rng.random(3000), 1)  # many ties: each counts one half
    one = metrics.bootstrap_auc(y, {"good": good, "tied": tied}, "good", n_boot=1, chunk=1, seed=5)
    counts = np.bincount(np.random.default_rng(5).integers(0, 3000, 3000), minlength=3000)
    assert one["auc_ci95"]["tied"][0] == pytest.approx(roc_auc_score(y, tied, sample_weight=counts))
    out = metrics.bootstrap_auc(y, {"good": good, "tied": tied}, "good", n_boot=400)
    vs = out["vs"]["tied"]
    assert vs["diff"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, tied))
    assert vs["ci95"][0] < vs["diff"] < vs["ci95"][1]
    assert out["n_boot"] == 400 and 0.0 <= vs["p_reference_better"] <= 1.0
    # a scorer against itself differs by exactly 0 in every resample (paired draws)
    same = metrics.bootstrap_auc(y, {"a": good, "b": good.copy()}, "a", n_boot=50)
    assert same["vs"]["b"]["ci95"] == [0.0, 0.0] and same["vs"]["b"]["p_reference_better"] == 0.0


def test_evaluate_agrees_with_roc_auc_score() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.2).astype(int)
    p = np.round(y * 0.3 + rng.random(500), 2)  # ties included
    out = metrics.evaluate(y, p)
    assert out["auc"] == pytest.approx(roc_auc_score(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert out["n"] == 500 and out["base_rate"] == pytest.approx(y.mean())
    assert metrics.evaluate(np.zeros(3), np.full(3, 0.2))["auc"] is None
    assert metrics.evaluate(np.array([]), np.array([]))["n"] == 0


def test_permutation_importance_finds_the_informative_column() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    X = np.column_stack([rng.random(400), np.zeros(400), rng.random(400)])
    y = (X[:, 0] + 0.1 * rng.random(400) > 0.6).astype(int)
    model = LogisticRegression().fit(X, y)
    ranked = metrics.permutation_importance(model, X, y, ["signal", "constant", "noise"])
    assert ranked[0][0] == "signal" and ranked[0][1] > 0.1
    assert ("constant", 0.0, 0.0) in ranked  # constant columns are never shuffled
    assert metrics.permutation_importance(model, X, np.zeros(400), ["a", "b", "c"]) == []
