"""Two workers in one consumer group: any worker answers any customer, from the owner's state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.workers import BROKER_KINDS, WorkerProcess, wait_until, worker_group

pytestmark = pytest.mark.integration

CUSTOMERS = [f"pair-{i}" for i in range(24)]
OFFERS = {
    "shoes-10": {"title": "10% off shoes", "category": "shoes", "kind": "discount", "discount_pct": 10},
    "hats-5": {"title": "5% off hats", "category": "hats", "kind": "discount", "discount_pct": 5},
    "partner": {"title": "Partner deal", "category": "travel", "kind": "partner", "requires": ["sharing"]},
}


@pytest.fixture(scope="module", params=BROKER_KINDS)
def pair(request: pytest.FixtureRequest, trained_registry: Path) -> Iterator[list[WorkerProcess]]:
    """Two workers on each broker kind in turn."""
    with worker_group(2, app_id="pair", registry=trained_registry, broker=request.param) as workers:
        yield workers


def _events(customer: str, category: str, n: int) -> list[dict]:
    now = int(time.time() * 1000)
    return [{"event_id": f"{customer}-{i}", "type": "add_to_cart", "customer_id": customer, "ts": now,
             "item_id": f"{category}-{i}", "category": category, "price": 25.0} for i in range(n)]


def test_any_worker_answers_every_customer_from_the_owners_state(pair: list[WorkerProcess]) -> None:
    a, b = pair
    for offer_id, offer in OFFERS.items():
        a.client.json("PUT", f"/v1/offers/{offer_id}", offer)
    wait_until(lambda: b.client.json("GET", "/v1/offers")["count"] == len(OFFERS), what="catalogue on b")
    for i, customer in enumerate(CUSTOMERS):
        entry, other = (a, b) if i % 2 else (b, a)  # writes land on either worker
        flags = {"profile": True, "personalize": i % 3 != 0, "sharing": i % 4 == 0}
        entry.client.json("PUT", f"/v1/customers/{customer}/consent", {"flags": flags})
        other.client.json("POST", "/v1/events", _events(customer, "shoes" if i % 2 else "hats", 1 + i % 4),
                          expect=202)
    for i, customer in enumerate(CUSTOMERS):
        expected_events = 1 + i % 4
        wait_until(lambda c=customer, n=expected_events: all(
            (w.client.request("GET", f"/v1/customers/{c}")[1].get("profile") or {}).get("n_events") == n
            for w in (a, b)), what=f"{customer}'s profile seen from both workers")
        answers = [w.client.json("POST", "/v1/score", {"customer_id": customer, "k": 3}) for w in (a, b)]
        for answer in answers:
            assert answer["personalized"] is (i % 3 != 0)
            assert answer["consent_basis"]["flags"]["sharing"] is (i % 4 == 0)
            assert answer["consent_basis"]["epoch"] == 1
            returned = {o["offer_id"] for o in answer["offers"]}
            assert ("partner" in returned) is (i % 4 == 0)
        assert [o["offer_id"] for o in answers[0]["offers"]] == [o["offer_id"] for o in answers[1]["offers"]]
        assert [o["score"] for o in answers[0]["offers"]] == [o["score"] for o in answers[1]["offers"]]
    forwarded = sum(w.metric("offerstream_requests_forwarded_total") for w in (a, b))
    assert forwarded > 0, "with two workers some requests must have been forwarded to the owner"
