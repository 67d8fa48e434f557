"""The ranking objective (training/rank.py): it ranks, it exports with parity, the rule picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.features import FEATURE_NAMES
from training.metrics import ndcg_at_k, rank_auc
from training.rank import LambdaMART, _float32_at_most, choose_objective, pairs_of


def _decisions(seed: int, n_groups: int = 300, size: int = 4) -> tuple[np.ndarray, ...]:
    """Groups whose positive depends on a within-group contrast of column 0 (and column 1 shifts
    every row of a group alike: a pointwise model can lean on it, a ranker need not)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), size)
    X = rng.normal(size=(groups.size, len(FEATURE_NAMES))).astype(np.float32)
    X[:, 1] = np.repeat(rng.normal(size=n_groups), size)
    best = np.array([np.argmax(X[groups == g, 0] + 0.3 * rng.normal(size=size)) for g in range(n_groups)])
    y = np.zeros(groups.size, dtype=np.int8)
    y[np.arange(n_groups) * size + best] = 1
    return X, y, groups


def test_pairs_are_positive_negative_inside_groups() -> None:
    hi, lo = pairs_of(np.array([1, 0, 1, 0, 0, 1]), np.array([0, 0, 1, 1, 1, 2]))
    assert sorted(zip(hi.tolist(), lo.tolist(), strict=True)) == [(0, 1), (2, 3), (2, 4)]


@pytest.mark.parametrize("pointwise", [0.0, 1.0])
def test_lambdamart_learns_the_order_inside_decisions(pointwise: float) -> None:
    X, y, groups = _decisions(0)
    Xt, yt, gt = _decisions(1)
    model = LambdaMART(n_trees=30, max_leaf_nodes=4, pointwise=pointwise).fit(X, y, groups)
    p = model.predict_proba(Xt)[:, 1]
    assert ndcg_at_k(yt, p, gt, 3)[0] > 0.85  # chance is about 0.56 for one positive in four
    assert np.all((p > 0) & (p < 1)) and rank_auc(yt, p) > 0.75
    assert model.get_params()["pointwise"] == pointwise and len(model.trees_) == 30


def test_max_rows_keeps_every_decision_with_a_positive_and_reweighs_the_others() -> None:
    X, y, groups = _decisions(0)
    y[groups >= 150] = 0  # half the decisions without a positive: 600 of the 1,200 rows
    model = LambdaMART(n_trees=20, max_leaf_nodes=4, pointwise=1.0, max_rows=800)
    rows, weight = model._rows(y, groups)
    assert set(np.flatnonzero(groups < 150)) <= set(rows.tolist())
    sampled = rows[groups[rows] >= 150]
    assert 0 < sampled.size < 600 and sampled.size % 4 == 0  # whole decisions
    assert np.allclose(weight[groups[rows] >= 150], 3.0) and np.all(weight[groups[rows] < 150] == 1.0)
    Xt, yt, gt = _decisions(1)
    assert ndcg_at_k(yt, model.fit(X, y, groups).predict_proba(Xt)[:, 1], gt, 3)[0] > 0.8


def test_nothing_to_rank_is_refused() -> None:
    X, _y, groups = _decisions(0, n_groups=5)
    with pytest.raises(ValueError, match="nothing to rank"):
        LambdaMART().fit(X, np.zeros(groups.size), groups)


def test_float32_thresholds_keep_every_float32_on_its_side() -> None:
    rng = np.random.default_rng(3)
    for t in rng.normal(size=2000) * 10.0 ** rng.integers(-6, 6, size=2000):
        f = _float32_at_most(float(t))
        assert f <= t and np.float32(f) == f
        above = float(np.nextafter(np.float32(f), np.float32(np.inf)))
        assert above > t  # the next float32 is on the other side


def test_export_holds_the_parity_gate_and_serves_the_same_scores(tmp_path: Path) -> None:
    from models.scorer import load_bundle
    from training.export import PARITY_TOLERANCE, export_bundle

    X, y, groups = _decisions(0)
    X[:, 2] = np.round(X[:, 2], 1)  # many rows exactly at candidate thresholds' neighbours
    model = LambdaMART(n_trees=25, max_leaf_nodes=7, pointwise=1.0).fit(X, y, groups)
    Xt = _decisions(1)[0]
    Xt[:, 2] = np.round(Xt[:, 2], 1)
    export_bundle(model, Xt, tmp_path / "b", kind="lambdamart", data_range=[0, 1], metrics={},
                  offer_stats={})
    scorer = load_bundle(tmp_path / "b")
    diff = np.max(np.abs(scorer.score(Xt).astype(np.float64) - model.predict_proba(Xt)[:, 1]))
    assert diff <= PARITY_TOLERANCE
    assert scorer.version.startswith("lambdamart-")


def test_the_rule_keeps_the_gbm_without_decisions_to_rank() -> None:
    from training.fit import GBM_PARAMS

    X, y, _ = _decisions(0)
    ts = np.arange(y.size)
    kind, record = choose_objective(X, y, ts, np.arange(y.size), dict(GBM_PARAMS), 3)  # one row each
    assert kind == "gbm" and "nothing to rank" in record["reason"]
    kind, record = choose_objective(X, y, ts, _decisions(0)[2], dict(GBM_PARAMS), 3)
    assert kind in ("gbm", "lambdamart") and set(record["validation"]) == {"gbm", "lambdamart"}
