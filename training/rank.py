"""A ranking objective: LambdaMART with scikit-learn regression trees, exported to ONNX.

A decision shows several offers; what counts is their order. :class:`LambdaMART` boosts small
``DecisionTreeRegressor`` s on the LambdaRank gradients of the pairs inside each decision (a
positive and a negative row of the same group): the RankNet pairwise logistic loss, each pair
weighted by the change of NDCG@k that swapping the two would make (Burges, "From RankNet to
LambdaRank to LambdaMART", 2010). Each tree's leaves take the Newton step ``sum(lambda) /
sum(hessian)``. Rows of groups without both classes carry no pair and no gradient.

The ranking score (the *margin*) is unbounded; serving and the metrics want a probability, so a
one-feature logistic regression of the training labels on the margin (Platt scaling) maps it to
``predict_proba``. It is monotone: the order, AUC and NDCG are those of the margin.

No new dependency: LightGBM's ``LGBMRanker`` has no ONNX converter in onnxmltools (its pull
request is open), so :func:`to_onnx` writes the trees itself as one ``TreeEnsembleRegressor``
+ ``Sigmoid``. Thresholds are stored as the largest float32 not above scikit-learn's float64
threshold, so a float32 input goes the same way in both (scikit-learn compares float32 inputs
with float64 thresholds); :func:`training.export.export_bundle`'s 1e-5 parity gate checks it.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 3)); groups = np.repeat(np.arange(100), 4)
>>> y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0.8).astype(int)
>>> model = LambdaMART(n_trees=20).fit(X, y, groups)
>>> from training.metrics import ndcg_at_k
>>> ndcg_at_k(y, model.predict_proba(X)[:, 1], groups, 3)[0] > 0.9
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeRegressor

__all__ = ["LAMBDAMART_PARAMS", "OBJECTIVE_RULE", "LambdaMART", "pairs_of", "choose_objective",
           "to_onnx"]

#: The ranker ``offerstream train`` tries beside the pointwise GBM: 100 trees of 4 leaves (at
#: least 100 rows each) at rate 0.05, LambdaRank pair weights at k = 3, plus each row's log loss
#: (``pointwise`` 1). Picked once, on the validation part of the full Complete Journey's training
#: rows, from 18 settings (60/100 trees, 4/7/15 leaves, pointwise weight 0.1/0.3/1, decisions by
#: household or by campaign): without the pointwise part the pure ranker had the best
#: per-household NDCG but ranked across households worse than chance (validation AUC 0.35).
LAMBDAMART_PARAMS: dict[str, Any] = {
    "n_trees": 100, "learning_rate": 0.05, "max_leaf_nodes": 4, "min_samples_leaf": 100, "k": 3,
    "pointwise": 1.0, "max_rows": 150_000,
}
OBJECTIVE_RULE = ("pointwise GBM or LambdaMART, fitted on the earlier 80 % (by time) of the "
                  "training part and compared on the later 20 %: LambdaMART wins if its mean "
                  "NDCG@k per decision is higher and its AUC is at most one standard error "
                  "(Hanley-McNeil) below the GBM's; otherwise, or when no validation decision "
                  "holds both a positive and a negative, the GBM")


def pairs_of(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (positive row, negative row) index pair inside a group.

    >>> pairs_of(np.array([1, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1]))
    (array([0, 0]), array([1, 2]))
    """
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    hi: list[np.ndarray] = []
    lo: list[np.ndarray] = []
    for idx in np.split(order, bounds):
        pos, neg = idx[y[idx] > 0], idx[y[idx] <= 0]
        if pos.size and neg.size:
            hi.append(np.repeat(pos, neg.size))
            lo.append(np.tile(neg, pos.size))
    if not hi:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(hi), np.concatenate(lo)


def _ranks(score: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """0-based rank of each row inside its group, highest score first (ties: row order)."""
    order = np.lexsort((np.arange(score.size), -score, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, score.size]))
    ranks = np.empty(score.size, dtype=np.int64)
    ranks[order] = np.arange(score.size) - first
    return ranks


class LambdaMART:
    """LambdaMART on scikit-learn trees (see the module notes).

    Parameters
    ----------
    n_trees, learning_rate, max_leaf_nodes, min_samples_leaf
        The boosting and tree settings.
    k : int
        The NDCG truncation the pair weights use.
    pointwise : float
        Weight of each row's log loss beside the pair gradients.
    max_rows : int, optional
        Boost on at most about this many rows: every row of a decision that holds a positive, and
        a random share of the decisions without one, whose rows' log-loss weight is scaled up by
        the inverse of that share (an unbiased estimate of the full loss). A decision without a
        positive has no pair, so the ranking part is unchanged; the cost of the exact trees
        grows with the rows (the Complete Journey's coupon decisions: 545,000 training rows).
        ``None``: every row.
    random_state : int

    Attributes
    ----------
    trees_ : list of DecisionTreeRegressor
    platt_ : (float, float)
        ``(a, b)``: ``predict_proba = sigmoid(a * margin + b)``.
    """

    def __init__(self, n_trees: int = 60, learning_rate: float = 0.1, max_leaf_nodes: int = 7,
                 min_samples_leaf: int = 20, k: int = 3, pointwise: float = 0.0,
                 max_rows: int | None = None, random_state: int = 0) -> None:
        self.n_trees, self.learning_rate = n_trees, learning_rate
        self.max_leaf_nodes, self.min_samples_leaf = max_leaf_nodes, min_samples_leaf
        self.k, self.pointwise, self.random_state = k, pointwise, random_state
        self.max_rows = max_rows

    def get_params(self) -> dict[str, Any]:
        """The settings, as :data:`LAMBDAMART_PARAMS` names them."""
        return {"n_trees": self.n_trees, "learning_rate": self.learning_rate,
                "max_leaf_nodes": self.max_leaf_nodes, "min_samples_leaf": self.min_samples_leaf,
                "k": self.k, "pointwise": self.pointwise, "max_rows": self.max_rows}

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> LambdaMART:
        """Boost on the pairs of ``groups``; then fit the Platt map on all of ``X``."""
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        groups = np.asarray(groups)
        hi, lo = pairs_of(y, groups)
        if hi.size == 0:
            raise ValueError("no group holds both a positive and a negative row: nothing to rank")
        # only rows in a pair get a pairwise gradient; with a pointwise part every row counts
        rows, weight = (self._rows(y, groups) if self.pointwise > 0
                        else (np.unique(np.concatenate([hi, lo])), np.ones(0)))
        keep = np.zeros(y.size, dtype=bool)
        keep[rows] = True
        hi, lo = hi[keep[hi] & keep[lo]], lo[keep[hi] & keep[lo]]
        local = np.full(y.size, -1)
        local[rows] = np.arange(rows.size)
        hi_l, lo_l = local[hi], local[lo]
        Xr, gr, yr = X[rows], groups[rows], (y[rows] > 0).astype(np.float64)
        ideal = self._ideal_dcg(y, groups)[rows]
        rate = float(np.clip(yr.mean(), 1e-6, 1 - 1e-6))
        self.init_ = float(np.log(rate / (1 - rate))) if self.pointwise > 0 else 0.0
        score = np.full(rows.size, self.init_)
        self.trees_: list[DecisionTreeRegressor] = []
        for t in range(self.n_trees):
            lam, hess = self._gradients(score, gr, hi_l, lo_l, ideal)
            if self.pointwise > 0:  # the log loss of each row: keeps scores comparable across groups
                p = 1.0 / (1.0 + np.exp(-score))
                lam += self.pointwise * weight * (yr - p)
                hess += self.pointwise * weight * p * (1.0 - p)
            ok = hess > 1e-12
            target = np.where(ok, lam / np.where(ok, hess, 1.0), 0.0)
            tree = DecisionTreeRegressor(max_leaf_nodes=self.max_leaf_nodes,
                                         min_samples_leaf=self.min_samples_leaf,
                                         random_state=self.random_state + t)
            tree.fit(Xr, target, sample_weight=hess)  # weighted mean of lam/hess = Newton step
            self.trees_.append(tree)
            score += self.learning_rate * tree.predict(Xr)
        margin = self.decision_function(X)
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(margin[:, None], y)
        self.platt_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return self

    def _rows(self, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows boosted on and their log-loss weights (see ``max_rows``), sorted."""
        if self.max_rows is None or y.size <= self.max_rows:
            return np.arange(y.size), np.ones(y.size)
        inverse = np.unique(groups, return_inverse=True)[1]
        has_pos = np.bincount(inverse, weights=(y > 0).astype(float)) > 0
        kept_rows = int(has_pos[inverse].sum())
        share = min(1.0, max(self.max_rows - kept_rows, 0) / max(y.size - kept_rows, 1))
        rng = np.random.default_rng(self.random_state)
        chosen = has_pos | (rng.random(has_pos.size) < share)
        rows = np.flatnonzero(chosen[inverse])
        weight = np.where(has_pos[inverse[rows]], 1.0, 1.0 / share if share > 0 else 0.0)
        return rows, weight

    def _ideal_dcg(self, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Per row: its group's ideal DCG@k (binary gains; a group without positives: that of one)."""
        inverse = np.unique(groups, return_inverse=True)[1]
        n_pos = np.maximum(np.bincount(inverse, weights=(y > 0).astype(float)), 1.0)
        discounts = np.cumsum(1.0 / np.log2(np.arange(self.k) + 2.0))
        per_group = discounts[np.minimum(n_pos.astype(int), self.k) - 1]
        return np.asarray(per_group[inverse], dtype=np.float64)

    def _gradients(self, score: np.ndarray, groups: np.ndarray, hi: np.ndarray, lo: np.ndarray,
                   ideal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LambdaRank gradients and hessians per row (ascent direction: raise positives)."""
        ranks = _ranks(score, groups)
        disc = np.where(ranks < self.k, 1.0 / np.log2(ranks + 2.0), 0.0)
        delta = np.abs(disc[hi] - disc[lo]) / ideal[hi]  # |change of NDCG@k| if swapped
        delta = np.maximum(delta, 1e-3 / ideal[hi])  # pairs beyond k still count a little
        rho = 1.0 / (1.0 + np.exp(np.clip(score[hi] - score[lo], -50, 50)))
        lam = np.bincount(hi, rho * delta, score.size) - np.bincount(lo, rho * delta, score.size)
        h = rho * (1.0 - rho) * delta
        hess = np.bincount(hi, h, score.size) + np.bincount(lo, h, score.size)
        return lam, hess

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The ranking margin: the sum of the trees' leaves times the learning rate."""
        X = np.asarray(X, dtype=np.float32)
        margin = np.full(X.shape[0], self.init_)
        for tree in self.trees_:
            margin += self.learning_rate * tree.predict(X)
        return margin

    def staged_margins(self, X: np.ndarray) -> list[np.ndarray]:
        """The margin after each tree (for choosing the tree count on validation rows)."""
        X = np.asarray(X, dtype=np.float32)
        margin, out = np.full(X.shape[0], self.init_), []
        for tree in self.trees_:
            margin = margin + self.learning_rate * tree.predict(X)
            out.append(margin)
        return out

    def truncate(self, n_trees: int) -> LambdaMART:
        """Keep the first ``n_trees`` trees (the Platt map is refitted by the caller's ``fit``)."""
        self.trees_ = self.trees_[:n_trees]
        self.n_trees = len(self.trees_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[1 - p, p]`` with ``p = sigmoid(a * margin + b)`` (Platt)."""
        a, b = self.platt_
        z = a * self.decision_function(X) + b
        p = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1.0 - p, p])


def choose_objective(X: np.ndarray, y: np.ndarray, ts: np.ndarray, groups: np.ndarray,
                     gbm_params: dict[str, Any], k: int) -> tuple[str, dict[str, Any]]:
    """``"gbm"`` or ``"lambdamart"`` by :data:`OBJECTIVE_RULE`, and the validation figures.

    Parameters
    ----------
    X, y, ts, groups : arrays
        The training part's rows, labels, times and decision ids.
    gbm_params : dict
        The pointwise GBM's settings (already chosen).
    k : int
        The k of NDCG@k.
    """
    from training.fit import fit_gbm, time_split
    from training.metrics import auc_standard_error, ndcg_at_k, rank_auc

    try:
        fit_part, val = time_split(ts, 0.8)
    except ValueError as exc:
        return "gbm", {"rule": OBJECTIVE_RULE, "reason": f"no validation split: {exc}"}
    y_val = y[val]
    if np.unique(y[fit_part]).size < 2 or np.unique(y_val).size < 2:
        return "gbm", {"rule": OBJECTIVE_RULE, "reason": "a part of the split holds one class"}
    params = {**LAMBDAMART_PARAMS, "k": k}
    try:
        ranker = LambdaMART(**params).fit(X[fit_part], y[fit_part], groups[fit_part])
    except ValueError as exc:
        return "gbm", {"rule": OBJECTIVE_RULE, "reason": str(exc)}
    scores = {"gbm": fit_gbm(X[fit_part], y[fit_part], gbm_params).predict_proba(X[val])[:, 1],
              "lambdamart": ranker.predict_proba(X[val])[:, 1]}
    auc = {name: rank_auc(y_val, p) for name, p in scores.items()}
    ndcg = {name: ndcg_at_k(y_val, p, groups[val], k)[0] for name, p in scores.items()}
    figures = {name: {"auc": auc[name], "ndcg_at_k": ndcg[name]} for name in scores}
    n_pos = int(y_val.sum())
    se = auc_standard_error(auc["gbm"], n_pos, int(y_val.size) - n_pos) or 0.0
    record = {"rule": OBJECTIVE_RULE, "validation": figures, "auc_se": se,
              "validation_rows": int(val.sum()), "lambdamart_params": params}
    gbm_ndcg, lm_ndcg = ndcg["gbm"], ndcg["lambdamart"]
    if gbm_ndcg is None or lm_ndcg is None:
        return "gbm", {**record, "reason": "no validation decision holds both classes"}
    if lm_ndcg > gbm_ndcg and auc["lambdamart"] >= auc["gbm"] - se:
        return "lambdamart", {**record, "reason": "higher NDCG@k, AUC within one standard error"}
    return "gbm", {**record, "reason": "LambdaMART's NDCG@k is not higher, or its AUC is more "
                                      "than one standard error lower"}


def _float32_at_most(t: float) -> float:
    """The largest float32 not above ``t``: ``x <= t`` iff ``x <= it`` for every float32 ``x``."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def to_onnx(model: LambdaMART, input_name: str, n_features: int,
            opsets: dict[str, int]) -> bytes:
    """The ONNX graph of a fitted :class:`LambdaMART`: one ``TreeEnsembleRegressor`` (the margin,
    with the Platt map folded into the leaf weights and the base value), ``Sigmoid``, and the
    ``(n, 2)`` ``probabilities`` output serving reads."""
    from onnx import TensorProto, helper

    a, b = model.platt_
    nodes: dict[str, list[Any]] = {key: [] for key in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "target_ids", "target_nodeids",
        "target_treeids", "target_weights")}
    for tree_id, estimator in enumerate(model.trees_):
        tree = estimator.tree_
        for node in range(tree.node_count):
            leaf = tree.children_left[node] == -1
            nodes["nodes_treeids"].append(tree_id)
            nodes["nodes_nodeids"].append(node)
            nodes["nodes_featureids"].append(0 if leaf else int(tree.feature[node]))
            nodes["nodes_values"].append(0.0 if leaf else _float32_at_most(float(tree.threshold[node])))
            nodes["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            nodes["nodes_truenodeids"].append(0 if leaf else int(tree.children_left[node]))
            nodes["nodes_falsenodeids"].append(0 if leaf else int(tree.children_right[node]))
            if leaf:
                nodes["target_ids"].append(0)
                nodes["target_nodeids"].append(node)
                nodes["target_treeids"].append(tree_id)
                nodes["target_weights"].append(a * model.learning_rate * float(tree.value[node][0][0]))
    graph_nodes = [
        helper.make_node("TreeEnsembleRegressor", [input_name], ["margin"], domain="ai.onnx.ml",
                         n_targets=1, aggregate_function="SUM", post_transform="NONE",
                         base_values=[a * model.init_ + b], **nodes),  # type: ignore[arg-type]
        helper.make_node("Sigmoid", ["margin"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        graph_nodes, "offerstream",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    return bytes(helper.make_model(graph, producer_name="offerstream", opset_imports=opset_imports)
                 .SerializeToString())
