"""Experiments on a worker: the configuration from the ``experiments`` topic, and live results.

The ``experiments`` topic (key = experiment id, value = the validated experiment's JSON) is carried
to every worker exactly as the ``offers`` topic is (:class:`stream.catalogue.TopicMirror`): every
worker holds every experiment. ``PUT /v1/experiments/{id}`` writes to it.

Results (:class:`LiveResults`): every worker reads the whole ``decisions`` topic and the whole
``events`` topic with its own plain consumers (outside the consumer group), from the start, and
feeds :class:`models.experiment_results.Tally`. So any worker answers
``GET /v1/experiments/{id}/results`` from the same records with the same code as an offline recount,
and the answers of two workers agree once both have read to the same offsets; no worker asks
another. The price is that each worker reads every decision and event again; it is paid only while
an experiment exists (the readers start with the first one), and the tally keeps one small entry
per experiment decision and per outcome event (see README, "Experiments"). After a restart the
tally is rebuilt from the topics (``decisions`` kept 30 days, ``events`` 7 days).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from models.arm_policy import ArmInputs, arm_inputs
from models.catalog import Offer
from models.consent import ConsentState, restrict
from models.decision import CandidateCache, ScoreRequest, decide
from models.errors import InvalidEvent, ModelError, ValidationError
from models.events import parse_payload
from models.experiment_results import Tally, results
from models.experiments import NOT_ELIGIBLE, Experiment, assign, check_overlap, find_experiment, parse_experiment
from models.exploration import Exploration
from models.profile import Profile
from models.registry import ModelRegistry
from models.scorer import Scorer, load_bundle
from stream.catalogue import TopicMirror, write_snapshot
from stream.topics import DECISIONS_TOPIC, EVENTS_TOPIC, EXPERIMENTS_TOPIC

__all__ = ["Experiments", "ExperimentBook", "ModelVersions", "LiveResults", "decide_with_experiments"]

log = logging.getLogger("offerstream.experiments")
#: ``/metrics`` shows results counted at most this long before.
METRICS_EVERY_S = 10.0


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


class ExperimentBook:
    """Every experiment, kept current from the ``experiments`` topic; ``any`` says if one exists.

    The topic's order decides overlaps: a record that overlaps an experiment applied before it is
    refused on apply (the same on every worker: one partition, one order) and its reason kept in
    :attr:`refused`; the writer then restores the key's previous value (``PUT`` answers 400).
    """

    def __init__(self, bootstrap: str, snapshot: Path | None = None) -> None:
        self.snapshot = snapshot  # the embedded default refills its broker from it after a restart
        self.experiments: dict[str, Experiment] = {}
        self.raw: dict[str, bytes] = {}
        self.refused: dict[str, str] = {}
        self.invalid = 0
        self.any = asyncio.Event()
        self.mirror = TopicMirror(bootstrap, EXPERIMENTS_TOPIC, self.apply, on_batch=self._save)

    @property
    def ready(self) -> asyncio.Event:
        """Set once every experiment that existed at start has been read."""
        return self.mirror.ready

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the ``experiments`` topic (an empty value removes the experiment)."""
        if key is None:
            self.invalid += 1
            return
        experiment_id = key.decode("utf-8", "replace")
        self.refused.pop(experiment_id, None)
        if not value:
            self.experiments.pop(experiment_id, None)
            self.raw.pop(experiment_id, None)
            return
        try:  # the writer checked model versions against its registry
            experiment = parse_experiment(orjson.loads(value), experiment_id)
            check_overlap(experiment, self.experiments, now_ms())
        except (ValidationError, orjson.JSONDecodeError) as exc:
            self.invalid += 1
            self.refused[experiment_id] = str(exc)
            log.warning("experiment %r on topic %s refused: %s", experiment_id, EXPERIMENTS_TOPIC, exc)
            return
        self.experiments[experiment_id], self.raw[experiment_id] = experiment, value
        self.any.set()

    def find(self, placement: str | None, now_ms: int) -> Experiment | None:
        """The running experiment covering ``placement``, if any."""
        if not self.experiments:  # the usual case: nothing to look at
            return None
        return find_experiment(self.experiments, placement, now_ms)

    def _save(self) -> None:
        if self.snapshot is not None:
            write_snapshot(self.snapshot, self.raw)

    async def placement_of(self, request: Any) -> str | None:
        """A score call's ``context.placement``; read only while an experiment names a placement.

        The body is read again from aiohttp's buffer and decoded a second time, a cost paid only
        then (the score request's own parsing does not keep unknown context fields).
        """
        if not any(e.placement is not None for e in self.experiments.values()):
            return None
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        context = body.get("context") if isinstance(body, dict) else None
        placement = context.get("placement") if isinstance(context, dict) else None
        return placement if isinstance(placement, str) else None

    async def wait_applied(self, partition: int, offset: int, timeout: float = 10.0) -> None:
        """Wait until the record at ``(partition, offset)`` has been applied here."""
        await self.mirror.wait_applied(partition, offset, timeout)

    async def run(self) -> None:
        """Consume the ``experiments`` topic for ever (a worker task)."""
        await self.mirror.run()


class ModelVersions:
    """Registry versions an arm names, loaded once each (``None``: it does not load here)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._loaded: dict[str, Scorer | None] = {}

    def get(self, version: str) -> Scorer | None:
        """The scorer of ``version``; ``None`` (logged once) if it is not registered or corrupt."""
        if version not in self._loaded:
            try:
                self._loaded[version] = load_bundle(self.registry.versions_dir / version)
            except (ModelError, OSError) as exc:
                log.error("model version %s of an experiment arm does not load: %s", version, exc)
                self._loaded[version] = None
        return self._loaded[version]


class LiveResults:
    """The tally of every worker, read from ``decisions`` and ``events`` (module docstring)."""

    def __init__(self, bootstrap: str, book: ExperimentBook) -> None:
        self.book = book
        self.tally = Tally()
        self.skipped = 0
        self.decisions = TopicMirror(bootstrap, DECISIONS_TOPIC, self.apply_decision)
        self.events = TopicMirror(bootstrap, EVENTS_TOPIC, self.apply_event)

    def apply_decision(self, key: bytes | None, value: bytes | None) -> None:
        """One audit record of the ``decisions`` topic."""
        try:
            record = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self.skipped += 1
            return
        if isinstance(record, dict):
            self.tally.add_decision(record)

    def apply_event(self, key: bytes | None, value: bytes | None) -> None:
        """One message of the ``events`` topic (one event or an envelope)."""
        if not value or b"decision_id" not in value:  # no outcome in it: not worth decoding
            return
        try:
            items = parse_payload(value)
        except InvalidEvent:
            return
        for item in items:
            if not isinstance(item, InvalidEvent):
                self.tally.add_event(item.event_id, item.type, item.ts, item.data)

    async def answer(self, experiment: Experiment, erased: dict[str, int],
                     until_ms: int | None = None) -> dict[str, Any]:
        """The results of ``experiment`` as read so far, the erased customers left out.

        Counting is O(decisions) (about 1 s per 100,000 on this machine), so it runs in a thread
        on a copy of the tally taken here, between two records, and the event loop keeps serving.
        """
        copy = Tally(dict(self.tally.decisions), {k: list(v) for k, v in self.tally.outcomes.items()})
        return await asyncio.get_running_loop().run_in_executor(None, results, copy, experiment, erased, until_ms)

    async def run(self) -> None:
        """Wait for the first experiment, then read both topics for ever (a worker task)."""
        await self.book.any.wait()
        log.warning("an experiment exists: reading decisions and events for its results")
        await asyncio.gather(self.decisions.run(), self.events.run())


def decide_with_experiments(book: ExperimentBook, versions: ModelVersions, placement: str | None,
                            request: ScoreRequest,
                            consent: ConsentState, profile: Profile | None, catalog: Mapping[str, Offer],
                            scorer: Scorer, now_ms: int,
                            decision_id: str, hash_key: bytes, exploration: Exploration,
                            cache: CandidateCache) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`models.decision.decide` under the running experiment's arm, if one covers the request.

    Answer and audit record carry ``experiment: {id, arm}``, or ``experiment: null`` outside any.
    The customer's arm follows :func:`models.experiments.assign` with the effective
    ``personalize`` flag; ``not_eligible`` customers get the worker's default decision.
    """
    experiment = book.find(placement, now_ms)
    if experiment is None:
        response, record = decide(request, consent, profile, catalog, scorer, now_ms,
                                  decision_id, hash_key, exploration, cache=cache)
        response["experiment"] = record["experiment"] = None
        return response, record
    personalize = restrict(consent.flags, request.consent)["personalize"]
    arm_name = assign(experiment, request.customer_id, personalize=personalize)
    if arm_name == NOT_ELIGIBLE:
        inputs = ArmInputs(request, profile, scorer, exploration)
    else:
        inputs = arm_inputs(experiment.arm(arm_name), request, profile, scorer, exploration, versions.get)
    response, record = decide(inputs.request, consent, inputs.profile, catalog, inputs.scorer,
                              now_ms, decision_id, hash_key, inputs.exploration, cache=cache)
    response["experiment"] = record["experiment"] = {"id": experiment.id, "arm": arm_name}
    return response, record


class Experiments:
    """A worker's experiment parts: the topic, the book, the arms' model versions, live results."""

    def __init__(self, topic: Any, bootstrap: str, registry: ModelRegistry, snapshot: Path | None = None) -> None:
        self.topic = topic  # the ``experiments`` topic as the topology declares it
        self.book = ExperimentBook(bootstrap, snapshot)
        self.versions = ModelVersions(registry)
        self.live = LiveResults(bootstrap, self.book)
        self._metrics: dict[str, dict[str, Any]] = {}  # experiment id -> its last counted results
        self._counted_at = -math.inf
        self._counting: asyncio.Future[None] | None = None

    async def _count(self, erased: dict[str, int]) -> None:
        for experiment in list(self.book.experiments.values()):
            self._metrics[experiment.id] = await self.live.answer(experiment, erased)
        for gone in set(self._metrics) - set(self.book.experiments):
            del self._metrics[gone]

    def gauges(self, gauges: dict[str, float], erased: dict[str, int]) -> None:
        """Per experiment and arm: customers, decisions, outcomes, revenue (``/metrics``).

        From the results counted at most :data:`METRICS_EVERY_S` before: a scrape never waits for
        a count; an older one starts a new count in the background.
        """
        if time.monotonic() - self._counted_at > METRICS_EVERY_S and (self._counting is None or self._counting.done()):
            self._counted_at = time.monotonic()
            self._counting = asyncio.ensure_future(self._count(erased))
        for experiment_id, answer in list(self._metrics.items()):
            experiment = self.book.experiments.get(experiment_id)
            if experiment is None:
                continue
            for arm, row in answer["arms"].items():
                labels = f'experiment="{experiment.id}",arm="{arm}"'
                for name in ("customers", "decisions", "impressions", "clicks", "redemptions", "revenue"):
                    gauges[f"experiment_{name}{{{labels}}}"] = row[name]
            gauges[f'experiment_not_eligible{{experiment="{experiment.id}"}}'] = answer["not_eligible"]
            if answer["srm"]["p_value"] is not None:
                gauges[f'experiment_srm_p_value{{experiment="{experiment.id}"}}'] = answer["srm"]["p_value"]

    async def run(self) -> None:
        """Declare the topic, then keep the book and the results current (a worker task)."""
        await self.topic.maybe_declare()
        await asyncio.gather(self.book.run(), self.live.run())
