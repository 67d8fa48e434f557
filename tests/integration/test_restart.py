"""Stop and start the embedded default: profiles, consent, catalogue, erasures and model come back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.workers import WorkerProcess, wait_until

pytestmark = pytest.mark.integration


def _events(customer: str, n: int, start: int = 0) -> list[dict]:
    now = int(time.time() * 1000)
    return [{"event_id": f"{customer}-{i}", "type": "add_to_cart", "customer_id": customer,
             "ts": now - 60_000 + i, "item_id": f"sku-{i}", "category": "shoes", "price": 10.0 + i}
            for i in range(start, start + n)]


def _state(w: WorkerProcess, customer: str) -> tuple[int, dict | None]:
    status, body = w.client.request("GET", f"/v1/customers/{customer}")
    return status, body if status == 200 else None


def build_state(w: WorkerProcess, prefix: str = "") -> dict[str, dict | None]:
    """Offers, three customers' consent and events, a consent event, an erasure; the two kept
    customers' state as ``w`` answers it."""
    keep_1, keep_2, gone_1 = (f"{prefix}{c}" for c in ("keep-1", "keep-2", "gone-1"))
    w.client.json("PUT", "/v1/offers/shoes-10", {"title": "10% shoes", "category": "shoes",
                                                 "kind": "discount", "discount_pct": 10})
    w.client.json("PUT", "/v1/offers/partner", {"title": "p", "category": "travel", "kind": "partner"})
    for customer in (keep_1, keep_2, gone_1):
        w.client.json("PUT", f"/v1/customers/{customer}/consent",
                      {"flags": {"profile": True, "personalize": True, "sharing": True}})
        w.client.json("POST", "/v1/events", _events(customer, 4), expect=202)
    w.client.json("PUT", f"/v1/customers/{keep_2}/consent", {"flags": {"sharing": False}})
    # a consent event through the stream, applied after the events it governs
    w.client.json("POST", "/v1/events", [{"event_id": f"c-{keep_1}", "type": "consent", "customer_id": keep_1,
                                          "ts": int(time.time() * 1000), "consent": {"gpc": True}}], expect=202)
    wait_until(lambda: all((_state(w, c)[1] or {}).get("profile", {}) and _state(w, c)[1]["profile"]["n_events"] == 4
                           for c in (keep_1, keep_2, gone_1)), timeout=60, what="profiles built")
    wait_until(lambda: _state(w, keep_1)[1]["consent"]["flags"]["sharing"] is False, what="gpc event")
    w.client.json("DELETE", f"/v1/customers/{gone_1}")
    return {c: _state(w, c)[1] for c in (keep_1, keep_2)}


def check_state(w: WorkerProcess, before: dict[str, dict | None], prefix: str = "", label: str = "") -> None:
    """What :func:`build_state` made is all back on ``w``: offers, profiles, consent, the erasure."""
    assert {"shoes-10", "partner"} <= {o["offer_id"] for o in w.client.json("GET", "/v1/offers")["offers"]}, label
    for customer, state in before.items():
        assert _state(w, customer)[1] == state, f"{customer} differs after the restart {label}"
    assert _state(w, f"{prefix}gone-1")[0] == 404, f"an erased customer came back {label}"
    answer = w.client.json("POST", "/v1/score", {"customer_id": f"{prefix}keep-2", "k": 5})
    assert answer["personalized"] is True and answer["consent_basis"]["flags"]["sharing"] is False, label
    assert "partner" not in {o["offer_id"] for o in answer["offers"]}, label


def test_restart_of_the_embedded_default_restores_everything(tmp_path: Path, trained_registry: Path) -> None:
    first = WorkerProcess(None, tmp_path / "data", app_id="restart", registry=trained_registry).start()
    try:
        before = build_state(first)
        model = first.client.json("GET", "/health")["model_version"]
    finally:
        first.stop()

    second = WorkerProcess(None, tmp_path / "data", app_id="restart", port=first.port).start(timeout=90)
    try:
        health = second.client.json("GET", "/health")
        assert health["ready"] and health["archive_restored"] and health["model_version"] == model
        assert {o["offer_id"] for o in second.client.json("GET", "/v1/offers")["offers"]} == {"shoes-10", "partner"}
        check_state(second, before)
    finally:
        second.stop()
