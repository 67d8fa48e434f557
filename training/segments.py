"""Results per customer segment: who the model is better for, from each row's own features.

A row's segment is read from its feature row, i.e. from what the profile held **at decision
time** (point in time, as the row itself), through :data:`models.features.FEATURE_INDEX`:

* ``cold_start``: the model sees no history of the customer: no event before the decision
  (``hours_since_event`` is the "never" value), or no profile it may use (``personalized`` 0:
  the customer has none yet, or gave no ``personalize`` consent), so only context and offer
  features can help;
* ``new``: some history but fewer than two purchases; ``returning``: two purchases or more;
* ``store_only``: every earlier purchase in a store; ``online``: at least one earlier purchase on
  the web or in the app (``store_share`` < 1).

A segment may be empty: the Complete Journey has store purchases only, so ``online`` is empty
there.

Examples
--------
>>> import numpy as np
>>> from models.features import FEATURE_NAMES
>>> X = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
>>> X[:, FEATURE_INDEX["personalized"]] = 1.0
>>> X[0, FEATURE_INDEX["hours_since_event"]] = np.log1p(NEVER_HOURS)
>>> X[1, FEATURE_INDEX["orders_total"]] = np.log1p(3); X[1, FEATURE_INDEX["store_share"]] = 1.0
>>> {name: mask.tolist() for name, mask in segment_masks(X).items()}["returning"]
[False, True]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.features import FEATURE_INDEX, NEVER_HOURS
from training.metrics import bootstrap_auc, bootstrap_ndcg, ndcg_at_k, rank_auc

__all__ = ["SEGMENTS", "segment_masks", "segment_results"]

SEGMENTS = {
    "cold_start": "no history the model may use: no event before the decision, or no profile",
    "new": "some history, fewer than 2 purchases before the decision",
    "returning": "2 or more purchases before the decision",
    "store_only": "1 or more purchases before the decision, all in a store",
    "online": "1 or more purchases before the decision, at least one on the web or in the app",
}
_NEVER = np.float32(math.log1p(NEVER_HOURS))
_TWO = np.float32(math.log1p(2.0))


def segment_masks(X: np.ndarray) -> dict[str, np.ndarray]:
    """A boolean row mask per :data:`SEGMENTS` entry (see the module notes)."""
    column = {name: X[:, FEATURE_INDEX[name]] for name in
              ("personalized", "hours_since_event", "orders_total", "store_share")}
    personal = column["personalized"] > 0
    cold = personal & (column["hours_since_event"] >= _NEVER)
    orders = column["orders_total"]
    bought = personal & (orders > 0)
    return {
        "cold_start": cold | ~personal,
        "new": personal & ~cold & (orders < _TWO),
        "returning": personal & (orders >= _TWO),
        "store_only": bought & (column["store_share"] >= 1.0),
        "online": bought & (column["store_share"] < 1.0),
    }


def segment_results(X: np.ndarray, y: np.ndarray, scores: Mapping[str, np.ndarray],
                    groups: np.ndarray, reference: str, k: int,
                    n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """Per segment: size, positives, each scorer's AUC and NDCG@k, and the paired-bootstrap
    intervals of ``reference`` minus each other scorer (AUC over the segment's rows, NDCG@k over
    its decisions: a decision's rows restricted to the segment)."""
    out: dict[str, dict[str, Any]] = {}
    for name, mask in segment_masks(X).items():
        ys = y[mask]
        entry: dict[str, Any] = {"definition": SEGMENTS[name], "rows": int(mask.sum()),
                                 "positives": int(ys.sum())}
        both = np.unique(ys).size == 2
        sub = {s: np.asarray(v)[mask] for s, v in scores.items()}
        entry["auc"] = {s: (rank_auc(ys, v) if both else None) for s, v in sub.items()}
        entry["ndcg_at_k"] = {s: ndcg_at_k(ys, v, groups[mask], k)[0] for s, v in sub.items()}
        entry["ndcg_decisions"] = ndcg_at_k(ys, sub[reference], groups[mask], k)[1]
        if both:
            entry["auc_vs"] = bootstrap_auc(ys, sub, reference, n_boot=n_boot)["vs"]
        entry["ndcg_vs"] = bootstrap_ndcg(ys, sub, groups[mask], reference, k, n_boot).get("vs", {})
        out[name] = entry
    return out
