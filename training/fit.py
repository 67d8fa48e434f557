"""Fitting and evaluation: a time split, the GBM, the logistic baseline, and the basic metrics.

Everything here is deterministic (fixed ``random_state``, no early-stopping shuffle), so the same
replay gives the same model bytes up to the timestamp in its version.

Examples
--------
>>> import numpy as np
>>> train, test = time_split(np.array([5, 1, 3, 3, 9]), frac=0.6)
>>> train.tolist(), test.tolist()
([False, True, True, True, False], [True, False, False, False, True])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from models.features import FEATURE_NAMES
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["GBM_PARAMS", "GBM_GRID", "SEARCH_MAX_ROWS", "time_split", "fit_gbm", "fit_logistic",
           "evaluate", "choose_gbm_params"]

#: Features whose effect must not be negative: more interest in an offer's category, or that
#: category in the cart, never lowers the offer's score. Without this the first model learned
#: from sparse data that a customer who shops only one category wants that category *less*.
INCREASING = ("cat_affinity_1d", "cat_affinity_30d", "cart_has_category")
MONOTONIC_CST = tuple(1 if name in INCREASING else 0 for name in FEATURE_NAMES)

GBM_PARAMS: dict[str, Any] = {
    "max_iter": 150, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 20,
    "l2_regularization": 1.0, "early_stopping": False, "random_state": 0,
    "monotonic_cst": list(MONOTONIC_CST),
}


def time_split(meta_ts: np.ndarray, frac: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Split rows by time: rows before the cut train, the rest (the later part) test.

    The cut is the time of the row at quantile ``frac``; rows at exactly that time all go to the
    test side, so no instant is split between the two (many impressions share one time).

    Parameters
    ----------
    meta_ts : array of int
        Row times (epoch ms), any order.
    frac : float
        Target share of training rows, in (0, 1).

    Returns
    -------
    (train_mask, test_mask) : tuple of bool arrays

    Raises
    ------
    ValueError
        If ``frac`` is out of range or either side would be empty.
    """
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    ts = np.asarray(meta_ts, dtype=np.int64)
    if ts.size < 2:
        raise ValueError("need at least two rows to split")
    cut = np.sort(ts)[min(int(frac * ts.size), ts.size - 1)]
    train = ts < cut
    if not train.any():
        raise ValueError("every row is at or after the cut: the data cover a single instant")
    return train, ~train


def fit_gbm(X: np.ndarray, y: np.ndarray,
            params: dict[str, Any] | None = None) -> HistGradientBoostingClassifier:
    """Fit the production model: a small, deterministic histogram gradient-boosting classifier.

    Parameters
    ----------
    X : array (n, n_features)
        Rows from :func:`models.features.vectorize`.
    y : array (n,)
        0/1 labels.
    params : dict, optional
        Settings (default :data:`GBM_PARAMS`; see :func:`choose_gbm_params`).
    """
    return HistGradientBoostingClassifier(**(params or GBM_PARAMS)).fit(X, y)


def fit_logistic(X: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit the baseline: standardization then L2 logistic regression.

    Parameters
    ----------
    X : array (n, n_features)
    y : array (n,)
    """
    model = Pipeline([
        ("scale", StandardScaler()),
        ("logistic", LogisticRegression(C=1.0, max_iter=2000)),
    ])
    return model.fit(X, y)


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    """AUC, log loss, base rate, mean prediction and size of an evaluation set.

    ``auc`` is ``None`` when ``y`` holds one class only (it is undefined then).

    >>> evaluate(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.6, 0.4]))["auc"]
    1.0
    """
    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if y.size == 0:
        return {"auc": None, "log_loss": None, "base_rate": None, "mean_p": None, "n": 0}
    two_classes = np.unique(y).size == 2
    return {
        "auc": float(roc_auc_score(y, p)) if two_classes else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "base_rate": float(y.mean()),
        "mean_p": float(p.mean()),
        "n": int(y.size),
    }


#: Candidate GBM settings: the default, and more regularized ones for rare positives.
GBM_GRID: tuple[dict[str, Any], ...] = (
    GBM_PARAMS,
    {**GBM_PARAMS, "max_iter": 100, "max_leaf_nodes": 7, "min_samples_leaf": 50},
    {**GBM_PARAMS, "max_iter": 100, "max_leaf_nodes": 3, "min_samples_leaf": 500,
     "l2_regularization": 10.0},
    {**GBM_PARAMS, "max_iter": 200, "learning_rate": 0.03, "max_leaf_nodes": 4,
     "min_samples_leaf": 100, "l2_regularization": 5.0},
)


#: The parameter search looks at the latest this-many training rows at most: on a 1M-event
#: retrain it fitted four models on ~70,000 rows (9.5 s of the 60 s budget); the final model is
#: still fitted on every training row.
SEARCH_MAX_ROWS = 30_000


def choose_gbm_params(X: np.ndarray, y: np.ndarray, ts: np.ndarray) -> tuple[dict[str, Any], list]:
    """Pick from :data:`GBM_GRID` by AUC on the latest 20 % (by time) of the training rows.

    Only the latest :data:`SEARCH_MAX_ROWS` rows take part (fitted on their earlier 80 %).
    """
    if ts.size > SEARCH_MAX_ROWS:
        latest = np.sort(np.argsort(ts, kind="stable")[-SEARCH_MAX_ROWS:])
        X, y, ts = X[latest], y[latest], ts[latest]
    try:
        fit_part, val = time_split(ts, 0.8)
    except ValueError:
        return dict(GBM_PARAMS), []
    if np.unique(y[fit_part]).size < 2 or np.unique(y[val]).size < 2:
        return dict(GBM_PARAMS), []
    scores = []
    for params in GBM_GRID:
        model = HistGradientBoostingClassifier(**params).fit(X[fit_part], y[fit_part])
        scores.append(float(roc_auc_score(y[val], model.predict_proba(X[val])[:, 1])))
    return dict(GBM_GRID[int(np.argmax(scores))]), scores
