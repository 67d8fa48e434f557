"""``PUT /v1/experiments/{id}``, ``GET /v1/experiments`` and ``GET /v1/experiments/{id}/results``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web as aioweb

from models.errors import InvalidRequest, NotFound
from models.experiments import parse_experiment
from models.registry import ModelRegistry
from stream.experiments import ExperimentBook, LiveResults
from stream.http import check_key, json_response, read_json

__all__ = ["ExperimentsApi"]


class ExperimentsApi:
    """Experiment calls (admin calls: the API key when one is set).

    ``erased`` gives the erasure ledger's entries (customer hash -> erasure time) at call time.
    """

    def __init__(self, topic: Any, book: ExperimentBook, live: LiveResults, registry: ModelRegistry,
                 erased: Callable[[], dict[str, int]], api_key: str | None) -> None:
        self.topic, self.book, self.live, self.registry = topic, book, live, registry
        self.erased, self.api_key = erased, api_key

    async def put(self, request: aioweb.Request) -> aioweb.Response:
        """Validate, write to ``experiments``; answer once this worker applies it."""
        check_key(request, self.api_key)
        experiment = parse_experiment(await read_json(request), request.match_info["experiment_id"],
                                      known_versions=self.registry.versions())
        # Overlaps are decided in the topic's order, the same on every worker: a check against what
        # this worker has read so far could refuse because of a change it has not read yet.
        previous = self.book.raw.get(experiment.id)
        await self._write(experiment.id, orjson.dumps(experiment.to_dict()))
        refused = self.book.refused.get(experiment.id)
        if refused is not None:  # another worker's experiment got onto the topic first
            await self._write(experiment.id, previous)
            raise InvalidRequest("placement", refused.removeprefix("placement: "))
        return json_response(experiment.to_dict())

    async def _write(self, experiment_id: str, value: bytes | None) -> None:
        """Write a record to ``experiments`` and wait until this worker has applied it."""
        metadata = await (await self.topic.send(key=experiment_id, value=value or b""))
        await self.book.wait_applied(metadata.partition, metadata.offset)

    async def list(self, request: aioweb.Request) -> aioweb.Response:
        """Every experiment, by id."""
        check_key(request, self.api_key)
        found = [e.to_dict() for _, e in sorted(self.book.experiments.items())]
        return json_response({"experiments": found, "count": len(found)})

    async def results(self, request: aioweb.Request) -> aioweb.Response:
        """Live results of one experiment (404 if unknown); ``?until=MS``: up to that time only."""
        check_key(request, self.api_key)
        until = request.query.get("until")
        if until is not None and not until.isdigit():
            raise InvalidRequest("until", "must be epoch milliseconds")
        experiment_id = request.match_info["experiment_id"]
        experiment = self.book.experiments.get(experiment_id)
        if experiment is None:
            raise NotFound(f"no experiment {experiment_id!r}")
        answer = await self.live.answer(experiment, self.erased(), None if until is None else int(until))
        return json_response(answer)
