"""``offerstream train``: from parsed arguments to the training pipeline, and its exit code.

The arguments are defined in :func:`offerstream.cli.build_parser`; this module reads the data
they name (:mod:`training.datasets`), runs :func:`training.pipeline.train` with
``offerstream train``'s settings, and reports (progress lines go to stderr).

Exit codes: 0 the model was trained, beats both baselines on test AUC and was exported (and
registered/promoted with ``--registry``); 1 it does not beat them (report and bundle are still
written, nothing is registered) unless ``--allow-worse``; 2 bad input or a failed export: one
line ``offerstream train: error: ...`` on stderr names the problem (never a traceback).

The data: ``--events`` files (or ``--archive``, or ``--dataset``) and the offers (``--offers``,
else the archive's catalogue snapshot, else what the events say), events before ``--until``.
The split, the model choice, the baselines, the report and the gate: :mod:`training.pipeline`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from models.errors import ModelError, OfferstreamError
from training.datasets import (
    TrainingData,
    TrainingInputError,
    from_archive,
    from_files,
    load_dataset,
    parse_until,
)
from training.pipeline import PipelineSettings, run_training, train

#: ``run_training`` is re-exported for callers of its former home (benchmarks/retrain.py).
__all__ = ["train_command", "run_training", "EXIT_OK", "EXIT_WORSE", "EXIT_INPUT"]

EXIT_OK, EXIT_WORSE, EXIT_INPUT = 0, 1, 2


class _Progress:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[train {time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def train_command(args: argparse.Namespace) -> int:
    """Run ``offerstream train`` from parsed arguments; return the exit code.

    Parameters
    ----------
    args : argparse.Namespace
        The ``train`` sub-command's arguments (see :func:`offerstream.cli.build_parser`).

    Returns
    -------
    int
        :data:`EXIT_OK`, :data:`EXIT_WORSE` or :data:`EXIT_INPUT` (see the module notes).
    """
    progress = _Progress()
    settings = PipelineSettings(allow_worse=bool(getattr(args, "allow_worse", False)),
                                ndcg_k=int(getattr(args, "ndcg_k", 3) or 3))
    try:
        data = _load(args, progress)
        run = train(data, Path(args.out), settings, registry=getattr(args, "registry", None),
                    progress=progress)
    except (TrainingInputError, ModelError, OfferstreamError) as exc:
        print(f"offerstream train: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except OSError as exc:  # e.g. --out not writable
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"offerstream train: error: {where}{exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    progress(f"wrote {Path(args.out) / 'report.md'} and metrics.json")
    if run.passed:
        return EXIT_OK
    assert run.gate is not None
    verdict = "kept anyway (--allow-worse)" if settings.allow_worse else "not registered"
    print(f"offerstream train: the model does not beat the baselines: {run.gate['reason']}; "
          f"{verdict}", file=sys.stderr, flush=True)
    return EXIT_OK if settings.allow_worse else EXIT_WORSE


def _load(args: argparse.Namespace, progress: _Progress) -> TrainingData:
    until = parse_until(str(args.until)) if getattr(args, "until", None) else None
    dataset = getattr(args, "dataset", None) or "events"
    events = getattr(args, "events", None)
    if getattr(args, "archive", None):
        data = from_archive(args.archive, getattr(args, "offers", None), until=until)
    elif dataset == "events":
        if not events:
            raise TrainingInputError("give --events PATH..., --archive DATA_DIR or --dataset NAME")
        data = from_files(events, getattr(args, "offers", None), until=until,
                          assume_consent=bool(getattr(args, "assume_consent", False)))
    else:
        if events:
            raise TrainingInputError("--events and --dataset exclude each other")
        data = load_dataset(dataset, getattr(args, "data_dir", None), until=until)
    origin = data.notes.get("offers")
    progress(f"read {len(data.events)} events, {len(data.offers)} offers from {data.name}"
             + (f" (offers: {origin})" if origin else ""))
    return data
