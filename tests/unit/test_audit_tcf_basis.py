"""Every decision's audit record names the TCF basis it used (issue 16, item 2)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import make_mocked_request

from models.catalog import parse_offer
from models.consent import ConsentState, set_tcf_basis, tcf_basis
from models.exploration import parse_exploration
from models.scorer import FallbackScorer
from stream.handlers.score import ScoreApi
from stream.metrics import Metrics


class _Local:
    async def forward_if_remote(self, request: Any, customer_id: str, changelog: str) -> None:
        return None  # this worker owns every customer


class _Live:
    def peek_consent(self, customer_id: str) -> ConsentState:
        return ConsentState.unknown()

    def peek_profile(self, customer_id: str) -> None:
        return None


class _Catalogue:
    offers = {"a": parse_offer({"offer_id": "a", "category": "shoes", "kind": "discount", "discount_pct": 10})}


class _Model:
    scorer = FallbackScorer()


class _Audit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.records.append(record)


def _score_once() -> dict[str, Any]:
    audit = _Audit()
    api = ScoreApi(placement=_Local(), live=_Live(), catalogue=_Catalogue(), model=_Model(),  # type: ignore[arg-type]
                   exploration=parse_exploration("greedy"), audit=audit, metrics=Metrics(),  # type: ignore[arg-type]
                   score_key=None, hash_key=b"k", changelog="c")

    async def call() -> aioweb.Response:
        request = make_mocked_request("POST", "/v1/score", headers={"Content-Type": "application/json"})
        body = orjson.dumps({"customer_id": "c-1", "k": 1})

        async def read() -> bytes:
            return body

        request.read = read  # type: ignore[method-assign]
        return await api.post(request)

    response = asyncio.run(call())
    assert response.status == 200
    [record] = audit.records
    return record


@pytest.mark.parametrize("basis", ["purposes", "publisher", "publisher:9", "vendor:755"])
def test_decision_audit_record_names_the_basis(basis: str) -> None:
    before = tcf_basis()
    try:
        set_tcf_basis(basis)
        record = _score_once()
    finally:
        set_tcf_basis(before)
    assert record["tcf_basis"] == basis
    assert {"decision_id", "consent_basis", "tc_hash", "model_version"} <= set(record)  # nothing renamed
