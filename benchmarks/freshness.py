"""Freshness benchmark: event produced to Kafka -> reflected in the owner's answers.

``python -m benchmarks.freshness [--quick] [--broker tansu|kafka|both]``. One worker (on the bundled
broker or a 3-broker Apache Kafka cluster), a background producer sending
1,000 events/s (one event per message, as an outside Kafka client sends them) over 2,000
customers; probe customers get one event at a time from a separate producer, and the client polls
``GET /v1/customers/{id}`` (the same live state ``POST /v1/score`` reads) until the profile's
``n_events`` counts it. Latency = first answer showing it - the time the producer was called. A probe not seen within
2 s counts as 2 s (a lower bound); after 5 such timeouts the variant stops (its worker is
falling behind its input, and further probes would only measure the growing backlog).
Naive vs optimized: the same on a worker with ``OFFERSTREAM_WRITE_BEHIND=0`` (table write per
event). Each variant also reports the worker's and the broker's CPU per event consumed during the
probing (background events plus probes).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.common import (
    bootstrap_of,
    broker_group,
    broker_pids,
    cli,
    cpu_s,
    result_name,
    summarize,
    synthetic_events,
    target,
)
from stream.topics import EVENTS_TOPIC

__all__ = ["run", "main"]

BACKGROUND_RATE = 1_000.0


async def _background(bootstrap: str, stop: asyncio.Event, customers: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    sent = 0
    events = synthetic_events(200_000, customers, seed=11, prefix="bg")
    started = time.perf_counter()
    try:
        while not stop.is_set():
            due = started + sent / BACKGROUND_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            e = events[sent % len(events)]
            await producer.send(EVENTS_TOPIC, orjson.dumps(e), key=e["customer_id"].encode())
            sent += 1
    finally:
        await producer.stop()
    return sent


PROBE_TIMEOUT_S = 2.0
MAX_TIMEOUTS = 5  # a worker this far behind its input will not catch up during the run


async def _probe(url: str, bootstrap: str, probes: int, customers: int) -> tuple[list[float], int, int]:
    stop = asyncio.Event()
    bg = asyncio.ensure_future(_background(bootstrap, stop, customers))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    latencies: list[float] = []
    timeouts = 0
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as session:
        for i in range(probes):
            if timeouts >= MAX_TIMEOUTS:
                break
            cid = f"probe{i % 20}"
            async with session.get(f"{url}/v1/customers/{cid}") as r:
                before = ((await r.json()).get("profile") or {}).get("n_events", 0) if r.status == 200 else 0
            event = {"event_id": f"probe-{i}", "type": "page_view", "customer_id": cid,
                     "ts": int(time.time() * 1000), "category": "cat1"}
            t0 = time.perf_counter()
            await producer.send(EVENTS_TOPIC, orjson.dumps(event), key=cid.encode())
            while True:
                if time.perf_counter() - t0 > PROBE_TIMEOUT_S:
                    timeouts += 1  # counted in the latencies as the timeout: a lower bound
                    latencies.append(PROBE_TIMEOUT_S * 1000)
                    break
                async with session.get(f"{url}/v1/customers/{cid}") as r:
                    body = await r.json() if r.status == 200 else {}
                if (body.get("profile") or {}).get("n_events", 0) > before:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    break
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.02)
    await producer.stop()
    stop.set()
    sent = await bg
    return latencies, sent, timeouts


def _measure(write_behind: bool, probes: int, customers: int, broker: str = "tansu") -> dict[str, Any]:
    env = {"OFFERSTREAM_WRITE_BEHIND": "1" if write_behind else "0"}
    with broker_group(1, broker=broker, app_id=f"fresh-{int(write_behind)}", env=env) as (running, (worker,)):
        bootstrap = bootstrap_of(running)
        grants = [{"event_id": f"g{c}", "type": "consent", "customer_id": c, "ts": 1_600_000_000_000,
                   "consent": {"flags": {"profile": True, "personalize": True}}}
                  for c in [f"c{i}" for i in range(customers)] + [f"probe{i}" for i in range(20)]]
        for i in range(0, len(grants), 500):
            worker.client.json("POST", "/v1/events", grants[i:i + 500], expect=202)
        time.sleep(2.0)
        brokers = broker_pids(running)
        cpu_before = cpu_s(worker.proc.pid), cpu_s(brokers)
        latencies, sent, timeouts = asyncio.run(_probe(worker.url, bootstrap, probes, customers))
        consumed = sent + len(latencies)
        worker_cpu = cpu_s(worker.proc.pid) - cpu_before[0]
        broker_cpu = cpu_s(brokers) - cpu_before[1]
    return {"latency_ms": summarize(latencies), "probes": len(latencies), "timeouts": timeouts,
            "timeout_s": PROBE_TIMEOUT_S, "background_events": sent,
            # all the worker did meanwhile: the events, the probe reads, the 1 ms polls
            "worker_cpu_us_per_event": round(worker_cpu / max(1, consumed) * 1e6, 1),
            "broker_cpu_us_per_event": round(broker_cpu / max(1, consumed) * 1e6, 1)}


def run(quick: bool = False, broker: str = "tansu") -> dict[str, Any]:
    probes = 40 if quick else 300
    customers = 2_000
    naive = _measure(False, probes, customers, broker)
    fast = _measure(True, probes, customers, broker)
    p99 = fast["latency_ms"].get("p99", float("nan"))
    return {
        "name": result_name("freshness", broker),
        "settings": {"quick": quick, "broker": broker, "background_rate": BACKGROUND_RATE, "customers": customers,
                     "probe": "GET /v1/customers/{id} (the live state the score path reads), 1 ms poll"},
        "results": {"naive": naive, "write_behind": fast,
                    "ratio_vs_naive_p99": round(naive["latency_ms"].get("p99", float("nan")) / p99, 2)},
        "targets": [target("event -> visible to score, p99 at 1,000 ev/s", p99, 50.0, "ms")],
    }


def main() -> None:
    cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
