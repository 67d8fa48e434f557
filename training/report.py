"""Evaluation metrics, plots and the training report (``metrics.json`` + ``report.md`` + PNGs).

Metrics of one scorer on the test split:

* ``auc`` and ``log_loss`` (:func:`training.fit.evaluate`; ``auc`` is ``None`` with one class);
* ``ndcg_at_k``: mean over *decisions* (row groups, see :mod:`training.datasets`) that hold at
  least two rows and one positive of ``DCG@k / IDCG@k`` with relevance = label. Tied scores are
  scored as the expectation over random tie order, so a constant scorer gets the chance value,
  not a lucky one. ``ndcg_decisions`` says how many decisions counted;
* ``calibration``: 10 equal-count bins of the predicted probability: mean prediction, observed
  rate and size of each (equal-count, since rare positives put every prediction in one
  equal-width bin), and ``ece``: the size-weighted mean ``|mean_p - rate|``.

Examples
--------
>>> import numpy as np
>>> round(ndcg_at_k(np.array([1, 0, 0]), np.array([0.9, 0.5, 0.1]), np.array([0, 0, 0]), k=3)[0], 6)
1.0
>>> round(ndcg_at_k(np.array([0, 1]), np.array([0.5, 0.5]), np.array([0, 0]), k=1)[0], 6)
0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from training.fit import evaluate

__all__ = [
    "ndcg_at_k",
    "calibration_table",
    "score_metrics",
    "auc_standard_error",
    "bootstrap_auc",
    "lift_table",
    "PLOTS_HINT",
    "PlotsUnavailable",
    "write_plots",
    "write_metrics_json",
    "write_report_md",
]

PLOTS = {"roc": "roc.png", "calibration": "calibration.png", "lift": "lift.png",
         "importance": "feature_importance.png"}


def _discounts(k: int, size: int) -> np.ndarray:
    positions = np.arange(size)
    return np.where(positions < k, 1.0 / np.log2(positions + 2.0), 0.0)


def _expected_dcg(rel: np.ndarray, score: np.ndarray, k: int) -> float:
    order = np.argsort(-score, kind="stable")
    rel, score = rel[order], score[order]
    disc = _discounts(k, rel.size)
    dcg, start = 0.0, 0
    while start < rel.size:  # each run of tied scores shares the mean discount of its slots
        end = start + 1
        while end < rel.size and score[end] == score[start]:
            end += 1
        dcg += rel[start:end].sum() * disc[start:end].mean()
        start = end
    return dcg


def ndcg_at_k(y: np.ndarray, score: np.ndarray, groups: np.ndarray, k: int = 3) -> tuple[float | None, int]:
    """Mean NDCG@k over groups with >= 2 rows and >= 1 positive; returns (mean, n_groups)."""
    y, score, groups = np.asarray(y, float), np.asarray(score, float), np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    values = []
    for idx in np.split(order, bounds):
        rel = y[idx]
        if idx.size < 2 or rel.sum() <= 0:
            continue
        ideal = (np.sort(rel)[::-1] * _discounts(k, rel.size)).sum()
        values.append(_expected_dcg(rel, score[idx], k) / ideal)
    return (float(np.mean(values)) if values else None), len(values)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Equal-count bins of ``p``: ``[{p_lo, p_hi, mean_p, rate, n}]`` and the ECE."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if y.size == 0:
        return {"bins": [], "ece": None}
    order = np.argsort(p, kind="stable")
    table = []
    for idx in np.array_split(order, min(bins, y.size)):
        if idx.size:
            table.append({"p_lo": float(p[idx].min()), "p_hi": float(p[idx].max()),
                          "mean_p": float(p[idx].mean()), "rate": float(y[idx].mean()),
                          "n": int(idx.size)})
    ece = sum(b["n"] * abs(b["mean_p"] - b["rate"]) for b in table) / y.size
    return {"bins": table, "ece": float(ece)}


def lift_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Cumulative response rate of the top 10 %, 20 %, ... by score, over the base rate."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    order = np.argsort(-p, kind="stable")
    base = y.mean() if y.size else 0.0
    out = []
    for i in range(1, bins + 1):
        top = order[: max(1, round(i * y.size / bins))]
        out.append({"share": i / bins, "rate": float(y[top].mean()),
                    "lift": float(y[top].mean() / base) if base > 0 else float("nan")})
    return out


def auc_standard_error(auc: float | None, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil (1982) standard error of an AUC.

    >>> round(auc_standard_error(0.8, 50, 500), 4)
    0.0384
    """
    if auc is None or n_pos == 0 or n_neg == 0:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc))
    return float(np.sqrt(max(var, 0.0) / (n_pos * n_neg)))


def _auc_plan(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Negatives in score order, and per positive how many negatives score below / not above it."""
    neg = np.flatnonzero(y == 0)
    neg = neg[np.argsort(score[neg], kind="stable")]
    pos = np.flatnonzero(y == 1)
    sorted_neg = score[neg]
    below = np.searchsorted(sorted_neg, score[pos], side="left")
    upto = np.searchsorted(sorted_neg, score[pos], side="right")
    return neg, pos, below, upto


def bootstrap_auc(y: np.ndarray, scores: Mapping[str, np.ndarray], reference: str,
                  n_boot: int = 1000, seed: int = 0, chunk: int = 100) -> dict[str, Any]:
    """Paired bootstrap of every scorer's AUC and of ``reference``'s AUC minus each other's.

    Each resample draws the test rows with replacement, the same draw for every scorer (so the
    differences are paired); AUC is computed from the rows' draw counts as weights, with ties
    counted as one half, like ``roc_auc_score``. Rows are resampled independently, which is a
    little optimistic when rows share a customer.

    Returns
    -------
    dict
        ``n_boot``, ``auc_ci95`` per scorer, and under ``vs`` per other scorer ``diff`` (the point
        difference), ``ci95`` and ``p_reference_better`` (share of resamples where the reference
        has the higher AUC).

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1] * 50)
    >>> out = bootstrap_auc(y, {"a": y + 0.0, "b": np.zeros(200)}, "a", n_boot=200)
    >>> out["vs"]["b"]["diff"], out["vs"]["b"]["p_reference_better"]
    (0.5, 1.0)
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    plans = {name: _auc_plan(y, np.asarray(s, dtype=np.float64)) for name, s in scores.items()}
    rng = np.random.default_rng(seed)
    aucs: dict[str, list[np.ndarray]] = {name: [] for name in scores}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)  # b resamples of n rows with replacement, as row counts
        drawn = rng.integers(0, y.size, size=(b, y.size)) + (np.arange(b) * y.size)[:, None]
        w = np.bincount(drawn.ravel(), minlength=b * y.size).reshape(b, y.size).astype(np.float64)
        for name, (neg, pos, below, upto) in plans.items():
            cum = np.zeros((b, neg.size + 1))
            np.cumsum(w[:, neg], axis=1, out=cum[:, 1:])  # negatives' weight up to each rank
            w_pos = w[:, pos]
            wins = (w_pos * (cum[:, below] + 0.5 * (cum[:, upto] - cum[:, below]))).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                aucs[name].append(wins / (w_pos.sum(axis=1) * cum[:, -1]))
    boot = {name: np.concatenate(parts) for name, parts in aucs.items()}
    ok = np.all([np.isfinite(v) for v in boot.values()], axis=0)
    two_classes = np.unique(y).size == 2
    point = {name: float(roc_auc_score(y, s)) if two_classes else None
             for name, s in scores.items()}
    out: dict[str, Any] = {"n_boot": int(ok.sum()), "auc_ci95": {}, "vs": {}}
    for name, values in boot.items():
        out["auc_ci95"][name] = [float(q) for q in np.percentile(values[ok], [2.5, 97.5])]
        if name == reference:
            continue
        diff = boot[reference][ok] - values[ok]
        ref_auc, auc = point[reference], point[name]
        out["vs"][name] = {
            "diff": None if ref_auc is None or auc is None else float(ref_auc - auc),
            "ci95": [float(q) for q in np.percentile(diff, [2.5, 97.5])],
            "p_reference_better": float(np.mean(diff > 0)),
        }
    return out


def score_metrics(y: np.ndarray, p: np.ndarray, groups: np.ndarray, k: int = 3) -> dict[str, Any]:
    """Every metric of one scorer on one evaluation set."""
    metrics: dict[str, Any] = dict(evaluate(y, p))
    metrics["auc_se"] = auc_standard_error(metrics["auc"], int(np.sum(y)), int(np.size(y) - np.sum(y)))
    metrics["ndcg_at_k"], metrics["ndcg_decisions"] = ndcg_at_k(y, p, groups, k)
    metrics["k"] = k
    metrics["calibration"] = calibration_table(y, np.clip(p, 0.0, 1.0))
    metrics["lift"] = lift_table(y, p)
    return metrics


# ---- plots --------------------------------------------------------------------------------

#: What to install for the plots (matplotlib is not a dependency of a plain install).
PLOTS_HINT = "pip install 'offerstream[train]'"


class PlotsUnavailable(RuntimeError):
    """matplotlib cannot be imported: the report is written without plots."""


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(f"matplotlib is not installed ({PLOTS_HINT} adds the plots)") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(out_dir: Path, y: np.ndarray, scores: Mapping[str, np.ndarray],
                importance: Sequence[tuple[str, float, float]]) -> dict[str, str]:
    """ROC, calibration, lift and feature-importance PNGs; returns ``{plot: file name}``.

    Raises
    ------
    PlotsUnavailable
        If matplotlib is not installed (nothing is written then).
    """
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    two_classes = np.unique(y).size == 2
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        if two_classes:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    ax.legend(loc="lower right")
    _save(fig, out_dir / PLOTS["roc"], plt)

    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, s in scores.items():
        bins = calibration_table(y, np.clip(s, 0, 1))["bins"]
        xs, ys = [b["mean_p"] for b in bins], [b["rate"] for b in bins]
        top = max([top, *xs, *ys])
        ax.plot(xs, ys, "o-", label=name)
    ax.plot([0, top or 1], [0, top or 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability (decile bin)", ylabel="observed rate",
           title="Calibration (test split)")
    ax.legend(loc="upper left")
    _save(fig, out_dir / PLOTS["calibration"], plt)

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, s in scores.items():
        lift = lift_table(y, s)
        ax.plot([row["share"] * 100 for row in lift], [row["lift"] for row in lift], "o-", label=name)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="top % of impressions by score", ylabel="cumulative lift", title="Lift (test split)")
    ax.legend()
    _save(fig, out_dir / PLOTS["lift"], plt)

    fig, ax = plt.subplots(figsize=(6, 6))
    shown = list(importance)[:20][::-1]
    ax.barh([n for n, _m, _s in shown], [m for _n, m, _s in shown],
            xerr=[s for _n, _m, s in shown], color="tab:blue")
    ax.set(xlabel="AUC drop when the feature is permuted", title="Permutation importance (GBM)")
    _save(fig, out_dir / PLOTS["importance"], plt)
    return dict(PLOTS)


def _save(fig: Any, path: Path, plt: Any) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- writers ------------------------------------------------------------------------------

def write_metrics_json(out_dir: Path, metrics: Mapping[str, Any]) -> Path:
    """``metrics.json`` (indented; numpy values converted)."""
    path = out_dir / "metrics.json"
    path.write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                                  | orjson.OPT_NON_STR_KEYS))
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def _est(e: Mapping[str, Any] | None) -> str:
    if not e:
        return "n/a"
    return f"{_fmt(e.get('value'), 5)} ± {_fmt(e.get('se'), 5)}"


def _scorer_rows(m: Mapping[str, Any]) -> list[str]:
    k = m["model"].get("k", 3)
    lines = [f"| scorer | AUC (± s.e.) | log loss | NDCG@{k} | ECE | mean p | positives / n |",
             "|---|---|---|---|---|---|---|"]
    named = [("GBM (model)", m["model"]), ("logistic", m["baselines"]["logistic"]),
             ("popularity", m["baselines"]["popularity"])]
    for name, s in named:
        positives = round((s.get("base_rate") or 0.0) * (s.get("n") or 0))
        lines.append(f"| {name} | {_fmt(s.get('auc'))} ± {_fmt(s.get('auc_se'), 3)} | "
                     f"{_fmt(s.get('log_loss'))} | {_fmt(s.get('ndcg_at_k'))} "
                     f"({s.get('ndcg_decisions')} decisions) | "
                     f"{_fmt(s.get('calibration', {}).get('ece'))} | {_fmt(s.get('mean_p'))} | "
                     f"{positives} / {s.get('n')} |")
    return lines


def _ope_lines(ope: Mapping[str, Any]) -> list[str]:
    if not ope.get("available"):
        return [f"Not available: {ope.get('reason', 'no logged propensities')}."]
    lines: list[str] = []
    bts = ope.get("bts_from_random_log")
    if bts:
        pub = bts["published"]
        lines += [
            "**Bernoulli TS policy, estimated from the uniform-random log** "
            f"({bts['method']}).", "",
            "| estimator | ours (± s.e.) | obp quickstart (published) |", "|---|---|---|",
            f"| IPS | {_est(bts['ips'])} | {pub['ipw']} |",
            f"| SNIPS | {_est(bts['snips'])} | |",
            f"| DM | {_est(bts['dm'])} | {pub['dm']} |",
            f"| DR | {_est(bts['dr'])} | {pub['dr']} |",
            f"| observed in BTS log | {_est(bts['observed_bts'])} | {pub['observed_bts']} |",
            f"| observed in random log | {_est(bts['observed_random'])} | |", "",
        ]
    model = ope.get("model_policy")
    if model:
        lines += [f"**Trained model as a policy** on the random log's test part "
                  f"({model['rows']} rounds; {model['method']}).", "",
                  "| policy | IPS | SNIPS | DM | DR |", "|---|---|---|---|---|"]
        for name in ("greedy", "softmax"):
            e = model[name]
            lines.append(f"| {name} | {_est(e['ips'])} | {_est(e['snips'])} | {_est(e['dm'])} | "
                         f"{_est(e['dr'])} |")
        lines.append(f"| logging (random), observed | {_est(model['observed_random'])} | | | |")
    return lines


def _uncertainty_lines(u: Mapping[str, Any] | None) -> list[str]:
    if not u or not u.get("n_boot"):
        return []
    ci = u["auc_ci95"]
    lines = [f"Uncertainty ({u['n_boot']} paired bootstrap resamples of the test rows): "
             "95 % intervals of each AUC and of the GBM's AUC minus each baseline's.", "",
             "| comparison | AUC difference | 95 % interval | resamples where GBM is ahead |",
             "|---|---|---|---|"]
    for name, v in u["vs"].items():
        lines.append(f"| GBM - {name} | {_fmt(v['diff'])} | [{_fmt(v['ci95'][0])}, "
                     f"{_fmt(v['ci95'][1])}] | {v['p_reference_better']:.1%} |")
    lines += ["", "AUC 95 % intervals: " + ", ".join(
        f"{name} [{_fmt(a)}, {_fmt(b)}]" for name, (a, b) in ci.items()), ""]
    return lines


def _cost_lines(m: Mapping[str, Any]) -> list[str]:
    lines = []
    rule = (m["model"].get("selection") or {}).get("rule")
    if rule:
        lines.append(f"- selection rule: {rule}")
    latency = m["bundle"].get("latency")
    if latency:
        lines.append(f"- scoring cost: ONNX {latency['onnx_cpu_ms']} ms CPU per "
                     f"{latency['rows']} rows ({latency['nodes']} tree nodes)")
    return lines


def write_report_md(out_dir: Path, m: Mapping[str, Any], plots: Mapping[str, str],
                    no_plots: str | None = None) -> Path:
    """The readable report; links every plot in ``plots``, or says ``no_plots`` (why there are none)."""
    gate = m["gate"]
    lines = [
        f"# offerstream training report: {m['dataset']}", "",
        f"- data: {m['data_range'][0]} .. {m['data_range'][1]}; {m['rows']} impression rows, "
        f"{m['positives']} positives; train {m['split']['train_rows']} / test "
        f"{m['split']['test_rows']} rows, split by time at {m['split']['split_at']}",
        f"- decision (NDCG group): {m['decision']}",
        f"- model: {m['bundle'].get('version', 'not exported')}; registered: "
        f"{m['bundle'].get('registered', False)}, promoted: {m['bundle'].get('promoted', False)}",
        f"- GBM parameters (chosen on a validation split of the training part): "
        f"`{m['model'].get('params')}`",
        *_cost_lines(m),
        f"- **gate**: {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}", "",
        "## Test metrics", "", *_scorer_rows(m), "",
        *_uncertainty_lines(m.get("uncertainty")),
        "Popularity baseline: " + m["baselines"]["popularity"].get("definition", ""), "",
        "## Off-policy estimates", "", *_ope_lines(m["ope"]), "",
        "## Plots", "",
    ]
    if no_plots:
        lines += [f"No plots: {no_plots}.", ""]
    for title, key in (("ROC", "roc"), ("Calibration", "calibration"), ("Lift", "lift"),
                       ("Feature importance", "importance")):
        if key in plots:
            lines += [f"### {title}", "", f"![{title}]({plots[key]})", ""]
    importance = m["model"].get("permutation_importance", [])[:10]
    if importance:
        lines += ["Top features (AUC drop on the test split):", "",
                  *[f"- `{n}`: {mean:.4f} ± {sd:.4f}" for n, mean, sd in importance], ""]
    lines += ["## Replay", "", f"`{orjson.dumps(m['replay']['counts']).decode()}`", "",
              f"Settings: `{orjson.dumps(m['replay']['settings']).decode()}`", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
