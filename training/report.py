"""The training report: ``metrics.json``, ``report.md`` and the plots (PNGs).

The metrics themselves are computed in :mod:`training.metrics`; this module only draws and
writes them. Without matplotlib (not a dependency of a plain install) :func:`write_plots` raises
:class:`PlotsUnavailable` and the report is written without plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from training.metrics import calibration_table, lift_table

__all__ = [
    "PLOTS",
    "PLOTS_HINT",
    "PlotsUnavailable",
    "write_plots",
    "write_metrics_json",
    "write_report_md",
]

PLOTS = {"roc": "roc.png", "calibration": "calibration.png", "lift": "lift.png",
         "importance": "feature_importance.png", "gate": "gate.png"}


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
                importance: Sequence[tuple[str, float, float]],
                intervals: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """ROC, calibration, lift and feature-importance PNGs, and with ``intervals`` (``{metric:
    {other scorer: {"diff", "ci95"}}}``, the paired bootstraps) the gate's picture: the model
    minus each other scorer, with its 95 % interval; returns ``{plot: file name}``.

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
    ax.set(xlabel="AUC drop when the feature is permuted", title="Permutation importance (model)")
    _save(fig, out_dir / PLOTS["importance"], plt)
    written = dict(PLOTS)
    if not intervals or not any(intervals.values()):
        del written["gate"]
        return written
    _gate_plot(out_dir / PLOTS["gate"], intervals, plt)
    return written


def _gate_plot(path: Path, intervals: Mapping[str, Mapping[str, Any]], plt: Any) -> None:
    """One panel per metric: the model minus each other scorer, 95 % interval as error bars."""
    shown = {metric: vs for metric, vs in intervals.items() if vs}
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), squeeze=False)
    for ax, (metric, vs) in zip(axes[0], shown.items(), strict=True):
        names = list(vs)
        diffs = [vs[n]["diff"] for n in names]
        lows = [vs[n]["diff"] - vs[n]["ci95"][0] for n in names]
        highs = [vs[n]["ci95"][1] - vs[n]["diff"] for n in names]
        colors = ["tab:green" if vs[n]["ci95"][0] > 0 else "tab:red" for n in names]
        ax.barh(names, diffs, xerr=[lows, highs], color=colors, capsize=4)
        ax.axvline(0.0, color="k", lw=1)
        ax.set(xlabel=f"model - scorer, {metric} (95 % interval)", title=f"{metric}: is the model better?")
    _save(fig, path, plt)


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
    named = [(f"model ({m['model'].get('kind', 'gbm')})", m["model"]),
             *((f"{name} (not chosen)", c) for name, c in (m["model"].get("candidates") or {}).items()),
             ("logistic", m["baselines"]["logistic"]), ("popularity", m["baselines"]["popularity"])]
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
             "95 % intervals of each AUC and of the model's AUC minus each other scorer's.", "",
             "| comparison | AUC difference | 95 % interval | resamples where the model is ahead |",
             "|---|---|---|---|"]
    for name, v in u["vs"].items():
        lines.append(f"| model - {name} | {_fmt(v['diff'])} | [{_fmt(v['ci95'][0])}, "
                     f"{_fmt(v['ci95'][1])}] | {v['p_reference_better']:.1%} |")
    lines += ["", "AUC 95 % intervals: " + ", ".join(
        f"{name} [{_fmt(a)}, {_fmt(b)}]" for name, (a, b) in ci.items()), ""]
    return lines


def _ndcg_lines(u: Mapping[str, Any] | None, k: int) -> list[str]:
    if not u:
        return []
    lines = [f"NDCG@{k} per decision ({u['n_boot']} paired bootstrap resamples of the "
             f"{u['decisions']} test decisions with a positive and a negative):", "",
             f"| comparison | NDCG@{k} difference | 95 % interval | resamples where the model is ahead |",
             "|---|---|---|---|"]
    for name, v in u["vs"].items():
        lines.append(f"| model - {name} | {_fmt(v['diff'])} | [{_fmt(v['ci95'][0])}, "
                     f"{_fmt(v['ci95'][1])}] | {v['p_reference_better']:.1%} |")
    return [*lines, ""]


def _segment_lines(segments: Mapping[str, Any] | None, k: int) -> list[str]:
    if not segments:
        return []
    lines = ["## Segments (from each row's features at decision time)", "",
             f"| segment | rows (positives) | scorer | AUC | model - scorer, AUC 95 % | NDCG@{k} "
             f"| model - scorer, NDCG 95 % |", "|---|---|---|---|---|---|---|"]
    for name, seg in segments.items():
        if not seg["rows"]:
            lines.append(f"| {name} ({seg['definition']}) | 0 | | | | | |")
            continue
        for scorer, auc in seg["auc"].items():
            a = (seg.get("auc_vs") or {}).get(scorer)
            n = (seg.get("ndcg_vs") or {}).get(scorer)
            lines.append(
                f"| {name} | {seg['rows']} ({seg['positives']}) | {scorer} | {_fmt(auc)} | "
                f"{_interval(a)} | {_fmt(seg['ndcg_at_k'][scorer])} | {_interval(n)} |")
    return [*lines, ""]


def _interval(v: Mapping[str, Any] | None) -> str:
    if not v:
        return ""
    return f"{_fmt(v['diff'])} [{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}]"


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
        f"- model: {m['model'].get('kind', 'gbm')}, chosen on a validation split of the training "
        f"part ({(m['model'].get('objective') or {}).get('reason', 'fixed')}); parameters "
        f"`{m['model'].get('params')}`",
        *_cost_lines(m),
        f"- **gate**: {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}", "",
        "## Test metrics", "", *_scorer_rows(m), "",
        *_uncertainty_lines(m.get("uncertainty")),
        *_ndcg_lines(m.get("uncertainty_ndcg"), m["model"].get("k", 3)),
        *_segment_lines(m.get("segments"), m["model"].get("k", 3)),
        "Popularity baseline: " + m["baselines"]["popularity"].get("definition", ""), "",
        "## Off-policy estimates", "", *_ope_lines(m["ope"]), "",
        "## Plots", "",
    ]
    if no_plots:
        lines += [f"No plots: {no_plots}.", ""]
    for title, key in (("The gate: differences and their intervals", "gate"), ("ROC", "roc"),
                       ("Calibration", "calibration"), ("Lift", "lift"),
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
