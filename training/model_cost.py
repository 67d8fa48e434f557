"""Model cost as part of model choice: test AUC against ONNX scoring time (issue #5).

Replays the Complete Journey sample once (the data of :mod:`training.first_model`), splits it by time
(latest 20 % test), then for each candidate setting fits on the training part and reports

- test AUC, and the paired bootstrap interval of (reference AUC - candidate AUC), the reference
  being the former first model (:data:`training.fit.GBM_PARAMS_150`);
- the ONNX call's thread CPU for 200 test rows (:func:`training.export.onnx_cpu_ms`, the exported
  graph, median of many calls) and the number of tree nodes;
- ``browse_rise``: the mean score rise on personalized test rows when their category affinity
  and cart columns go from 0 to (0.6, 0.6, 1), i.e. whether the model still reacts to browsing;
- ``demo_rise``: the walking demo's own scenario (:func:`demo_rise`), which the e2e test needs
  positive.

Also runs :func:`training.fit.choose_gbm_params` (what ``offerstream train`` does) and reports its
choice. Usage::

    python -m training.model_cost [--data-dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.features import FEATURE_NAMES
from training.export import LATENCY_ROWS, onnx_cpu_ms, to_onnx
from training.fit import (
    GBM_GRID,
    GBM_PARAMS,
    GBM_PARAMS_150,
    choose_gbm_params,
    fit_gbm,
    time_split,
)

__all__ = ["CANDIDATES", "browse_rise", "study", "main"]

_BROWSE = [FEATURE_NAMES.index(n)
           for n in ("cat_affinity_1d", "cat_affinity_30d", "cart_has_category")]

#: Fewer trees at a higher learning rate, fewer leaves (20 rows per leaf), and the first model's
#: 31-leaf settings with 20-40 trees: name -> settings.
CANDIDATES: dict[str, dict[str, Any]] = {
    f"{trees}x{leaves}@{rate}": {**GBM_PARAMS_150, "max_iter": trees, "learning_rate": rate,
                                 "max_leaf_nodes": leaves}
    for trees, rate in ((150, 0.05), (60, 0.125), (40, 0.19), (30, 0.25), (20, 0.35), (10, 0.5))
    for leaves in (15, 7, 4)
}
CANDIDATES.update({f"{trees}x31@0.1/5": {**GBM_PARAMS, "max_iter": trees}
                   for trees in (20, 30, 40)})
CANDIDATES.update({f"grid{i}": dict(p) for i, p in enumerate(GBM_GRID)})


def browse_rise(model: Any, X: np.ndarray) -> float:
    """Mean score rise on personalized rows when category affinity and cart go from none to high."""
    rows = X[X[:, FEATURE_NAMES.index("personalized")] > 0]
    low, high = rows.copy(), rows.copy()
    low[:, _BROWSE] = 0.0
    high[:, _BROWSE] = (0.6, 0.6, 1.0)
    return float(np.mean(model.predict_proba(high)[:, 1] - model.predict_proba(low)[:, 1]))


#: The walking demo's offers (``tests/e2e/test_demo_page.py``) and its shopping: store purchases
#: in two categories and a web purchase of the browsed one, then views and a cart of it.
DEMO_OFFERS = (
    {"offer_id": "grocery-10", "category": "GROCERY", "kind": "discount", "discount_pct": 10},
    {"offer_id": "grocery-pantry", "category": "GROCERY", "kind": "bundle", "discount_pct": 5},
    {"offer_id": "produce-5", "category": "PRODUCE", "kind": "discount", "discount_pct": 5},
    {"offer_id": "produce-points", "category": "PRODUCE", "kind": "loyalty"},
    {"offer_id": "drug-15", "category": "DRUG GM", "kind": "discount", "discount_pct": 15},
)
DEMO_BROWSED = "PRODUCE"


def demo_rise(model: Any, now_ms: int = 1_790_000_000_000) -> float:
    """The largest score rise of a browsed-category offer in the walking demo's scenario.

    The e2e test requires it to be positive after rounding to 6 decimals, as the answer shows.
    """
    from models.catalog import parse_offer
    from models.events import parse_event
    from models.features import Context, vectorize
    from models.profile import Profile

    offers = [parse_offer(o) for o in DEMO_OFFERS]
    profile, n = Profile(), 0

    def event(kind: str, category: str, channel: str = "web") -> None:
        nonlocal n
        n += 1
        item = {"item_id": f"{category}-{n % 2}", "category": category, "price": 3.5}
        body: dict[str, Any] = {"event_id": f"e{n}", "customer_id": "demo",
                                "ts": now_ms - 60_000 + n * 1000}
        if kind == "purchase":
            body.update(type="purchase", channel=channel, order_id=f"o{n}",
                        items=[{**item, "quantity": 1}], total=3.5)
        else:
            body.update(type=kind, **item, **({"quantity": 1} if kind == "add_to_cart" else {}))
        profile.apply(parse_event(body))

    for category, channel in [("GROCERY", "store"), ("GROCERY", "store"), ("DRUG GM", "store"),
                              (DEMO_BROWSED, "web")]:
        event("purchase", category, channel)
    rows = [i for i, o in enumerate(offers) if o.category == DEMO_BROWSED]

    def scores() -> np.ndarray:
        X = vectorize(profile, offers, Context(channel="web"), now_ms + 30_000)
        return np.round(model.predict_proba(X)[rows, 1], 6)

    before = scores()
    for kind in ("product_view", "product_view", "add_to_cart", "product_view", "product_view"):
        event(kind, DEMO_BROWSED)
    return float(np.max(scores() - before))


def study(X: np.ndarray, y: np.ndarray, ts: np.ndarray, rounds: int = 300) -> dict[str, Any]:
    """Every candidate, plus ``offerstream train``'s choice, on one time split (see the module)."""
    from training.metrics import bootstrap_auc, score_metrics

    train, test = time_split(ts, 0.8)
    rows = X[test][np.random.default_rng(0).choice(int(test.sum()), LATENCY_ROWS, replace=False)]
    params, selection = choose_gbm_params(X[train], y[train], ts[train])
    settings = {"reference": GBM_PARAMS_150, **CANDIDATES, "rule": params}
    scores, table = {}, {}
    for name, p in settings.items():
        start = time.perf_counter()
        model = fit_gbm(X[train], y[train], p)
        fit_s = time.perf_counter() - start
        model_bytes = to_onnx(model)
        scores[name] = model.predict_proba(X[test])[:, 1]
        metrics = score_metrics(y[test], scores[name], np.arange(int(test.sum())))
        table[name] = {
            "trees": p["max_iter"], "leaves": p["max_leaf_nodes"],
            "learning_rate": p["learning_rate"], "test_auc": metrics["auc"],
            "auc_se": metrics["auc_se"], "log_loss": metrics["log_loss"],
            "onnx_cpu_ms_200": round(onnx_cpu_ms(model_bytes, rows, rounds), 4),
            "browse_rise": round(browse_rise(model, X[test]), 5),
            "demo_rise": round(demo_rise(model), 6), "fit_s": round(fit_s, 3)}
    boot = bootstrap_auc(y[test], scores, "reference")
    for name, versus in boot["vs"].items():
        table[name]["reference_minus_auc_ci95"] = [round(v, 4) for v in versus["ci95"]]
    return {"train_rows": int(train.sum()), "test_rows": int(test.sum()),
            "test_positives": int(y[test].sum()), "selection": selection, "table": table}


def _print(result: dict[str, Any]) -> None:
    print(f"train {result['train_rows']} rows, test {result['test_rows']} "
          f"({result['test_positives']} positives)")
    print(f"{'model':>14} {'trees':>5} {'leaves':>6} {'AUC':>7} {'ref-AUC 95% CI':>18} "
          f"{'ONNX ms':>8} {'browse':>8} {'demo':>9}")
    for name, r in result["table"].items():
        ci = r.get("reference_minus_auc_ci95", [0.0, 0.0])
        print(f"{name:>14} {r['trees']:>5} {r['leaves']:>6} {r['test_auc']:.4f} "
              f"[{ci[0]:+.4f}, {ci[1]:+.4f}] {r['onnx_cpu_ms_200']:>8.4f} {r['browse_rise']:>8.5f} "
              f"{r['demo_rise']:>9.6f}")
    selection = result["selection"]
    print(f"rule: {selection.get('chosen')}; bars: AUC {selection.get('auc_bar')}, "
          f"log loss {selection.get('log_loss_bar')}")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m training.model_cost [--data-dir DIR] [--json OUT]``."""
    from training.adapters import completejourney
    from training.first_model import first_model_data
    from training.replay import replay

    parser = argparse.ArgumentParser(prog="python -m training.model_cost",
                                     description="Test AUC against ONNX scoring time (issue #5).")
    parser.add_argument("--data-dir", type=Path, default=completejourney.DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    data = first_model_data(args.data_dir)
    replayed = replay(data.events, data.offers, assume_consent=True)
    result = study(replayed.X, replayed.y, replayed.ts)
    _print(result)
    if args.json:
        option = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
        args.json.write_bytes(orjson.dumps(result, option=option))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
