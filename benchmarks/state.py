"""State at scale: one worker holding 1,000,000 customers; memory and disk per customer; restore times.

``python -m benchmarks.state [--quick] [--broker kafka|tansu|both]`` (default ``kafka``: a 3-broker
Apache Kafka 4.4 cluster, replication 3; ``tansu``: the bundled broker). One broker, one app id, four
partitions, real ``offerstream serve`` processes; the phases run one after the other on the same
state:

1. **load**: worker A alone. Every customer gets a ``consent`` event granting ``profile`` (else its
   events do not count), then ``EVENTS_PER_CUSTOMER`` shop events (a product view, then an add to
   cart, a purchase, ...), produced as envelopes of 500 events per Kafka message, keyed and
   partitioned by customer id as every producer does. Done when the worker's ``/metrics`` count
   every event processed and no customer is left dirty (every profile is in the changelog).
   Reported: the load's events/s and worker CPU per event; A's RSS (``VmRSS``) before and after,
   and per customer; the bytes of A's RocksDB table dir (``DATA_DIR/worker-PORT``: ``.sst``
   files, the write-ahead log, the rest) and of its local event archive (``DATA_DIR/archive``) per
   customer; the changelog records (and on Kafka the changelog bytes on one broker).
2. **cold** (restore from the changelog): SIGKILL A; start C with an empty data dir. C restores all
   four partitions of both tables from their changelogs.
3. **warm** (local RocksDB plus the changelog tail): C takes a tail of ``TAIL_EVENTS`` more events,
   then SIGKILL C and start it again on its own data dir (same port, so the same table dir).
4. **scale-out and standby**: start B (empty data dir) beside C. B restores the two partitions it is
   given from the changelog (``scale_out``: a cold restore of half the customers) and keeps
   standby copies of C's two (``table_standby_replicas=1``, ``stream/app.py``). When B has caught
   up (its CPU is idle and its table dir no longer grows), SIGKILL C: B takes C's partitions over
   from its standby copies (``standby``).

For each take-over the clock starts at the SIGKILL (or at the worker's start for the scale-out) and
``/health`` of the worker taking over is polled every 0.1 s: ``assigned_s`` (it holds every
partition; on Kafka this includes the group noticing the dead member, ``broker_session_timeout``
10 s, unless the new member's join triggers the rebalance first), ``recovered_s`` (faust's table
recovery done), ``ready_s`` (``/health`` 200: recovered, catalogue and ledger loaded, broker
reachable). ``restore_s = recovered_s - assigned_s`` is the restore itself. After each take-over a
sample of customers spread over every partition is read back: each must count exactly its events.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.common import (
    bootstrap_of,
    broker_pids,
    cli,
    cpu_s,
    envelopes,
    result_name,
    rss_bytes,
    running_broker,
    target,
)
from benchmarks.ingest import _metrics, gauge, partition_of, processed_total
from stream.topics import CONSENT_TABLE, EVENTS_TOPIC, PROFILES_TABLE
from tests.integration.workers import WorkerProcess, group_settled, wait_until

__all__ = ["run", "main"]

PARTITIONS = 4
APP_ID = "state"
EVENTS_PER_CUSTOMER = 2
TAIL_EVENTS = 20_000
CHUNK_CUSTOMERS = 20_000  # customers generated and produced at a time (bounds the generator's memory)
SAMPLE = 400  # customers read back after each take-over
KINDS = ("product_view", "add_to_cart", "purchase", "page_view", "search")


def _customer(i: int) -> str:
    return f"s{i}"


def _consent(i: int, ts: int) -> dict[str, Any]:
    return {"event_id": f"grant-{i}", "type": "consent", "customer_id": _customer(i), "ts": ts,
            "consent": {"flags": {"profile": True, "personalize": True}}}


def _event(i: int, j: int, ts: int, tag: str = "") -> dict[str, Any]:
    kind = KINDS[j % len(KINDS)]
    event: dict[str, Any] = {"event_id": f"ev{tag}-{i}-{j}", "type": kind, "customer_id": _customer(i),
                             "ts": ts + j * 1000, "category": f"cat{(i + j) % 30}"}
    if kind in ("product_view", "add_to_cart"):
        event.update(item_id=f"sku{(i * 7 + j) % 500}", price=9.5, quantity=1)
    elif kind == "purchase":
        event.update(order_id=f"ord{tag}-{i}-{j}", total=19.0, channel="web",
                     items=[{"item_id": f"sku{(i * 7) % 500}", "category": event["category"], "price": 9.5,
                             "quantity": 2}])
    elif kind == "search":
        event.update(query="shoes")
    return event


def _messages(customers: int, per_customer: int, ts: int) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """Chunks of envelopes: all the consent first, then the events (so each customer's consent is
    earlier in its partition than its events)."""
    for lo in range(0, customers, CHUNK_CUSTOMERS):
        hi = min(customers, lo + CHUNK_CUSTOMERS)
        yield envelopes([_consent(i, ts) for i in range(lo, hi)], partition_of, 500)
    for lo in range(0, customers, CHUNK_CUSTOMERS):
        hi = min(customers, lo + CHUNK_CUSTOMERS)
        yield envelopes([_event(i, j, ts) for i in range(lo, hi) for j in range(per_customer)], partition_of, 500)


async def _produce(bootstrap: str, chunks: Any) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, max_request_size=8 * 1024 * 1024)
    await producer.start()
    sent = 0
    try:
        for chunk in chunks:
            for partition, key, value in chunk:
                await producer.send(EVENTS_TOPIC, value, key=key, partition=partition)
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _wait_processed(worker: WorkerProcess, expected: int, timeout: float) -> float:
    """Block until ``expected`` events are processed and no customer is dirty; return when (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            text = _metrics(worker)
        except OSError:
            text = ""
        if text and processed_total(text) >= expected and gauge(text, "ingest_dirty_customers") == 0:
            return time.perf_counter()
        time.sleep(0.2)
    raise AssertionError(f"worker processed {processed_total(_metrics(worker))} of {expected} events "
                         f"within {timeout:.0f} s")


def _dir_bytes(path: Path) -> dict[str, int]:
    """File bytes under ``path``: total, ``.sst`` files, write-ahead logs (``.log``), the rest; and the
    bytes allocated on disk (``st_blocks``)."""
    out = {"total": 0, "sst": 0, "wal": 0, "other": 0, "allocated": 0}
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            out["total"] += st.st_size
            out["allocated"] += st.st_blocks * 512
            kind = "sst" if name.endswith(".sst") else "wal" if name.endswith(".log") else "other"
            out[kind] += st.st_size
    return out


def _table_dir(worker: WorkerProcess) -> Path:
    return worker.data_dir / f"worker-{worker.port}"  # stream/settings.py: Settings.table_dir


def _changelogs(running: Any) -> dict[str, Any]:
    """On Kafka: records in each table changelog (end minus start offsets, summed over partitions)
    and its bytes on one broker (every broker holds a replica of every partition). Not on the
    bundled broker: it misreports ListOffsets (README, "Running on your Kafka")."""
    from confluent_kafka import Consumer, TopicPartition

    nodes = getattr(running, "nodes", None)
    if not nodes:
        return {"note": "not measured on the bundled broker (ListOffsets is not reliable there)"}

    consumer = Consumer({"bootstrap.servers": bootstrap_of(running), "group.id": f"state-probe-{os.getpid()}",
                         "enable.auto.commit": False})
    out: dict[str, Any] = {}
    try:
        for table in (PROFILES_TABLE, CONSENT_TABLE):
            topic = table.changelog_topic(APP_ID)
            total = 0
            for p in range(PARTITIONS):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += high - low
            out[f"{table.name}_records"] = total
            node = next(iter(nodes.values()))
            sizes = [_dir_bytes(d) for d in (node.dir / "data").glob(f"{topic}-*")]
            # the segments (.log) only: Kafka preallocates its index files (10 MiB each, sparse)
            out[f"{table.name}_segment_bytes_one_replica"] = sum(x["wal"] for x in sizes)
            out[f"{table.name}_allocated_bytes_one_replica"] = sum(x["allocated"] for x in sizes)
    finally:
        consumer.close()
    return out


def _watch(worker: WorkerProcess, t0: float, timeout: float, partitions: int = PARTITIONS) -> dict[str, float]:
    """Poll ``worker``'s ``/health`` until it is ready holding every partition; seconds since ``t0``."""
    marks: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    everything = list(range(partitions))
    while time.monotonic() < deadline:
        status, body = worker.health()
        now = time.monotonic() - t0
        if status:
            marks.setdefault("http_s", now)
        body = body if isinstance(body, dict) else {}
        if body.get("assigned_partitions") == everything:
            marks.setdefault("assigned_s", now)
            if body.get("recovered"):
                marks.setdefault("recovered_s", now)
            if status == 200 and body.get("ready"):
                marks["ready_s"] = now
                break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no take-over within {timeout:.0f} s: {marks} {worker.log_tail(10)}")
    marks.setdefault("recovered_s", marks["ready_s"])
    marks["restore_s"] = marks["recovered_s"] - marks["assigned_s"]
    return {k: round(v, 2) for k, v in marks.items()}


def _start_watched(worker: WorkerProcess, t0: float, timeout: float) -> dict[str, float]:
    """Start ``worker`` (in a thread: ``start`` blocks until ready) and :func:`_watch` it."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            worker.start(timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    marks = _watch(worker, t0, timeout)
    thread.join(timeout=30)
    if errors:
        raise errors[0]
    return marks


def _check(worker: WorkerProcess, customers: int, expected: dict[int, int], rnd: random.Random) -> dict[str, Any]:
    """Read back a sample of customers (every partition): each must count its events exactly."""
    sample = sorted(rnd.sample(range(customers), min(SAMPLE, customers)))
    wrong = []
    for i in sample:
        status, body = worker.client.request("GET", f"/v1/customers/{_customer(i)}")
        n = (body.get("profile") or {}).get("n_events", 0) if status == 200 else -status
        if n != expected.get(i, EVENTS_PER_CUSTOMER):
            wrong.append((_customer(i), n))
    return {"sampled": len(sample), "wrong": len(wrong), "wrong_examples": wrong[:5]}


def _standby_caught_up(worker: WorkerProcess, timeout: float) -> float:
    """Wait until ``worker`` is idle (< 5 % of a core over 3 s) and its table dir stopped growing."""
    started = time.monotonic()
    last = -1
    while time.monotonic() - started < timeout:
        cpu0, size0 = cpu_s(worker.proc.pid), _dir_bytes(_table_dir(worker))["total"]
        time.sleep(3.0)
        cpu1, size1 = cpu_s(worker.proc.pid), _dir_bytes(_table_dir(worker))["total"]
        if (cpu1 - cpu0) / 3.0 < 0.05 and size1 == size0 == last:
            return time.monotonic() - started
        last = size1
    raise AssertionError(f"standby copies still moving after {timeout:.0f} s")


def _per_customer(value: float, customers: int) -> float:
    return round(value / customers, 1)


def run(quick: bool = False, broker: str = "kafka") -> dict[str, Any]:
    customers = 20_000 if quick else 1_000_000
    tail = 2_000 if quick else TAIL_EVENTS
    timeout = 300.0 if quick else 2400.0
    rnd = random.Random(13)  # noqa: S311 - a reproducible sample, not a secret
    ts = int(time.time() * 1000) - 3_600_000
    expected: dict[int, int] = {}
    results: dict[str, Any] = {}
    env = {"OFFERSTREAM_WRITE_BEHIND": "1"}
    with tempfile.TemporaryDirectory(prefix="offerstream-state-") as tmp, \
            running_broker(broker, Path(tmp) / "broker") as running:
        root = Path(tmp)
        bootstrap = bootstrap_of(running)
        brokers = broker_pids(running)
        a = WorkerProcess(running.url, root / "a", app_id=APP_ID, partitions=PARTITIONS, env=env)
        c = WorkerProcess(running.url, root / "c", app_id=APP_ID, partitions=PARTITIONS, env=env)
        b = WorkerProcess(running.url, root / "b", app_id=APP_ID, partitions=PARTITIONS, env=env)
        try:
            # 1. load ----------------------------------------------------------------------------
            a.start(timeout=180)
            wait_until(lambda: group_settled([a], PARTITIONS), timeout=120, what="worker A to hold every partition")
            time.sleep(2.0)
            rss0, disk0 = rss_bytes(a.proc.pid), _dir_bytes(_table_dir(a))
            total = customers * (1 + EVENTS_PER_CUSTOMER)
            cpu0, bcpu0 = cpu_s(a.proc.pid), cpu_s(brokers)
            started = time.perf_counter()
            messages = asyncio.run(_produce(bootstrap, _messages(customers, EVENTS_PER_CUSTOMER, ts)))
            produced_s = time.perf_counter() - started
            durable_at = _wait_processed(a, total, timeout)
            load_s = durable_at - started
            worker_cpu, broker_cpu = cpu_s(a.proc.pid) - cpu0, cpu_s(brokers) - bcpu0
            time.sleep(5.0)  # let RocksDB and the allocator settle
            rss1, disk1 = rss_bytes(a.proc.pid), _dir_bytes(_table_dir(a))
            archive = _dir_bytes(a.data_dir / "archive")
            profile_sample = a.client.json("GET", f"/v1/customers/{_customer(0)}").get("profile")
            results["load"] = {
                "customers": customers, "events_per_customer": EVENTS_PER_CUSTOMER, "events": total,
                "messages": messages, "produce_s": round(produced_s, 1), "durable_s": round(load_s, 1),
                "events_per_s": round(total / load_s, 1),
                "worker_cpu_us_per_event": round(worker_cpu / total * 1e6, 2),
                "broker_cpu_us_per_event": round(broker_cpu / total * 1e6, 2),
                "example_profile": profile_sample,
            }
            results["memory"] = {
                "rss_before_mb": round(rss0["rss"] / 2**20, 1), "rss_after_mb": round(rss1["rss"] / 2**20, 1),
                "rss_peak_mb": round(rss1["peak"] / 2**20, 1),
                "rss_bytes_per_customer": _per_customer(rss1["rss"] - rss0["rss"], customers),
                "peak_bytes_per_customer": _per_customer(rss1["peak"] - rss0["rss"], customers),
            }
            results["disk"] = {
                "rocksdb_bytes": disk1, "rocksdb_bytes_per_customer": _per_customer(
                    disk1["total"] - disk0["total"], customers),
                "rocksdb_sst_bytes_per_customer": _per_customer(disk1["sst"] - disk0["sst"], customers),
                "rocksdb_wal_bytes_per_customer": _per_customer(disk1["wal"] - disk0["wal"], customers),
                "archive_bytes": archive["total"],
                "archive_bytes_per_customer": _per_customer(archive["total"], customers),
                "changelogs": _changelogs(running),
            }
            expected = {}

            # 2. cold: SIGKILL A, an empty worker restores every partition from the changelog ----
            a.stop(sig=signal.SIGKILL)
            t0 = time.monotonic()
            cold = _start_watched(c, t0, timeout)
            cold["check"] = _check(c, customers, expected, rnd)
            cold["rss_after_mb"] = round(rss_bytes(c.proc.pid)["rss"] / 2**20, 1)
            cold["rocksdb_bytes_per_customer"] = _per_customer(_dir_bytes(_table_dir(c))["total"], customers)
            cold["customers_restored"] = customers
            results["cold"] = cold

            # 3. warm: a tail of events, SIGKILL C, C again on its own data dir ----------------
            tail_ids = [rnd.randrange(customers) for _ in range(tail)]
            tail_events = [_event(i, EVENTS_PER_CUSTOMER + n, ts, tag="t") for n, i in enumerate(tail_ids)]
            for i in tail_ids:
                expected[i] = expected.get(i, EVENTS_PER_CUSTOMER) + 1
            base = processed_total(_metrics(c))
            asyncio.run(_produce(bootstrap, [envelopes(tail_events, partition_of, 500)]))
            _wait_processed(c, base + tail, timeout)
            c.stop(sig=signal.SIGKILL)
            t0 = time.monotonic()
            c = WorkerProcess(running.url, root / "c", app_id=APP_ID, partitions=PARTITIONS, env=env, port=c.port)
            warm = _start_watched(c, t0, timeout)
            warm["check"] = _check(c, customers, expected, rnd)
            warm["tail_events"] = tail
            results["warm"] = warm

            # 4. scale-out (B restores its half from the changelog), then standby take-over -----
            t0 = time.monotonic()
            b.start(timeout=timeout)
            wait_until(lambda: group_settled([b, c], PARTITIONS), timeout=timeout, interval=0.2,
                       what="B and C sharing the partitions")
            settled_s = time.monotonic() - t0
            b_parts = b.health()[1]["assigned_partitions"]
            results["scale_out"] = {"settled_s": round(settled_s, 2), "b_partitions": b_parts,
                                    "customers_restored_about": customers * len(b_parts) // PARTITIONS}
            standby_wait = _standby_caught_up(b, timeout)
            results["scale_out"]["standby_caught_up_after_s"] = round(settled_s + standby_wait, 1)
            results["scale_out"]["b_rocksdb_bytes"] = _dir_bytes(_table_dir(b))["total"]
            c_parts = c.health()[1]["assigned_partitions"]
            c.stop(sig=signal.SIGKILL)
            t0 = time.monotonic()
            standby = _watch(b, t0, timeout)
            standby["check"] = _check(b, customers, expected, rnd)
            standby["partitions_taken_over"] = c_parts
            standby["customers_taken_over_about"] = customers * len(c_parts) // PARTITIONS
            results["standby"] = standby
        finally:
            for w in (b, c, a):
                w.stop()
    ok = [results[k]["check"]["wrong"] for k in ("cold", "warm", "standby")]
    return {
        "name": result_name("state", broker),
        "settings": {"quick": quick, "broker": broker, "partitions": PARTITIONS, "customers": customers,
                     "events_per_customer": EVENTS_PER_CUSTOMER, "tail_events": tail,
                     "table_standby_replicas": 1, "write_behind": True,
                     "kafka_jvm_opts": os.environ.get("OFFERSTREAM_KAFKA_JVM_OPTS", "")},
        "results": results,
        "targets": [
            target("customers read back wrong after the take-overs", sum(ok), 0, "customers"),
            target("standby take-over ready (s) vs cold restore ready (s)", results["standby"]["ready_s"],
                   results["cold"]["ready_s"], "s"),
        ],
    }


def main() -> None:
    cli(run, __doc__.splitlines()[0], default_broker="kafka")


if __name__ == "__main__":
    main()
