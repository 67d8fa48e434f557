"""The cost-aware GBM choice (issue #5): the cheapest candidate over both one-SE bars wins."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from models.features import FEATURE_NAMES
from training import fit, metrics
from training.fit import GBM_GRID, MIN_TREES, choose_gbm_params, time_split


def _data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    logit = 1.2 * X[:, 1] - 0.8 * X[:, 5] + 0.5 * X[:, 2] * X[:, 3] - 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return X, y, np.arange(n, dtype=np.int64) * 1000


def test_the_choice_is_the_cheapest_candidate_over_both_bars() -> None:
    X, y, ts = _data()
    params, selection = choose_gbm_params(X, y, ts)
    chosen = selection["chosen"]
    assert params["max_iter"] == chosen["trees"] >= MIN_TREES
    assert chosen["auc"] >= selection["auc_bar"] and chosen["log_loss"] <= selection["log_loss_bar"]
    assert selection["auc_bar"] < selection["best_auc"]
    entry = GBM_GRID[chosen["grid_entry"]]
    assert {**params, "max_iter": 0} == {**entry, "max_iter": 0}
    # recompute every candidate independently: none cheaper meets both bars
    fit_part, val = time_split(ts, 0.8)
    for g, grid_params in enumerate(GBM_GRID):
        model = fit.fit_gbm(X[fit_part], y[fit_part], grid_params)
        for n, proba in enumerate(model.staged_predict_proba(X[val]), start=1):
            if n < MIN_TREES or n * grid_params["max_leaf_nodes"] >= chosen["cost"]:
                continue
            p = np.clip(proba[:, 1], 1e-7, 1 - 1e-7)
            assert (roc_auc_score(y[val], p) < selection["auc_bar"]
                    or log_loss(y[val], p) > selection["log_loss_bar"]), (g, n)


def test_the_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.1).astype(np.int8)
    p = np.round(rng.random(5000) + 0.3 * y, 2)  # many ties
    assert abs(metrics.rank_auc(y, p) - roc_auc_score(y, p)) < 1e-12


def test_the_chosen_cut_fits_the_same_trees_as_the_validation_run() -> None:
    """Cutting a fit after n trees equals fitting n trees: the staged curve is what gets served."""
    X, y, ts = _data(1500, seed=1)
    params = {**GBM_GRID[1], "max_iter": 12}
    short = fit.fit_gbm(X, y, params)
    long = fit.fit_gbm(X, y, {**params, "max_iter": 30})
    staged = list(long.staged_predict_proba(X[:50]))[11]
    np.testing.assert_allclose(short.predict_proba(X[:50]), staged, rtol=0, atol=1e-12)


def test_one_class_in_validation_falls_back_to_the_defaults() -> None:
    X, y, ts = _data(500)
    y[:] = 0
    y[:10] = 1  # positives only early: the validation part has one class
    params, selection = choose_gbm_params(X, y, ts)
    assert params == fit.GBM_PARAMS and selection == {}


def test_the_first_model_still_raises_the_browsed_category_in_the_demo(shared_data) -> None:
    """The walking demo's scenario (tests/e2e) in process, on the bundle the first model exports."""
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from models.scorer import load_bundle
    from training.first_model import train_first_model
    from training.model_cost import demo_rise

    with TemporaryDirectory() as tmp:
        summary = train_first_model(Path(tmp) / "bundle", data_dir=shared_data / "completejourney",
                                    progress=lambda *a, **k: None)
        scorer = load_bundle(summary["bundle"])

        class Served:  # the exported ONNX model, asked as demo_rise asks a fitted model
            @staticmethod
            def predict_proba(X: np.ndarray) -> np.ndarray:
                p = scorer.score(X).astype(np.float64)
                return np.column_stack([1 - p, p])

        assert demo_rise(Served()) > 0
        assert summary["latency"]["rows"] == 200 and summary["latency"]["nodes"] > 0
