"""The walking system end to end on the real bundled broker, with real worker processes.

Events sent over HTTP and by a plain Kafka producer change the profile and the score; customers
without consent get contextual answers and never an offer whose ``requires`` is not granted; bad
input is refused with a reason or dead-lettered; two workers in one group answer every customer
the same, wherever the request lands.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.embedded.process import EmbeddedBroker
from stream.topics import DEAD_LETTER_TOPIC, DECISIONS_TOPIC, EVENTS_TOPIC
from tests.integration.workers import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

OFFERS = {
    "shoes-10": {"title": "10% off shoes", "category": "shoes", "kind": "discount", "discount_pct": 10},
    "hats-5": {"title": "5% off hats", "category": "hats", "kind": "discount", "discount_pct": 5},
    "travel-partner": {"title": "Partner travel deal", "category": "travel", "kind": "partner",
                       "discount_pct": 15, "requires": ["sharing"]},
    "newsletter": {"title": "Members' coupon", "category": "shoes", "kind": "loyalty",
                   "requires": ["marketing"]},
}
ALL_FLAGS = ("profile", "personalize", "marketing", "measurement", "training", "sharing")


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, trained_registry: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(broker.url, tmp_path_factory.mktemp("w1"), app_id="walk",
                      registry=trained_registry).start()
    for offer_id, offer in OFFERS.items():
        w.client.json("PUT", f"/v1/offers/{offer_id}", offer)
    yield w
    w.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def browse(customer: str, n: int, category: str = "shoes", prefix: str = "ev") -> list[dict]:
    return [{"event_id": f"{prefix}-{customer}-{i}", "type": "product_view", "customer_id": customer,
             "ts": now_ms(), "item_id": f"sku-{i}", "category": category, "price": 40.0} for i in range(n)]


def profile_events(w: WorkerProcess, customer: str) -> int:
    status, body = w.client.request("GET", f"/v1/customers/{customer}")
    return body["profile"]["n_events"] if status == 200 and body.get("profile") else 0


def score(w: WorkerProcess, customer: str, **extra) -> dict:
    return w.client.json("POST", "/v1/score", {"customer_id": customer, "k": 10, **extra})


def test_worker_is_ready_with_model_and_catalogue(worker: WorkerProcess) -> None:
    health = worker.client.json("GET", "/health")
    assert health["ready"] and health["model_loaded"] and health["offers"] == len(OFFERS)
    assert health["model_version"].startswith("gbm") or health["model_version"] != "fallback-popularity"


def test_http_events_change_profile_and_score(worker: WorkerProcess) -> None:
    grant = {"flags": {"profile": True, "personalize": True, "marketing": True}}
    worker.client.json("PUT", "/v1/customers/http-1/consent", grant)
    before = score(worker, "http-1")
    assert before["personalized"] is False  # allowed, but there is no profile to use yet
    accepted = worker.client.json("POST", "/v1/events", browse("http-1", 5), expect=202)
    assert accepted == {"accepted": 5, "rejected": []}
    wait_until(lambda: profile_events(worker, "http-1") == 5, what="5 events in the profile")
    after = score(worker, "http-1")
    assert after["personalized"] is True
    assert after["decision_id"] and after["decision_id"] != before["decision_id"]
    assert after["model_version"] == before["model_version"] != "fallback-popularity"
    assert after["consent_basis"]["flags"]["profile"] is True and after["consent_basis"]["epoch"] == 1
    scores_before = {o["offer_id"]: o["score"] for o in before["offers"]}
    scores_after = {o["offer_id"]: o["score"] for o in after["offers"]}
    assert scores_before != scores_after, "a profile change must change the score"
    shoes = next(o for o in after["offers"] if o["offer_id"] == "shoes-10")
    assert any("shoes" in reason for reason in shoes["reasons"])
    assert {"offer_id": "travel-partner", "reason": "consent:sharing"} in after["filtered"]


def test_plain_kafka_producer_and_envelope_reach_the_profile(worker: WorkerProcess,
                                                             broker: EmbeddedBroker) -> None:
    worker.client.json("PUT", "/v1/customers/kafka-1/consent", {"flags": {"profile": True}})

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for event in browse("kafka-1", 3, prefix="k"):  # one event per message, string key
                await producer.send_and_wait(EVENTS_TOPIC, orjson.dumps(event), key=b"kafka-1")
            envelope = browse("kafka-1", 2, prefix="env")  # an envelope: a JSON array
            await producer.send_and_wait(EVENTS_TOPIC, orjson.dumps(envelope), key=b"kafka-1")
            await producer.send_and_wait(EVENTS_TOPIC, orjson.dumps(browse("kafka-1", 1, prefix="k")[0]),
                                         key=b"kafka-1")  # a redelivered event: must not count twice
        finally:
            await producer.stop()

    asyncio.run(produce())
    wait_until(lambda: profile_events(worker, "kafka-1") == 5, what="5 distinct events in the profile")
    time.sleep(0.5)
    assert profile_events(worker, "kafka-1") == 5


def test_customer_without_consent_gets_contextual_offers_only(worker: WorkerProcess) -> None:
    worker.client.json("POST", "/v1/events", browse("anon-1", 3), expect=202)
    time.sleep(1.0)
    status, _ = worker.client.request("GET", "/v1/customers/anon-1")
    assert status == 404, "no consent: nothing may be stored about the customer"
    answer = score(worker, "anon-1")
    assert answer["personalized"] is False
    assert answer["offers"], "a customer without consent still gets contextual offers"
    returned = {o["offer_id"] for o in answer["offers"]}
    assert not returned & {"travel-partner", "newsletter"}
    assert {f["offer_id"]: f["reason"] for f in answer["filtered"]} == {
        "travel-partner": "consent:sharing", "newsletter": "consent:marketing"}
    assert all(v is False for v in answer["consent_basis"]["flags"].values())


def test_random_consent_never_returns_an_offer_it_does_not_allow(worker: WorkerProcess) -> None:
    rng = random.Random(7)
    for i in range(30):
        customer = f"rand-{i}"
        flags = {flag: rng.random() < 0.5 for flag in ALL_FLAGS}
        worker.client.json("PUT", f"/v1/customers/{customer}/consent", {"flags": flags})
        answer = score(worker, customer)
        granted = {f for f, v in answer["consent_basis"]["flags"].items() if v}
        assert granted == {f for f, v in flags.items() if v}
        for offer in answer["offers"]:
            required = set(OFFERS[offer["offer_id"]].get("requires", []))
            if OFFERS[offer["offer_id"]]["kind"] == "partner":
                required.add("sharing")
            assert required <= granted, (customer, offer, granted)
        assert answer["personalized"] is False  # no events were sent: there is no profile to use


def test_revoking_profile_erases_it_and_stops_personalization(worker: WorkerProcess) -> None:
    worker.client.json("PUT", "/v1/customers/rev-1/consent", {"flags": {"profile": True, "personalize": True}})
    worker.client.json("POST", "/v1/events", browse("rev-1", 2), expect=202)
    wait_until(lambda: profile_events(worker, "rev-1") == 2, what="profile built")
    change = worker.client.json("PUT", "/v1/customers/rev-1/consent", {"flags": {"personalize": False, "profile": False}})
    assert change["profile_erased"] is True and set(change["revoked"]) == {"personalize", "profile"}
    assert score(worker, "rev-1")["personalized"] is False
    worker.client.json("POST", "/v1/events", browse("rev-1", 2, prefix="late"), expect=202)
    time.sleep(1.0)
    assert worker.client.json("GET", "/v1/customers/rev-1")["profile"] is None
    receipt = worker.client.json("DELETE", "/v1/customers/rev-1")
    stores = {s["store"]: s for s in receipt["stores"]}
    assert stores["profiles"]["removed"] is False and stores["consent"]["removed"] is True
    # two consent calls and two events while profiled were stored (the two late events were not)
    assert stores["event_archive"]["removed_events"] == 4
    assert stores["erasure_ledger"]["added"] is True and "rev-1" not in str(receipt["ledger_hash"])
    assert worker.client.request("GET", "/v1/customers/rev-1")[0] == 404


def test_malformed_events_get_a_4xx_naming_the_field(worker: WorkerProcess) -> None:
    bad = {"event_id": "b1", "type": "purchase", "customer_id": "x", "ts": now_ms(),
           "items": [{"item_id": "a", "price": "cheap"}]}
    status, body = worker.client.request("POST", "/v1/events", bad)
    assert status == 400 and "items[0].price" in body["detail"]
    status, body = worker.client.request("POST", "/v1/events", b"{not json")
    assert status == 400 and "JSON" in body["detail"]
    mixed = [browse("mixed-1", 1)[0], {"event_id": "b2", "type": "teleport", "customer_id": "x", "ts": now_ms()}]
    status, body = worker.client.request("POST", "/v1/events", mixed)
    assert status == 202 and body["accepted"] == 1
    assert body["rejected"][0]["index"] == 1 and body["rejected"][0]["field"] == "type"
    status, body = worker.client.request("POST", "/v1/score", {"customer_id": "x", "k": 0})
    assert status == 400 and body["field"] == "k"


def test_malformed_kafka_message_goes_to_dead_letter(worker: WorkerProcess, broker: EmbeddedBroker) -> None:
    async def roundtrip() -> list[dict]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.send_and_wait(EVENTS_TOPIC, b"{oops", key=b"dl-1")
        await producer.send_and_wait(EVENTS_TOPIC, orjson.dumps({"event_id": "dl", "type": "page_view",
                                                             "customer_id": "dl-1"}), key=b"dl-1")
        await producer.stop()
        consumer = AIOKafkaConsumer(DEAD_LETTER_TOPIC, bootstrap_servers=broker.bootstrap,
                                    group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        found: list[dict] = []
        deadline = time.monotonic() + 20
        try:
            while len(found) < 2 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [orjson.loads(r.value) for r in records if r.key == b"dl-1"]
        finally:
            await consumer.stop()
        return found

    letters = asyncio.run(roundtrip())
    assert len(letters) == 2
    assert "JSON" in letters[0]["reason"] and letters[0]["raw"] == "{oops"
    assert letters[1]["field"] == "ts" and letters[1]["source"]["topic"] == EVENTS_TOPIC


def test_sec_gpc_header_on_any_call_turns_sharing_off(worker: WorkerProcess) -> None:
    import urllib.request

    worker.client.json("PUT", "/v1/customers/gpc-1/consent", {"flags": {"profile": True, "sharing": True}})
    assert score(worker, "gpc-1")["consent_basis"]["flags"]["sharing"] is True
    # on a score call the header narrows that decision
    narrowed = worker.client.json("POST", "/v1/score", {"customer_id": "gpc-1", "k": 10,
                                                        "consent": {"gpc": True}})
    assert narrowed["consent_basis"]["flags"]["sharing"] is False
    assert "travel-partner" not in {o["offer_id"] for o in narrowed["offers"]}
    # on an events call it is recorded for the customers of the call
    request = urllib.request.Request(worker.url + "/v1/events", data=orjson.dumps(browse("gpc-1", 1)),
                                     method="POST", headers={"Content-Type": "application/json", "Sec-GPC": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test server
        assert response.status == 202
    wait_until(lambda: worker.client.json("GET", "/v1/customers/gpc-1")["consent"]["flags"]["sharing"] is False,
               what="GPC to switch sharing off")
    stored = worker.client.json("GET", "/v1/customers/gpc-1")
    assert stored["consent"]["sources"]["sharing"] == "gpc" and "profile" in stored["why"]


def test_decisions_are_audited_without_raw_ids_or_tc_strings(worker: WorkerProcess,
                                                             broker: EmbeddedBroker) -> None:
    from models.tcf import TCString, encode_tc_string

    tc = encode_tc_string(TCString(purpose_consents=frozenset(range(1, 11)), vendor_list_version=100))
    customer = "audit-customer-7d1f"
    changed = worker.client.json("PUT", f"/v1/customers/{customer}/consent",
                                 {"tcf": tc, "flags": {"marketing": True}})
    assert {"profile", "personalize", "measurement", "training"} <= set(changed["granted"])
    answer = score(worker, customer)

    async def find() -> tuple[dict, bytes]:
        consumer = AIOKafkaConsumer(DECISIONS_TOPIC, bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if orjson.loads(r.value)["decision_id"] == answer["decision_id"]:
                            return orjson.loads(r.value), r.value
        finally:
            await consumer.stop()
        raise AssertionError("decision not found on topic decisions")

    record, raw = asyncio.run(find())
    assert customer.encode() not in raw and tc.encode() not in raw
    assert record["customer_hash"] and len(record["customer_hash"]) == 32
    assert record["tc_hash"] and len(record["tc_hash"]) == 64
    assert record["mode"] == "contextual" and record["model_version"] == answer["model_version"]
    assert record["consent_basis"]["sources"]["profile"] == "tcf"
    assert record["consent_basis"]["sources"]["marketing"] == "explicit"
    assert record["consent_basis"]["epoch"] == 1
    assert record["tcf_basis"] == "purposes"  # the TCF basis the worker decides under (the default)
    assert [o["offer_id"] for o in record["offers"]] == [o["offer_id"] for o in answer["offers"]]
    assert record["filtered"] == answer["filtered"]
    log = worker.log_path.read_text(errors="replace")
    for secret in (customer, tc, "http-1", "kafka-1", "rev-1"):
        assert secret not in log, f"{secret!r} appears in the worker log"
