"""Erasure everywhere: after DELETE and a full replay of the archive, nothing of the customer is left."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.archive import read_archive
from tests.integration.workers import WorkerProcess, wait_until
from training.datasets import from_archive
from training.replay import replay

pytestmark = pytest.mark.integration

ALL = {"profile": True, "personalize": True, "marketing": True, "measurement": True, "training": True}


@pytest.fixture()
def worker(broker: Any, tmp_path: Path, trained_registry: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerProcess]:
    """A worker of its own (data dir, consumer group) on the module's broker, each kind in turn."""
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "test-hash-key")  # the worker's key, for reading its ledger
    w = WorkerProcess(broker.url, tmp_path / "data", app_id=f"erase-{tmp_path.name}", registry=trained_registry)
    w.start(timeout=120)
    try:
        yield w
    finally:
        w.stop()


def _history(customer: str, t0: int) -> list[dict]:
    browse = [{"event_id": f"{customer}-v{i}", "type": "product_view", "customer_id": customer, "ts": t0 + i,
               "item_id": f"sku{i}", "category": "shoes", "price": 20.0} for i in range(3)]
    shown = {"event_id": f"{customer}-imp", "type": "offer_impression", "customer_id": customer, "ts": t0 + 10,
             "offer_id": "shoes-10", "decision_id": f"d-{customer}", "position": 0}
    click = {"event_id": f"{customer}-clk", "type": "offer_click", "customer_id": customer, "ts": t0 + 20,
             "offer_id": "shoes-10", "decision_id": f"d-{customer}"}
    return [*browse, shown, click]


def test_erasure_survives_a_full_replay_of_the_archive(worker: WorkerProcess) -> None:
    worker.client.json("PUT", "/v1/offers/shoes-10", {"title": "10% shoes", "category": "shoes",
                                                      "kind": "discount", "discount_pct": 10})
    t0 = int(time.time() * 1000) - 60_000
    for customer in ("erase-me", "stay"):
        worker.client.json("PUT", f"/v1/customers/{customer}/consent", {"flags": ALL})
        worker.client.json("POST", "/v1/events", _history(customer, t0), expect=202)
    for customer in ("erase-me", "stay"):
        wait_until(lambda c=customer: (worker.client.request("GET", f"/v1/customers/{c}")[1].get("profile")
                                       or {}).get("n_events") == 5, what=f"{customer}'s profile")

    receipt = worker.client.json("DELETE", "/v1/customers/erase-me")
    stores = {s["store"]: s for s in receipt["stores"]}
    assert stores["profiles"]["removed"] and stores["consent"]["removed"]
    assert stores["event_archive"]["removed_events"] == 6  # consent call + 5 events
    # a late copy of an old event arrives after the erasure: it must not bring the customer back
    worker.client.json("POST", "/v1/events", _history("erase-me", t0)[:1], expect=202)
    time.sleep(1.0)
    assert worker.client.request("GET", "/v1/customers/erase-me")[0] == 404

    archive = worker.data_dir / "archive"
    raw = list(read_archive(archive))
    assert not [e for e in raw if e["customer_id"] == "erase-me"], "the archive still holds the customer"
    assert len([e for e in raw if e["customer_id"] == "stay"]) == 6

    data = from_archive(worker.data_dir, None)  # the training path: archive read through the ledger
    result = replay(data.events, data.offers, processing_order=data.processing_order)
    assert "erase-me" not in result.profiles and "stay" in result.profiles
    rows = {m.customer_id for m in result.meta}
    assert rows == {"stay"}, "an erased customer must leave no training row"
    assert result.y.tolist() == [1]  # stay's impression, labelled by its click
