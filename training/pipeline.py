"""The training pipeline: replay, split, fit, evaluate, export, register and report.

:func:`train` runs it on loaded data (:class:`training.datasets.TrainingData`) with plain
arguments and returns a :class:`TrainingRun`; ``offerstream train`` (:mod:`training.cli`) and the
first model (:mod:`training.first_model`, a preset of :class:`PipelineSettings`) both call it.

Steps (one progress line each):

1. point-in-time replay (:func:`training.replay.replay`);
2. time split: the latest ``data.test_fraction`` of impression rows is the test part;
3. the GBM, with fixed settings or (the default) settings chosen on a validation split of the
   training part by :data:`training.fit.SELECTION_RULE`, the logistic baseline and the
   popularity baseline (:func:`training.fit.fit_popularity`), on one thread (OpenMP's default
   thread count makes small HistGradientBoosting fits ~15x slower here);
4. evaluation on the test part (:mod:`training.metrics`): with ``report`` every metric, paired
   bootstrap intervals, permutation importance and off-policy estimates (:mod:`training.ope`,
   OBD), and the gate (:func:`gate`); without it the brief metrics the first model records;
5. export of the GBM bundle (ONNX parity 1e-5) and registration with ``registry`` (gated);
6. with ``report``: ``metrics.json``, ``report.md`` and the plots (:mod:`training.report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.features import FEATURE_NAMES
from training import ope, report
from training.datasets import TrainingData, TrainingInputError, check_trainable, decision_groups
from training.fit import (
    POPULARITY_DEFINITION,
    choose_gbm_params,
    fit_gbm,
    fit_logistic,
    fit_popularity,
    popularity_scores,
    time_split,
)
from training.metrics import (
    bootstrap_auc,
    bootstrap_ndcg,
    evaluate,
    permutation_importance,
    score_metrics,
)
from training.rank import LAMBDAMART_PARAMS, LambdaMART, choose_objective
from training.replay import ReplayResult, replay
from training.segments import segment_results

__all__ = ["DECISIONS", "PipelineSettings", "TrainingRun", "train", "run_training", "gate"]

_CAMPAIGN = ("the campaigns one household received in the test part: which of its offers the "
             "scorer ranks first (the data never show a household two campaigns on one day)")
#: What one decision (an NDCG@k group) is, per data set.
DECISIONS = {
    "events": "the impressions sharing a decision_id (one page's offers)",
    "completejourney": _CAMPAIGN, "completejourney-sample": _CAMPAIGN,
    "completejourney-coupons": "one campaign one household received: which of the campaign's "
                               "coupons it redeems",
    "obd": "the impressions one OBD user segment saw in one UTC day (the sample logs one "
           "impression per decision_id, which would make NDCG trivially 1)",
}
_POPULARITY_FEATURE = FEATURE_NAMES.index("popularity_rate")

Progress = Callable[[str], Any]


@dataclass(frozen=True)
class PipelineSettings:
    """How a run fits, evaluates and publishes; the defaults are ``offerstream train``'s.

    Attributes
    ----------
    gbm_params : mapping, optional
        Fixed GBM settings; default ``None``: chosen by :func:`training.fit.choose_gbm_params`.
    report : bool
        Evaluate fully, gate the registration on the baselines, and write ``metrics.json``,
        ``report.md`` and the plots. Without it: the brief metrics of each scorer
        (:func:`training.metrics.evaluate`; the popularity baseline is then the replayed
        ``popularity_rate`` feature), recorded in the manifest only, and no gate.
    bundle_dir : str, optional
        The bundle's directory inside ``out``; ``None``: ``out`` itself.
    allow_worse : bool
        Register even if the gate fails.
    ndcg_k : int
        The k of NDCG@k per decision.
    objective : str, optional
        ``"gbm"``: the pointwise GBM only; default ``None``: the pointwise GBM or LambdaMART
        (:mod:`training.rank`), chosen on validation rows by :data:`training.rank.OBJECTIVE_RULE`.
    """

    gbm_params: Mapping[str, Any] | None = None
    report: bool = True
    bundle_dir: str | None = "bundle"
    allow_worse: bool = False
    ndcg_k: int = 3
    objective: str | None = None


@dataclass
class TrainingRun:
    """What one run produced.

    Attributes
    ----------
    metrics : dict
        The ``metrics.json`` content (``report``), else the brief metrics of the manifest.
    bundle : dict
        ``path, version, parity_max_abs_diff, latency, registered, promoted`` (and ``registry``).
    gate : dict or None
        ``passed, reason, allow_worse``; ``None`` when the settings have no gate.
    counts : dict
        The replay's counts.
    timings : dict
        Seconds per step: ``replay_s, fit_gbm_s, fit_logistic_s, export_s`` (and
        ``gbm_search_s`` when the GBM settings were chosen).
    """

    metrics: dict[str, Any]
    bundle: dict[str, Any]
    gate: dict[str, Any] | None
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """The model passed the gate (or there is none)."""
        return self.gate is None or bool(self.gate["passed"])


@dataclass
class _Fitted:
    gbm: Any  # the pointwise GBM
    logistic: Any
    popularity: Any
    params: dict[str, Any]
    selection: dict[str, Any]
    model: Any = None  # the chosen model: the GBM or the LambdaMART ranker
    kind: str = "gbm"
    objective: dict[str, Any] = field(default_factory=dict)


def train(data: TrainingData, out: str | Path, settings: PipelineSettings = PipelineSettings(), *,
          registry: str | Path | None = None, progress: Progress = print) -> TrainingRun:
    """Replay ``data``, fit, evaluate, export to ``out`` and register; see the module notes.

    Parameters
    ----------
    data : TrainingData
        Events, catalogue and replay choices (:mod:`training.datasets`).
    out : path
        Output directory (created): the bundle and, with ``settings.report``, the report.
    settings : PipelineSettings
        Default: ``offerstream train``'s.
    registry : path, optional
        Register and promote the bundle there (if the gate passes, or ``allow_worse``).
    progress : callable
        Receives one line of text per step.

    Returns
    -------
    TrainingRun

    Raises
    ------
    TrainingInputError
        If the data give nothing to learn from (no rows, one class, a single instant).
    """
    from threadpoolctl import threadpool_limits

    out, timings = Path(out), {}
    start = time.perf_counter()
    result = replay(data.events, data.offers, attribution_ms=data.attribution_ms,
                    processing_order=data.processing_order, assume_consent=data.assume_consent)
    timings["replay_s"] = time.perf_counter() - start
    progress(f"replay: {result.counts['events']} events -> {result.counts['rows']} rows, "
             f"{result.counts['positives']} positives ({timings['replay_s']:.1f} s)")
    train_rows, test = _split(result, data.test_fraction)
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1):
        fitted = _fit(result, train_rows, data, settings, progress, timings)
        evaluation = (_evaluate(result, data, fitted, test, settings.ndcg_k, progress)
                      if settings.report else _brief(result, fitted, train_rows, test))
    if not settings.report:  # the brief metrics go into the manifest; no gate
        bundle = _export(data, result, fitted, test, _bundle_dir(out, settings), evaluation,
                         registry, progress, timings)
        return TrainingRun(evaluation, bundle, None, dict(result.counts), timings)
    verdict = gate(evaluation, settings.allow_worse)
    summary = {fitted.kind: _short(evaluation["model"]),
               **{n: _short(b) for n, b in evaluation["baselines"].items()}}
    may_register = verdict["passed"] or verdict["allow_worse"]
    bundle = _export(data, result, fitted, test, _bundle_dir(out, settings), summary,
                     registry if may_register else None, progress, timings)
    metrics = _assemble(data, result, train_rows, test, fitted, evaluation, verdict, bundle,
                        settings.ndcg_k)
    _write_report(out, metrics, result.y[test].astype(float), evaluation.pop("_scores"), progress)
    return TrainingRun(metrics, bundle, verdict, dict(result.counts), timings)


def run_training(data: TrainingData, out: Path, *, registry: Path | None = None,
                 allow_worse: bool = False, k: int = 3, progress: Progress = print) -> dict[str, Any]:
    """:func:`train` with ``offerstream train``'s settings; returns the ``metrics.json`` content."""
    settings = PipelineSettings(allow_worse=allow_worse, ndcg_k=k)
    return train(data, out, settings, registry=registry, progress=progress).metrics


def _bundle_dir(out: Path, settings: PipelineSettings) -> Path:
    return out / settings.bundle_dir if settings.bundle_dir else out


def _split(result: ReplayResult, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    check_trainable(result.counts)
    try:
        train_rows, test = time_split(result.ts, 1 - test_fraction)
    except ValueError as exc:
        raise TrainingInputError(f"cannot split the data by time: {exc}") from None
    if np.unique(result.y[train_rows]).size < 2:
        raise TrainingInputError("the training part holds one class only (no responses, or "
                                 "only responses): nothing to learn")
    return train_rows, test


def _fit(result: ReplayResult, train_rows: np.ndarray, data: TrainingData,
         settings: PipelineSettings, progress: Progress, timings: dict[str, float]) -> _Fitted:
    X, y, ts = result.X[train_rows], result.y[train_rows], result.ts[train_rows]
    start = time.perf_counter()
    selection: dict[str, Any] = {}
    if settings.gbm_params is not None:
        params = dict(settings.gbm_params)
        progress(f"GBM parameters: fixed {params}")
    else:
        params, selection = choose_gbm_params(X, y, ts)
        timings["gbm_search_s"] = time.perf_counter() - start
        progress(_selection_line(params, selection))
    started = time.perf_counter()
    gbm = fit_gbm(X, y, params)
    timings["fit_gbm_s"] = time.perf_counter() - started
    started = time.perf_counter()
    logistic = fit_logistic(X, y)
    timings["fit_logistic_s"] = time.perf_counter() - started
    meta = [result.meta[i] for i in np.flatnonzero(train_rows)]
    popularity = fit_popularity(meta, y, data.offers)
    fitted = _Fitted(gbm, logistic, popularity, params, selection, model=gbm)
    if settings.objective is None:
        started = time.perf_counter()
        groups = decision_groups(meta, data.grouping)
        fitted.kind, fitted.objective = choose_objective(X, y, ts, groups, params, settings.ndcg_k)
        if fitted.kind == "lambdamart":
            fitted.model = LambdaMART(**{**LAMBDAMART_PARAMS, "k": settings.ndcg_k}).fit(X, y, groups)
        timings["objective_s"] = time.perf_counter() - started
        progress(_objective_line(fitted))
    progress(f"fit GBM + logistic + popularity on {int(train_rows.sum())} rows "
             f"({time.perf_counter() - start:.1f} s)")
    return fitted


def _objective_line(fitted: _Fitted) -> str:
    figures = fitted.objective.get("validation", {})
    shown = "; ".join(f"{name} AUC {f['auc']:.4f}, NDCG@k {f['ndcg_at_k']}" for name, f in figures.items())
    return f"objective: {fitted.kind} ({fitted.objective.get('reason')}; validation: {shown or 'n/a'})"


def _selection_line(params: dict[str, Any], selection: dict[str, Any]) -> str:
    if not selection:
        return f"GBM parameters: no validation split possible -> defaults {params}"
    chosen = selection["chosen"]
    val_scores = [round(entry["best_auc"], 4) for entry in selection["grid"]]
    return (f"GBM parameters: best validation AUC per grid entry {val_scores}; bars (1 SE): AUC "
            f"{selection['auc_bar']:.4f}, log loss {selection['log_loss_bar']:.4f}; chosen "
            f"entry {chosen['grid_entry']} cut at {chosen['trees']} trees, AUC "
            f"{chosen['auc']:.4f}, log loss {chosen['log_loss']:.4f} -> {params}")


def _brief(result: ReplayResult, fitted: _Fitted, train_rows: np.ndarray,
           test: np.ndarray) -> dict[str, Any]:
    """The brief metrics (without ``report``): :func:`training.metrics.evaluate` per scorer."""
    X, y = result.X[test], result.y[test]
    return {
        "gbm": evaluate(y, fitted.model.predict_proba(X)[:, 1]),
        "logistic": evaluate(y, fitted.logistic.predict_proba(X)[:, 1]),
        "popularity": evaluate(y, X[:, _POPULARITY_FEATURE]),
        "train_rows": int(train_rows.sum()), "test_rows": int(test.sum()),
        "split_at": int(result.ts[test].min()),
    }


#: The chosen model's name among the scorers of the evaluation (the bootstraps' reference).
MODEL = "model"


def _evaluate(result: ReplayResult, data: TrainingData, fitted: _Fitted, test: np.ndarray,
              k: int, progress: Progress) -> dict[str, Any]:
    X, y = result.X[test], result.y[test].astype(float)
    meta = [result.meta[i] for i in np.flatnonzero(test)]
    groups = decision_groups(meta, data.grouping)
    scores = {
        MODEL: fitted.model.predict_proba(X)[:, 1],
        "logistic": fitted.logistic.predict_proba(X)[:, 1],
        "popularity": popularity_scores(fitted.popularity, meta, data.offers),
    }
    candidates = {}
    if fitted.model is not fitted.gbm:  # the pointwise GBM lost on validation: its test figures too
        scores["pointwise GBM"] = fitted.gbm.predict_proba(X)[:, 1]
        candidates["pointwise GBM"] = _short(score_metrics(y, scores["pointwise GBM"], groups, k))
    model = score_metrics(y, scores[MODEL], groups, k)
    model.update(kind=fitted.kind,
                 params=fitted.params if fitted.kind == "gbm" else fitted.model.get_params(),
                 validation_auc=[entry["best_auc"] for entry in fitted.selection.get("grid", [])],
                 selection=fitted.selection, objective=fitted.objective, candidates=candidates)
    popularity = score_metrics(y, scores["popularity"], groups, k)
    popularity["definition"] = POPULARITY_DEFINITION
    two_classes = np.unique(y).size == 2
    uncertainty = bootstrap_auc(y, scores, MODEL) if two_classes else {}
    progress("per-decision NDCG bootstrap and segments")
    ndcg_uncertainty = bootstrap_ndcg(y, scores, groups, MODEL, k)
    segments = segment_results(X, y, scores, groups, MODEL, k)
    progress("permutation importance on the test split")
    model["permutation_importance"] = permutation_importance(fitted.model, X, result.y[test],
                                                             FEATURE_NAMES)
    return {"model": model, "_scores": scores, "uncertainty": uncertainty,
            "uncertainty_ndcg": ndcg_uncertainty, "segments": segments,
            "ope": ope.model_estimates(data, result, fitted.model, test, progress),
            "baselines": {"popularity": popularity,
                          "logistic": score_metrics(y, scores["logistic"], groups, k)}}


def gate(evaluation: Mapping[str, Any], allow_worse: bool) -> dict[str, Any]:
    """Pass only if the model's test AUC, and its NDCG@k per decision, are above every baseline's,
    clearly.

    Clearly: the paired-bootstrap 95 % interval of each difference lies above 0. A point
    estimate ahead by a hair is not "better" (on the Open Bandit sample the GBM led the logistic
    baseline by 0.0001 with an interval of about ±0.09). NDCG@k counts where it is defined: when
    the test part holds at least two decisions with both a positive and a negative
    (``uncertainty_ndcg`` not empty); data whose decisions show one offer each are judged on AUC.

    Parameters
    ----------
    evaluation : mapping
        ``model`` and ``baselines`` (each with ``auc``), ``uncertainty``
        (:func:`training.metrics.bootstrap_auc` with the model as the reference) and, optionally,
        ``uncertainty_ndcg`` (:func:`training.metrics.bootstrap_ndcg`, the same reference).
    allow_worse : bool
        Recorded in the verdict: register even if it fails.

    Returns
    -------
    dict
        ``passed``, ``reason`` (one line naming every comparison) and ``allow_worse``.
    """
    auc = evaluation["model"]["auc"]
    rivals = {name: b["auc"] for name, b in evaluation["baselines"].items() if b["auc"] is not None}
    versus = (evaluation.get("uncertainty") or {}).get("vs", {})
    if auc is None:
        return {"passed": False, "reason": "the test split holds one class only: AUC is undefined",
                "allow_worse": allow_worse}
    ahead: list[str] = []
    behind: list[str] = []
    for name, rival in rivals.items():
        interval = versus.get(name, {}).get("ci95")
        text = f"{name} {rival:.4f}"
        if interval is not None:
            text += f" (difference {auc - rival:+.4f}, 95 % interval [{interval[0]:+.4f}, {interval[1]:+.4f}])"
        (ahead if auc > rival and interval is not None and interval[0] > 0 else behind).append(text)
    if behind:
        reason = f"model test AUC {auc:.4f} is not clearly above " + "; ".join(behind)
    else:
        reason = f"model test AUC {auc:.4f} is clearly above " + "; ".join(ahead)
    ndcg_behind = _ndcg_verdict(evaluation)
    if ndcg_behind is not None:
        reason += "; " + ndcg_behind[0]
        behind += ndcg_behind[1]
    return {"passed": not behind, "reason": reason, "allow_worse": allow_worse}


def _ndcg_verdict(evaluation: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The NDCG@k half of :func:`gate`: its sentence and the baselines not clearly beaten."""
    ndcg = evaluation.get("uncertainty_ndcg") or {}
    if not ndcg.get("vs"):
        return None
    mine = evaluation["model"].get("ndcg_at_k")
    ahead: list[str] = []
    behind: list[str] = []
    for name, baseline in evaluation["baselines"].items():
        v = ndcg["vs"].get(name)
        if v is None:
            continue
        text = (f"{name} {_num(baseline.get('ndcg_at_k'))} (difference {v['diff']:+.4f}, 95 % "
                f"interval [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}])")
        (ahead if v["ci95"][0] > 0 else behind).append(text)
    verdict = "not clearly above " + "; ".join(behind) if behind else "clearly above " + "; ".join(ahead)
    return (f"NDCG@k per decision {_num(mine)} over {ndcg['decisions']} decisions is {verdict}",
            behind)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _export(data: TrainingData, result: ReplayResult, fitted: _Fitted, test: np.ndarray,
            bundle_dir: Path, metrics: Mapping[str, Any], registry: str | Path | None,
            progress: Progress, timings: dict[str, float]) -> dict[str, Any]:
    from training.export import export_bundle

    assert result.data_range is not None
    start = time.perf_counter()
    path = export_bundle(fitted.model, result.X[test], bundle_dir, kind=fitted.kind,
                         data_range=result.data_range, metrics=metrics,
                         offer_stats=result.offer_stats,
                         extra={"training": {"source": data.name, "params": fitted.model.get_params(),
                                             "replay": _public(result.settings),
                                             "counts": result.counts}})
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    timings["export_s"] = time.perf_counter() - start
    info = {"path": str(path), "version": manifest["model_version"],
            "parity_max_abs_diff": manifest["parity_max_abs_diff"], "latency": manifest["latency"],
            "registered": False, "promoted": False}
    if registry is not None:
        from models.registry import ModelRegistry

        info["version"] = ModelRegistry(registry).register(path, promote=True)
        info.update(registered=True, promoted=True, registry=str(registry))
    progress(f"export: {info['version']} (parity {info['parity_max_abs_diff']:.2g}, ONNX "
             f"{info['latency']['onnx_cpu_ms']:.3f} ms CPU per {info['latency']['rows']} rows), "
             f"registered={info['registered']}")
    return info


def _short(m: Mapping[str, Any]) -> dict[str, Any]:
    return {key: m.get(key) for key in ("auc", "log_loss", "ndcg_at_k", "n")}


def _public(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if not k.startswith("_")}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _assemble(data: TrainingData, result: ReplayResult, train_rows: np.ndarray, test: np.ndarray,
              fitted: _Fitted, evaluation: dict[str, Any], verdict: dict[str, Any],
              bundle: dict[str, Any], k: int) -> dict[str, Any]:
    assert result.data_range is not None
    return {
        "dataset": data.name, "sources": data.sources,
        "rows": result.counts["rows"], "positives": result.counts["positives"],
        "data_range": [_iso(result.data_range[0]), _iso(result.data_range[1])],
        "data_range_ms": list(result.data_range),
        "split": {"train_rows": int(train_rows.sum()), "test_rows": int(test.sum()),
                  "split_at": _iso(int(result.ts[test].min())),
                  "test_fraction": data.test_fraction},
        "decision": DECISIONS.get(data.name, data.grouping), "ndcg_k": k,
        "model": evaluation["model"], "baselines": evaluation["baselines"],
        "uncertainty": evaluation["uncertainty"],
        "uncertainty_ndcg": evaluation["uncertainty_ndcg"], "segments": evaluation["segments"],
        "ope": evaluation["ope"], "gate": verdict, "bundle": bundle,
        "replay": {"counts": result.counts, "settings": _public(result.settings),
                   "invalid": result.invalid, "notes": data.notes},
    }


def _write_report(out: Path, metrics: dict[str, Any], y: np.ndarray,
                  scores: Mapping[str, np.ndarray], progress: Progress) -> None:
    no_plots = None
    try:
        intervals = {"AUC": metrics.get("uncertainty", {}).get("vs", {}),
                     f"NDCG@{metrics['ndcg_k']}": metrics.get("uncertainty_ndcg", {}).get("vs", {})}
        plots = report.write_plots(out, y, scores, metrics["model"]["permutation_importance"], intervals)
    except report.PlotsUnavailable as exc:
        plots, no_plots = {}, str(exc)
        progress(f"report without plots: {no_plots}")
    metrics["plots"] = {"files": sorted(plots.values()), "missing": no_plots}
    report.write_metrics_json(out, metrics)
    report.write_report_md(out, metrics, plots, no_plots)
