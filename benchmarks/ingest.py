"""Ingest benchmark: events/s from the ``events`` topic into durable profiles, one worker.

``python -m benchmarks.ingest [--quick] [--broker tansu|kafka|both]``. A real ``offerstream serve``
worker on the bundled broker (``tansu``) or on a 3-broker Apache Kafka cluster (``kafka``:
replication 3, acks=all, so every changelog write is on two brokers before it counts). Every
customer first gets ``profile`` consent (consent events, not timed), then the timed events are
produced and the clock stops when the worker's ``/metrics`` show all of them applied (``applied``)
and, for write-behind, when no customer is left dirty (``durable``: the changelog has every
profile and the messages are acknowledged).

Variants, each on its own fresh broker and worker:

- ``naive``: ``OFFERSTREAM_WRITE_BEHIND=0``, the baseline: one table write (changelog message)
  per event, faust's automatic acks; envelopes of 500 events, so only the state path differs.
- ``write_behind_envelopes``: the optimized path: envelopes of 500 events per message, live
  profiles, dirty customers flushed every ``FLUSH_INTERVAL_S`` (1 s), acks after the durable flush.
- ``write_behind_single`` (full run only): the same worker fed one event per message, as an
  outside Kafka producer sends them (faust's per-message cost dominates).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.common import (
    bootstrap_of,
    broker_group,
    broker_pids,
    cli,
    cpu_s,
    envelopes,
    result_name,
    synthetic_events,
    target,
)
from stream.ingest_state import FLUSH_INTERVAL_S
from stream.topics import EVENTS_TOPIC

__all__ = ["run", "main", "measure_ingest"]

TARGET_EVENTS_S = 25_000.0
PARTITIONS = 4
_partitioner = DefaultPartitioner()
_PARTS = list(range(PARTITIONS))


def partition_of(customer_id: str) -> int:
    """Kafka's default partitioner on the UTF-8 customer id (what every worker uses)."""
    return int(_partitioner(customer_id.encode(), _PARTS, _PARTS))


def processed_total(metrics_text: str) -> int:
    """Sum of ``events_processed_total`` over outcomes."""
    return sum(int(float(m)) for m in re.findall(r'^offerstream_events_processed_total\{[^}]*\} (\S+)$',
                                                 metrics_text, re.M))


def gauge(metrics_text: str, name: str) -> float:
    m = re.search(rf"^offerstream_{name} (\S+)$", metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


async def _produce(bootstrap: str, messages: list[tuple[int, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for partition, key, value in messages:
            await producer.send(EVENTS_TOPIC, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def _metrics(worker: Any) -> str:
    status, _ = 0, None
    import urllib.request

    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:  # noqa: S310
        status = response.status
        return response.read().decode() if status == 200 else ""


def _wait(worker: Any, expected: int, durable: bool, timeout: float) -> tuple[float, float]:
    """Block until ``expected`` events are processed (and flushed); return (applied_at, durable_at)."""
    applied_at = durable_at = float("nan")
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        text = _metrics(worker)
        now = time.perf_counter()
        if applied_at != applied_at and processed_total(text) >= expected:
            applied_at = now
        if applied_at == applied_at and (not durable or gauge(text, "ingest_dirty_customers") == 0):
            durable_at = now
            break
        time.sleep(0.05)
    return applied_at, durable_at


def measure_ingest(n_events: int, customers: int, *, write_behind: bool, envelope: int,
                   broker: str = "tansu") -> dict[str, Any]:
    """One variant on a fresh broker and worker; see the module docstring."""
    env = {"OFFERSTREAM_WRITE_BEHIND": "1" if write_behind else "0"}
    consent = [{"event_id": f"consent-{i}", "type": "consent", "customer_id": f"c{i}", "ts": 1_600_000_000_000,
                "consent": {"flags": {"profile": True, "personalize": True}}} for i in range(customers)]
    events = synthetic_events(n_events, customers, seed=7)
    with broker_group(1, broker=broker, app_id=f"ingest-{int(write_behind)}-{envelope}", partitions=PARTITIONS,
                      env=env) as (running, (worker,)):
        bootstrap = bootstrap_of(running)
        asyncio.run(_produce(bootstrap, envelopes(consent, partition_of, 500)))
        base = customers
        _wait(worker, base, durable=False, timeout=120)
        if envelope > 1:
            messages = envelopes(events, partition_of, envelope)
        else:
            messages = [(partition_of(e["customer_id"]), e["customer_id"].encode(), orjson.dumps(e)) for e in events]
        brokers = broker_pids(running)
        cpu_before = cpu_s(worker.proc.pid), cpu_s(brokers)
        started = time.perf_counter()
        asyncio.run(_produce(bootstrap, messages))
        produced = time.perf_counter() - started
        applied_at, durable_at = _wait(worker, base + n_events, durable=write_behind, timeout=600)
        worker_cpu = cpu_s(worker.proc.pid) - cpu_before[0]
        broker_cpu = cpu_s(brokers) - cpu_before[1]
        text = _metrics(worker)
    applied_s = applied_at - started
    durable_s = durable_at - started
    return {"events": n_events, "customers": customers, "envelope": envelope,
            "produce_s": round(produced, 3), "applied_s": round(applied_s, 3), "durable_s": round(durable_s, 3),
            "events_per_s": round(n_events / durable_s, 1),
            # CPU from the first produced message until durable (the worker's: all its threads;
            # the broker's: it shares the two cores): steadier than wall time on a loaded machine
            "worker_cpu_s": round(worker_cpu, 2), "broker_cpu_s": round(broker_cpu, 2),
            "worker_cpu_us_per_event": round(worker_cpu / n_events * 1e6, 2),
            "broker_cpu_us_per_event": round(broker_cpu / n_events * 1e6, 2),
            "profiles_flushed": int(gauge(text, "profiles_flushed_total")),
            "duplicates_or_replays": sum(int(float(m)) for m in re.findall(
                r'outcome="(?:duplicate|replayed)"\} (\S+)', text))}


def run(quick: bool = False, broker: str = "tansu") -> dict[str, Any]:
    customers = 2_000 if quick else 10_000
    n_fast = 20_000 if quick else 300_000
    n_naive = 4_000 if quick else 30_000
    naive = measure_ingest(n_naive, customers, write_behind=False, envelope=500, broker=broker)
    fast = measure_ingest(n_fast, customers, write_behind=True, envelope=500, broker=broker)
    results: dict[str, Any] = {"naive": naive, "write_behind_envelopes": fast}
    if not quick:
        results["write_behind_single"] = measure_ingest(50_000, customers, write_behind=True, envelope=1,
                                                        broker=broker)
    results["ratio_vs_naive"] = round(fast["events_per_s"] / naive["events_per_s"], 1)
    return {
        "name": result_name("ingest", broker),
        "settings": {"quick": quick, "broker": broker, "partitions": PARTITIONS, "workers": 1, "customers": customers,
                     "flush_interval_s": FLUSH_INTERVAL_S, "envelope_events": 500, "event_mix": "synthetic shop mix"},
        "results": results,
        "targets": [target("ingest events/s per worker (durable)", fast["events_per_s"], TARGET_EVENTS_S,
                           "events/s", at_most=False)],
    }


def main() -> None:
    cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
