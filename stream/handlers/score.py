"""``POST /v1/score``: the decision, on the worker that owns the customer, audited.

The hot path of the API: no work here that the answer does not need. The audit record is queued
and sent in batches (``stream/audit.py``); CPU per request is recorded for the benchmarks.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web as aioweb

from models.consent import DEFAULT_TCF_BASIS
from models.decision import CandidateCache, decide, parse_score_request
from models.tokens import claim
from stream.audit import AuditLog
from stream.catalogue import Catalogue
from stream.experiments import ExperimentBook, ModelVersions, decide_with_experiments
from stream.handlers.common import gpc, now_ms
from stream.http import check_key, json_response, read_json, token_customer
from stream.ingest_state import LiveState
from stream.metrics import Metrics
from stream.placement import Placement

__all__ = ["ScoreApi", "decision_id"]


def decision_id() -> str:
    """A random decision id: ``uuid.uuid4().hex``'s format and bits, without building a ``UUID``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


class ScoreApi:
    """Scoring. ``model`` holds the current scorer (hot-reloaded); ``exploration`` its policy."""

    #: The experiments and the model versions their arms name (set by the worker; ``None``: none).
    experiments: ExperimentBook | None = None
    versions: ModelVersions | None = None

    def __init__(self, *, placement: Placement, live: LiveState, catalogue: Catalogue, model: Any,
                 exploration: Any, audit: AuditLog, metrics: Metrics, score_key: str | None,
                 hash_key: bytes, changelog: str, tcf_basis: str = DEFAULT_TCF_BASIS,
                 token_key: bytes | None = None) -> None:
        self.placement, self.live, self.catalogue, self.model = placement, live, catalogue, model
        self.exploration, self.audit, self.metrics = exploration, audit, metrics
        self.score_key, self.hash_key, self.changelog = score_key, hash_key, changelog
        self.tcf_basis = tcf_basis  # OFFERSTREAM_TCF_BASIS: how a request's TC string is read
        self.token_key = token_key  # OFFERSTREAM_TOKEN_KEY: customer tokens of shops' pages (None: none taken)
        self.candidates = CandidateCache()  # the same catalogue objects hit on every request

    async def post(self, request: aioweb.Request) -> aioweb.Response:
        """Rank offers for a customer under their consent; answer and audit the decision."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        score_request = parse_score_request(await self._body(request), header_gpc=gpc(request),
                                            tcf_basis=self.tcf_basis)
        forwarded = await self.placement.forward_if_remote(request, score_request.customer_id, self.changelog)
        if forwarded is not None:
            return forwarded
        # the live state: what the ingest agent applied, even before its write-behind flush
        consent = self.live.peek_consent(score_request.customer_id)
        wants_profile = consent.flags["personalize"] and consent.flags["profile"]
        profile = self.live.peek_profile(score_request.customer_id) if wants_profile else None
        decide_started = time.thread_time()
        if self.experiments is None or self.versions is None:  # no experiments wired (tests, tools)
            response, record = decide(
                score_request, consent, profile, self.catalogue.offers, self.model.scorer,
                now_ms(), decision_id(), self.hash_key, self.exploration, cache=self.candidates,
            )
        else:  # the running experiment's arm, if one covers the request; ``experiment`` either way
            response, record = decide_with_experiments(
                self.experiments, self.versions, await self.experiments.placement_of(request), score_request,
                consent, profile, self.catalogue.offers, self.model.scorer, now_ms(), decision_id(),
                self.hash_key, self.exploration, self.candidates)
        decided = time.thread_time()
        record["tcf_basis"] = self.tcf_basis  # which TC string consents the flags were read under
        self.audit.add(record["customer_hash"], record)  # batched; sent within a few ms
        self.metrics.inc(f'decisions_total{{mode="{record["mode"]}"}}')
        reply = json_response(response)
        # thread CPU: the handler's own (it does not wait on a local score) and decide()'s
        self.metrics.observe_score(time.perf_counter() - started,
                                   time.thread_time() - cpu_started, decided - decide_started)
        return reply

    async def _body(self, request: aioweb.Request) -> Any:
        """The request body; on a customer token's call (a shop's page) bound to the token's customer.

        Without a token this is the score key check and the body (no token work on the hot path);
        with one, no key is needed, a missing ``customer_id`` is the token's, and another one is a
        403 before anything is decided or audited.
        """
        customer = token_customer(request, self.token_key)  # 401: expired, forged or malformed
        if customer is None:
            check_key(request, self.score_key)
            return await read_json(request)
        return claim(await read_json(request), customer)
