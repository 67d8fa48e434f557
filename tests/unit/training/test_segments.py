"""Segments (training/segments.py) and the per-decision NDCG bootstrap."""

from __future__ import annotations

import math

import numpy as np

from models.features import FEATURE_INDEX, FEATURE_NAMES, NEVER_HOURS
from training.metrics import bootstrap_ndcg, ndcg_per_group
from training.segments import segment_masks, segment_results


def _rows() -> np.ndarray:
    X = np.zeros((6, len(FEATURE_NAMES)), dtype=np.float32)
    X[:5, FEATURE_INDEX["personalized"]] = 1.0  # the last row was scored without a profile
    X[0, FEATURE_INDEX["hours_since_event"]] = math.log1p(NEVER_HOURS)  # cold
    X[1, FEATURE_INDEX["hours_since_event"]] = 1.0  # browsed, never bought: new
    X[2:5, FEATURE_INDEX["orders_total"]] = [math.log1p(1), math.log1p(2), math.log1p(7)]
    X[2:5, FEATURE_INDEX["store_share"]] = [1.0, 0.5, 1.0]
    return X


def test_every_row_lands_where_its_features_say() -> None:
    masks = {k: np.flatnonzero(v).tolist() for k, v in segment_masks(_rows()).items()}
    assert masks == {"cold_start": [0, 5], "new": [1, 2], "returning": [3, 4],
                     "store_only": [2, 4], "online": [3]}


def test_segment_results_count_and_compare() -> None:
    rng = np.random.default_rng(0)
    X = np.repeat(_rows(), 50, axis=0)
    y = (rng.random(X.shape[0]) < 0.3).astype(float)
    groups = np.arange(X.shape[0]) // 3
    scores = {"model": y + rng.normal(0, 0.1, y.size), "other": rng.random(y.size)}
    out = segment_results(X, y, scores, groups, "model", 3, n_boot=200)
    assert out["online"]["rows"] == 50 and out["cold_start"]["positives"] == int(y[:50].sum() + y[250:].sum())
    assert out["returning"]["auc"]["model"] > 0.95 and out["returning"]["auc_vs"]["other"]["ci95"][0] > 0
    assert out["new"]["ndcg_vs"]["other"]["ci95"][0] > 0


def test_ndcg_bootstrap_resamples_decisions() -> None:
    y = np.array([1, 0, 0, 1, 0, 1])
    g = np.array([0, 0, 1, 1, 2, 2])
    good, bad = np.array([1.0, 0, 0, 1, 0, 1]), np.array([0.0, 1, 1, 0, 1, 0])
    assert ndcg_per_group(y, good, g).tolist() == [1.0, 1.0, 1.0]
    out = bootstrap_ndcg(y, {"a": good, "b": bad}, g, "a", n_boot=100)
    assert out["decisions"] == 3 and out["vs"]["b"]["ci95"][0] > 0
    assert bootstrap_ndcg(y[:2], {"a": good[:2]}, g[:2], "a") == {}  # one decision: no interval
