"""Off-policy evaluation: the value of a target policy estimated from another policy's log.

Notation (one row per logged round ``i``): reward ``r_i``, logged action ``a_i``, the logging
policy's propensity ``p_i = pi_0(a_i | x_i)``, the target policy's action distribution
``pi(. | x_i)`` over the ``m`` actions (``action_dist``, shape ``(n, m)``) and, for DM/DR, a reward
model ``q(x_i, a)`` (``q_hat``, shape ``(n, m)``). With ``w_i = pi(a_i | x_i) / p_i``:

* IPS    ``V = mean(w r)``
* SNIPS  ``V = sum(w r) / sum(w)``
* DM     ``V = mean(sum_a pi(a|x) q(x, a))``
* DR     ``V = DM + mean(w (r - q(x, a_i)))``

Standard errors are ``std(term_i) / sqrt(n)`` of each estimator's per-round term (SNIPS by the
delta method). They treat rounds as independent; in OBD the three positions of one page share a
user, so they are a little optimistic there.

Examples
--------
>>> import numpy as np
>>> r, a, p = np.array([1.0, 0.0]), np.array([0, 1]), np.array([0.5, 0.5])
>>> pi = np.array([[1.0, 0.0], [1.0, 0.0]])
>>> ips(r, a, p, pi).value, snips(r, a, p, pi).value
(1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from training.datasets import TrainingData
    from training.replay import ReplayResult

__all__ = [
    "Estimate",
    "importance_weights",
    "ips",
    "snips",
    "direct_method",
    "doubly_robust",
    "greedy_slate",
    "softmax_policy",
    "obd_reward_model",
    "obd_bts_action_dist",
    "obd_bts_estimate",
    "obd_model_policy_estimate",
    "model_estimates",
    "PUBLISHED_OBD",
]

#: obp 0.4.1 quickstart on this sample (``shared/data/README.md``): BTS value from the random log.
PUBLISHED_OBD = {"observed_bts": 0.0042, "ipw": 0.004553, "dm": 0.003545, "dr": 0.004727}


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its standard error over ``n`` rounds."""

    value: float
    se: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain data for ``metrics.json``."""
        return {"value": self.value, "se": self.se, "n": self.n}


def _estimate(terms: np.ndarray) -> Estimate:
    n = terms.size
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(terms.mean()), se, n)


def _check(reward: Any, action: Any, pscore: Any, action_dist: Any):  # type: ignore[no-untyped-def]
    r = np.asarray(reward, dtype=np.float64)
    a = np.asarray(action, dtype=np.int64)
    p = np.asarray(pscore, dtype=np.float64)
    pi = np.asarray(action_dist, dtype=np.float64)
    n = r.size
    if n == 0 or r.shape != (n,) or a.shape != (n,) or p.shape != (n,):
        raise ValueError("reward, action and pscore must be non-empty 1-d arrays of one length")
    if pi.ndim != 2 or pi.shape[0] != n:
        raise ValueError(f"action_dist must have shape (n, n_actions) with n={n}, got {pi.shape}")
    if np.any(p <= 0) or not np.all(np.isfinite(p)):
        raise ValueError("pscore must be positive and finite (a logged action had probability 0?)")
    if a.min() < 0 or a.max() >= pi.shape[1]:
        raise ValueError(f"action must index the {pi.shape[1]} actions of action_dist")
    if np.any(pi < 0) or np.any(pi.sum(axis=1) > 1 + 1e-6):
        raise ValueError("action_dist rows must be probabilities (non-negative, sum <= 1)")
    return r, a, p, pi


def importance_weights(action: Any, pscore: Any, action_dist: Any) -> np.ndarray:
    """``w_i = pi(a_i | x_i) / p_i``.

    >>> importance_weights([1], [0.25], [[0.5, 0.5]]).tolist()
    [2.0]
    """
    a = np.asarray(action, dtype=np.int64)
    pi = np.asarray(action_dist, dtype=np.float64)
    return pi[np.arange(a.size), a] / np.asarray(pscore, dtype=np.float64)


def ips(reward: Any, action: Any, pscore: Any, action_dist: Any) -> Estimate:
    """Inverse propensity scoring: unbiased when ``pscore`` is right and covers ``pi``."""
    r, a, p, pi = _check(reward, action, pscore, action_dist)
    return _estimate(importance_weights(a, p, pi) * r)


def snips(reward: Any, action: Any, pscore: Any, action_dist: Any) -> Estimate:
    """Self-normalized IPS: divides by the weights' sum (slightly biased, far less variance).

    >>> snips([1, 0, 1], [0, 0, 1], [0.5, 0.5, 0.5], [[1, 0], [1, 0], [1, 0]]).value
    0.5
    """
    r, a, p, pi = _check(reward, action, pscore, action_dist)
    w = importance_weights(a, p, pi)
    if w.sum() <= 0:
        return Estimate(float("nan"), float("nan"), r.size)
    value = float((w * r).sum() / w.sum())
    influence = w * (r - value) / w.mean()
    se = float(influence.std(ddof=1) / np.sqrt(r.size)) if r.size > 1 else float("nan")
    return Estimate(value, se, r.size)


def direct_method(action_dist: Any, q_hat: Any) -> Estimate:
    """The reward model's value of ``pi``: ``mean(sum_a pi(a|x) q(x, a))``."""
    pi, q = np.asarray(action_dist, dtype=np.float64), np.asarray(q_hat, dtype=np.float64)
    if pi.shape != q.shape or pi.ndim != 2 or pi.shape[0] == 0:
        raise ValueError(f"action_dist {pi.shape} and q_hat {q.shape} must be one (n, m) shape")
    return _estimate((pi * q).sum(axis=1))


def doubly_robust(reward: Any, action: Any, pscore: Any, action_dist: Any, q_hat: Any) -> Estimate:
    """DM plus the importance-weighted residual of the logged action.

    Unbiased if either the propensities or the reward model are right.

    >>> doubly_robust([1.0], [0], [0.5], [[1.0, 0.0]], [[0.4, 0.1]]).value
    1.6
    """
    r, a, p, pi = _check(reward, action, pscore, action_dist)
    q = np.asarray(q_hat, dtype=np.float64)
    if q.shape != pi.shape:
        raise ValueError(f"q_hat must have the shape of action_dist {pi.shape}, got {q.shape}")
    rows = np.arange(r.size)
    w = importance_weights(a, p, pi)
    return _estimate((pi * q).sum(axis=1) + w * (r - q[rows, a]))


def greedy_slate(scores: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Deterministic slate policy: the item ranked ``k``-th by score fills position ``k``.

    >>> greedy_slate(np.array([[0.1, 0.9, 0.5]]), np.array([1])).tolist()
    [[0.0, 0.0, 1.0]]
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    chosen = order[np.arange(scores.shape[0]), position]
    dist = np.zeros(scores.shape, dtype=np.float64)
    dist[np.arange(scores.shape[0]), chosen] = 1.0
    return dist


def softmax_policy(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Stochastic policy ``pi(a) ~ exp(logit(score_a) / temperature)`` (same at every position)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    z = np.log(s / (1 - s)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---- Open Bandit Dataset -------------------------------------------------------------------

def _reward_design(log: dict[str, np.ndarray], rows: np.ndarray, items: np.ndarray):  # type: ignore[no-untyped-def]
    """Sparse design for (row, item) pairs: item one-hot, position one-hot, affinity, user one-hots."""
    from scipy import sparse

    n, n_items = rows.size, log["affinity"].shape[1]
    blocks = [
        sparse.csr_matrix((np.ones(n), (np.arange(n), items)), shape=(n, n_items)),
        sparse.csr_matrix((np.ones(n), (np.arange(n), log["position"][rows])), shape=(n, 3)),
        sparse.csr_matrix(log["affinity"][rows, items].astype(np.float64).reshape(-1, 1)),
    ]
    for k in range(4):
        codes = log[f"user_feature_{k}"][rows]
        width = len(log[f"user_feature_{k}_values"])
        blocks.append(sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, width)))
    return sparse.hstack(blocks, format="csr")


def obd_reward_model(log: dict[str, np.ndarray], n_folds: int = 3, seed: int = 0,
                     C: float = 1.0) -> np.ndarray:
    """Cross-fitted click model ``q(x_i, a)`` for every row and all items at the row's position.

    Logistic regression on (item one-hot, position one-hot, user-item affinity of the item,
    one-hots of the four user features), fitted on ``n_folds - 1`` folds and predicted on the
    held-out fold, so no row's own click enters its ``q`` (as obp's quickstart does, 3 folds).
    """
    from sklearn.linear_model import LogisticRegression

    n, n_items = log["affinity"].shape
    folds = np.random.default_rng(seed).permutation(n) % n_folds
    q = np.empty((n, n_items), dtype=np.float64)
    for fold in range(n_folds):
        fit_rows, pred_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        model = LogisticRegression(C=C, max_iter=2000)
        model.fit(_reward_design(log, fit_rows, log["item_id"][fit_rows]), log["click"][fit_rows])
        all_rows = np.repeat(pred_rows, n_items)
        all_items = np.tile(np.arange(n_items), pred_rows.size)
        q[pred_rows] = model.predict_proba(_reward_design(log, all_rows, all_items))[:, 1] \
            .reshape(pred_rows.size, n_items)
    return q


def obd_bts_action_dist(bts: dict[str, np.ndarray], n_items: int, how: str = "empirical") -> np.ndarray:
    """Per-position item distribution of the BTS policy, shape ``(3, n_items)``.

    ``empirical``: the share of BTS rows at each position that show each item (context-free, as
    obp's own BTS ``action_dist`` is: it simulates the ZOZOTOWN Beta posteriors, no context).
    ``propensity``: the mean logged propensity of each (position, item), renormalized per position
    (a sensitivity check; items BTS never showed get 0 either way).
    """
    dist = np.zeros((3, n_items), dtype=np.float64)
    if how == "empirical":
        np.add.at(dist, (bts["position"], bts["item_id"]), 1.0)
    elif how == "propensity":
        counts = np.zeros_like(dist)
        np.add.at(dist, (bts["position"], bts["item_id"]), bts["propensity"])
        np.add.at(counts, (bts["position"], bts["item_id"]), 1.0)
        dist = np.divide(dist, counts, out=np.zeros_like(dist), where=counts > 0)
    else:
        raise ValueError(f"how must be 'empirical' or 'propensity', got {how!r}")
    return dist / dist.sum(axis=1, keepdims=True)


def _rate(clicks: np.ndarray) -> dict[str, float | int]:
    return _estimate(np.asarray(clicks, dtype=np.float64)).to_dict()


def obd_bts_estimate(data_dir: str | Path | None = None, *, n_folds: int = 3,
                     q_hat: np.ndarray | None = None) -> dict[str, Any]:
    """Estimate the BTS policy's click rate from the uniform-random log and compare.

    The target ``pi(. | x_i)`` of random-log row ``i`` is :func:`obd_bts_action_dist` at the
    row's position (the BTS log's item shares there); ``p_i = 1/80`` is logged. The reward model
    is :func:`obd_reward_model` (3-fold cross-fitting on the random log).

    Returns
    -------
    dict
        ``ips, snips, dm, dr`` (each ``{value, se, n}``), ``observed_bts`` and
        ``observed_random`` (click rates in their own logs), ``published``, the sensitivity
        estimate with propensity-based shares, and a description of the method.
    """
    from training.adapters import obd

    root = Path(data_dir) if data_dir else obd.DEFAULT_DATA_DIR
    random_log, bts_log = obd.load_log(root, "random"), obd.load_log(root, "bts")
    n_items = random_log["affinity"].shape[1]
    q = obd_reward_model(random_log, n_folds) if q_hat is None else q_hat
    r, a, p = random_log["click"], random_log["item_id"], random_log["propensity"]
    pi = obd_bts_action_dist(bts_log, n_items)[random_log["position"]]
    pi_prop = obd_bts_action_dist(bts_log, n_items, "propensity")[random_log["position"]]
    return {
        "ips": ips(r, a, p, pi).to_dict(),
        "snips": snips(r, a, p, pi).to_dict(),
        "dm": direct_method(pi, q).to_dict(),
        "dr": doubly_robust(r, a, p, pi, q).to_dict(),
        "ips_propensity_shares": ips(r, a, p, pi_prop).to_dict(),
        "observed_bts": _rate(bts_log["click"]),
        "observed_random": _rate(r),
        "published": dict(PUBLISHED_OBD),
        "method": ("target = BTS log's empirical item share per position (context-free); "
                   "logged p = 1/80; reward model = logistic regression on item, position, "
                   f"user-item affinity and user features, {n_folds}-fold cross-fitted on the "
                   "random log"),
    }


def obd_model_policy_estimate(scores: np.ndarray, log: dict[str, np.ndarray], rows: np.ndarray,
                              q_hat: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
    """Value of a scoring model used as a policy, on rows ``rows`` of the random OBD log.

    ``scores[j, a]`` is the model's probability for item ``a`` at round ``rows[j]``. Two policies:
    ``greedy`` (the item ranked ``k``-th fills position ``k``: a top-3 slate) and ``softmax``
    (:func:`softmax_policy`, the same distribution at every position).
    """
    r, a, p = log["click"][rows], log["item_id"][rows], log["propensity"][rows]
    q = q_hat[rows]
    out: dict[str, Any] = {"rows": int(rows.size), "observed_random": _rate(r),
                           "method": f"greedy top-3 slate, and softmax over logits / {temperature:g}"
                                     "; DR/DM with the cross-fitted reward model"}
    for name, pi in (("greedy", greedy_slate(scores, log["position"][rows])),
                     ("softmax", softmax_policy(scores, temperature))):
        out[name] = {"ips": ips(r, a, p, pi).to_dict(), "snips": snips(r, a, p, pi).to_dict(),
                     "dm": direct_method(pi, q).to_dict(), "dr": doubly_robust(r, a, p, pi, q).to_dict()}
    return out


def model_estimates(data: TrainingData, result: ReplayResult, model: Any, test: np.ndarray,
                    progress: Callable[[str], Any] = print) -> dict[str, Any]:
    """The off-policy estimates of a training run (``ope`` in ``metrics.json``).

    With ``--dataset obd``: the BTS policy from the random log, and ``model`` as a policy on the
    random log's test rounds; otherwise ``available: False`` and the reason.

    Parameters
    ----------
    data : TrainingData
        The run's data (its ``name``; for OBD its ``data_dir`` note).
    result : ReplayResult
        Its replay.
    model : fitted classifier
        The trained model (``predict_proba``).
    test : array of bool
        The test rows of ``result``.
    progress : callable
        Receives one line when estimates are computed.
    """
    if data.name == "obd":
        progress("off-policy estimates on the OBD random log")
        return _obd_estimates(data, result, model, test)
    has_p = any(result.meta[i].propensity is not None for i in np.flatnonzero(test))
    reason = ("the log records each shown offer's propensity but not the candidates the policy "
              "chose from, so a new policy's action distribution cannot be formed "
              "(available with --dataset obd)") if has_p else \
        "the impressions carry no logged propensity"
    return {"available": False, "reason": reason}


def _obd_estimates(data: TrainingData, result: ReplayResult, model: Any,
                   test: np.ndarray) -> dict[str, Any]:
    """BTS from the random log, and the trained model as a policy on the random log's test part."""
    from training.adapters import obd
    from training.datasets import candidate_rows

    root = Path(data.notes["data_dir"])
    log = obd.load_log(root, "random")
    q_hat = obd_reward_model(log)
    out: dict[str, Any] = {"available": True,
                           "bts_from_random_log": obd_bts_estimate(root, q_hat=q_hat)}
    prefix = "obd-random-"
    rows = sorted(int((result.meta[i].decision_id or "")[len(prefix):]) for i in np.flatnonzero(test)
                  if (result.meta[i].decision_id or "").startswith(prefix))
    if not rows:
        return out
    items = [data.offers[f"obd-item-{j}"] for j in range(log["affinity"].shape[1])]
    captured = candidate_rows(data, {f"{prefix}{i}": log["affinity"][i] for i in rows}, items)
    rows = [i for i in rows if f"{prefix}{i}" in captured]
    X = np.concatenate([captured[f"{prefix}{i}"] for i in rows])
    scores = model.predict_proba(X)[:, 1].reshape(len(rows), len(items))
    out["model_policy"] = obd_model_policy_estimate(scores, log, np.asarray(rows), q_hat)
    return out
