"""Kill-and-restart: SIGKILL one of two workers under a steady event load; nothing lost, nothing twice.

Two workers on one bundled broker; every customer has ``profile`` consent. A producer sends a
steady stream of events with distinct ids (one per message, as any Kafka client would), so each
customer's true count is known. Mid-stream one worker gets SIGKILL: it dies with profiles applied
in memory but not yet flushed and messages not yet acknowledged. Once the survivor owns every
partition, each customer's profile must count exactly the events sent to it: none lost (acks only
after a durable flush) and none counted twice (the replay after the kill re-reads messages whose
effect is already stored; the offset stored with each profile skips them, far beyond the 48-id
window). Score requests sent to the survivor during the hand-over must succeed or answer 503 with
``Retry-After``, never 500.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.broker import EmbeddedBroker
from tests.integration.workers import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

CUSTOMERS = [f"crash-{i}" for i in range(40)]
EVENTS = 6_000
RATE = 1_000.0  # events/s
KILL_AFTER = 2_000  # events sent before the SIGKILL


async def _produce(bootstrap: str, events: list[dict], killed: threading.Event, kill: threading.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for i, event in enumerate(events):
            delay = started + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == KILL_AFTER:
                kill.set()
                while not killed.is_set():
                    await asyncio.sleep(0.01)
            futures.append(await producer.send("events", orjson.dumps(event), key=event["customer_id"].encode()))
        await asyncio.gather(*futures)  # every event is on the broker
    finally:
        await producer.stop()


def _scores_during_handover(worker: WorkerProcess, stop: threading.Event, seen: Counter, bad: list) -> None:
    i = 0
    while not stop.is_set():
        customer = CUSTOMERS[i % len(CUSTOMERS)]
        i += 1
        try:
            status, body = worker.client.request("POST", "/v1/score", {"customer_id": customer, "k": 3})
        except OSError as exc:
            bad.append(f"connection error {exc!r}")
            continue
        seen[status] += 1
        if status not in (200, 503):
            bad.append(f"{status} {body!r}")
        time.sleep(0.005)


def test_sigkill_under_load_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    now = int(time.time() * 1000) - 600_000
    events = [{"event_id": f"crash-ev-{i}", "type": "page_view", "customer_id": CUSTOMERS[(i * 7) % len(CUSTOMERS)],
               "ts": now + i, "category": "shoes"} for i in range(EVENTS)]
    expected = Counter(e["customer_id"] for e in events)
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        a = WorkerProcess(broker.url, tmp_path / "a", app_id="crash").start()
        b = WorkerProcess(broker.url, tmp_path / "b", app_id="crash").start()
        try:
            wait_until(lambda: all(w.health()[0] == 200 for w in (a, b)) and
                       len(a.health()[1]["assigned_partitions"]) + len(b.health()[1]["assigned_partitions"]) == 4
                       and a.health()[1]["assigned_partitions"] and b.health()[1]["assigned_partitions"],
                       timeout=60, what="two workers sharing the partitions")
            grants = [{"event_id": f"grant-{c}", "type": "consent", "customer_id": c, "ts": now - 1000,
                       "consent": {"flags": {"profile": True, "personalize": True}}} for c in CUSTOMERS]
            a.client.json("POST", "/v1/events", grants, expect=202)
            wait_until(lambda: all(a.client.request("GET", f"/v1/customers/{c}")[0] == 200 for c in CUSTOMERS),
                       timeout=30, what="consent applied")

            kill, killed = threading.Event(), threading.Event()
            stop_scores = threading.Event()
            statuses: Counter = Counter()
            bad: list[str] = []
            producer = threading.Thread(target=lambda: asyncio.run(_produce(broker.bootstrap, events, killed, kill)))
            scorer = threading.Thread(target=_scores_during_handover, args=(a, stop_scores, statuses, bad))
            producer.start()
            scorer.start()
            assert kill.wait(timeout=30)
            b.stop(sig=signal.SIGKILL)
            killed.set()
            producer.join(timeout=60)
            assert not producer.is_alive()
            wait_until(lambda: a.health()[0] == 200 and len(a.health()[1]["assigned_partitions"]) == 4,
                       timeout=60, what="the survivor to own every partition")

            def counts() -> dict[str, int]:
                out = {}
                for c in CUSTOMERS:
                    status, body = a.client.request("GET", f"/v1/customers/{c}")
                    out[c] = (body.get("profile") or {}).get("n_events", 0) if status == 200 else 0
                return out

            try:
                wait_until(lambda: counts() == dict(expected), timeout=60, interval=0.5,
                           what="every customer to count exactly the events sent")
            finally:
                stop_scores.set()
                scorer.join(timeout=10)
            time.sleep(2.0)  # a late replay would show up as a count above the truth
            final = counts()
            assert final == dict(expected), {c: (final[c], expected[c]) for c in CUSTOMERS if final[c] != expected[c]}
            assert not bad, f"hand-over answers other than 200/503: {bad[:5]}"
            assert statuses[200] > 0
        finally:
            b.stop()
            a.stop()
