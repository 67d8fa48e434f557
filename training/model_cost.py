"""Model cost as part of model choice: test AUC against ONNX scoring time (issue #5).

Replays the Complete Journey sample once (as :mod:`training.first_model` does), splits it by time
(latest 20 % test), then for each candidate setting fits on the training part and reports

- test AUC, and the paired bootstrap interval of (reference AUC - candidate AUC), the reference
  being the former first model (:data:`training.fit.GBM_PARAMS_150`);
- the ONNX call's thread CPU for 200 test rows (:func:`training.export.onnx_cpu_ms`, the exported
  graph, median of many calls) and the number of tree nodes;
- ``browse_rise``: the mean score rise on personalized test rows when their category affinity
  and cart columns go from 0 to (0.6, 0.6, 1), i.e. whether the model still reacts to browsing
  (the walking demo needs it).

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

#: Fewer trees at a higher learning rate, fewer leaves: name -> settings.
CANDIDATES: dict[str, dict[str, Any]] = {
    f"{trees}x{leaves}@{rate}": {**GBM_PARAMS, "max_iter": trees, "learning_rate": rate,
                                 "max_leaf_nodes": leaves}
    for trees, rate in ((150, 0.05), (60, 0.125), (40, 0.19), (30, 0.25), (20, 0.35), (10, 0.5))
    for leaves in (15, 7, 4)
}
CANDIDATES.update({f"grid{i}": dict(p) for i, p in enumerate(GBM_GRID)})


def browse_rise(model: Any, X: np.ndarray) -> float:
    """Mean score rise on personalized rows when category affinity and cart go from none to high."""
    rows = X[X[:, FEATURE_NAMES.index("personalized")] > 0]
    low, high = rows.copy(), rows.copy()
    low[:, _BROWSE] = 0.0
    high[:, _BROWSE] = (0.6, 0.6, 1.0)
    return float(np.mean(model.predict_proba(high)[:, 1] - model.predict_proba(low)[:, 1]))


def study(X: np.ndarray, y: np.ndarray, ts: np.ndarray, rounds: int = 300) -> dict[str, Any]:
    """Every candidate, plus ``offerstream train``'s choice, on one time split (see the module)."""
    from training.report import bootstrap_auc, score_metrics

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
            "browse_rise": round(browse_rise(model, X[test]), 5), "fit_s": round(fit_s, 3)}
    boot = bootstrap_auc(y[test], scores, "reference")
    for name, versus in boot["vs"].items():
        table[name]["reference_minus_auc_ci95"] = [round(v, 4) for v in versus["ci95"]]
    return {"train_rows": int(train.sum()), "test_rows": int(test.sum()),
            "test_positives": int(y[test].sum()), "selection": selection, "table": table}


def _print(result: dict[str, Any]) -> None:
    print(f"train {result['train_rows']} rows, test {result['test_rows']} "
          f"({result['test_positives']} positives)")
    print(f"{'model':>14} {'trees':>5} {'leaves':>6} {'AUC':>7} {'ref-AUC 95% CI':>18} "
          f"{'ONNX ms':>8} {'browse':>8}")
    for name, r in result["table"].items():
        ci = r.get("reference_minus_auc_ci95", [0.0, 0.0])
        print(f"{name:>14} {r['trees']:>5} {r['leaves']:>6} {r['test_auc']:.4f} "
              f"[{ci[0]:+.4f}, {ci[1]:+.4f}] {r['onnx_cpu_ms_200']:>8.4f} {r['browse_rise']:>8.5f}")
    selection = result["selection"]
    print(f"rule: {selection.get('chosen')}; bars: AUC {selection.get('auc_bar')}, "
          f"log loss {selection.get('log_loss_bar')}")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m training.model_cost [--data-dir DIR] [--json OUT]``."""
    from training.adapters import completejourney
    from training.first_model import _load
    from training.replay import replay

    parser = argparse.ArgumentParser(prog="python -m training.model_cost",
                                     description="Test AUC against ONNX scoring time (issue #5).")
    parser.add_argument("--data-dir", type=Path, default=completejourney.DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    offers, events = _load(args.data_dir, None)
    replayed = replay(events, offers, assume_consent=True)
    result = study(replayed.X, replayed.y, replayed.ts)
    _print(result)
    if args.json:
        option = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
        args.json.write_bytes(orjson.dumps(result, option=option))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
