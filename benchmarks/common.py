"""Helpers shared by the benchmarks: percentiles, a worker group on either broker, results.

Every benchmark module has ``run(quick: bool = False[, broker: str = "tansu"]) -> dict`` returning::

    {"name": str, "settings": {...}, "results": {...},
     "targets": [{"metric": str, "value": float, "target": float, "unit": str, "pass": bool}]}

and ``main()`` for ``python -m benchmarks.<name> [--quick] [--broker tansu|kafka|both]``, which
prints :func:`print_report` and writes the JSON with :func:`write_results` to
``benchmarks/results/<name>.json`` (``<name>-kafka.json`` for a run on the Apache Kafka cluster).

Brokers: ``tansu`` is the bundled broker (one process); ``kafka`` a 3-broker Apache Kafka 4.4
cluster in KRaft mode on loopback (:class:`tests.kafka_cluster.KafkaCluster`, replication 3,
``min.insync.replicas`` 2, producers with acks=all). Its JVMs run with the full JIT here
(``OFFERSTREAM_KAFKA_JVM_OPTS`` empty unless set): the tests' C1-only default starts faster but is
not what a broker runs in production. Broker CPU on Kafka is the sum over its three JVMs.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

# Before tests.kafka_cluster is imported (it reads this once): the full JIT for measured brokers.
os.environ.setdefault("OFFERSTREAM_KAFKA_JVM_OPTS", "")

from tests.integration.workers import (  # noqa: E402
    WorkerProcess,
    broker_and_workers,
    running_broker,  # noqa: F401 - re-exported for the benchmarks
    worker_group,  # noqa: F401 - re-exported for the benchmarks
)

__all__ = [
    "RESULTS_DIR",
    "percentile",
    "summarize",
    "target",
    "worker_group",
    "broker_group",
    "running_broker",
    "BROKERS",
    "broker_pids",
    "bootstrap_of",
    "cpu_s",
    "rss_bytes",
    "result_name",
    "write_results",
    "print_report",
    "cli",
    "synthetic_events",
    "envelopes",
    "machine",
]

EVENT_TYPES_MIX = ("page_view", "product_view", "product_view", "add_to_cart", "search", "page_view",
                   "offer_impression", "purchase", "offer_click")

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: The brokers a benchmark can run on: the bundled one, and a 3-broker Apache Kafka cluster.
BROKERS = ("tansu", "kafka")


def result_name(name: str, broker: str) -> str:
    """The results name of benchmark ``name`` on ``broker``: ``name`` on the bundled broker (as
    before there was a choice), ``name-kafka`` on the Apache Kafka cluster."""
    return name if broker == "tansu" else f"{name}-{broker}"


def broker_group(n_workers: int = 1, *, broker: str = "tansu", app_id: str = "bench", registry: Path | None = None,
                 partitions: int = 4, env: dict[str, str] | None = None,
                 settle_timeout: float = 120.0) -> contextlib.AbstractContextManager[tuple[Any, list[WorkerProcess]]]:
    """A fresh broker of kind ``broker`` plus ``n_workers`` real ``offerstream serve`` processes in one
    group (``tests.integration.workers.broker_and_workers``); yields ``(running_broker, workers)``
    so a benchmark can read the broker's bootstrap list and process ids."""
    if broker not in BROKERS:
        raise ValueError(f"broker must be one of {BROKERS}, not {broker!r}")
    return broker_and_workers(n_workers, app_id=app_id, registry=registry, partitions=partitions, env=env,
                              settle_timeout=settle_timeout, broker=broker)


def bootstrap_of(running: Any) -> str:
    """``host:port[,host:port...]`` of a running broker (for Kafka clients)."""
    return str(running.bootstrap)


def broker_pids(running: Any) -> list[int]:
    """The process ids of a running broker: the bundled broker's one, or each Kafka node's JVM."""
    nodes = getattr(running, "nodes", None)
    if nodes:  # tests.kafka_cluster.KafkaCluster
        return [n.pid for n in nodes.values() if n.pid is not None]
    pid = getattr(running, "pid", None)
    return [pid] if pid else []


def cpu_s(pids: int | Sequence[int]) -> float:
    """User + system CPU seconds (all threads) of one process or the sum over several; NaN if unreadable."""
    total = 0.0
    for pid in [pids] if isinstance(pids, int) else pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_bytes(pid: int) -> dict[str, int]:
    """``rss`` (VmRSS) and ``peak`` (VmHWM) of a process in bytes, from ``/proc/<pid>/status``."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss" if line.startswith("VmRSS") else "peak"] = int(line.split()[1]) * 1024
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """``n, mean, p50, p90, p99, max`` of a sample, rounded."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), digits),
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
    }


def target(metric: str, value: float, limit: float, unit: str, *, at_most: bool = True) -> dict[str, Any]:
    """One target row: ``value <= limit`` (or ``>=`` with ``at_most=False``)."""
    ok = value <= limit if at_most else value >= limit
    return {"metric": metric, "value": value, "target": limit, "unit": unit,
            "comparison": "<=" if at_most else ">=", "pass": bool(ok)}


def write_results(result: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``result`` (plus host facts) to ``<directory>/<name>.json``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {**result, "host": machine(),
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = directory / f"{result['name']}.json"
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_report(result: dict[str, Any], out: Callable[[str], Any] = print) -> None:
    """A readable table of settings, results (flattened) and targets."""
    out(f"== benchmark: {result['name']} ==")
    out("settings: " + ", ".join(f"{k}={v}" for k, v in result.get("settings", {}).items()))

    def flat(prefix: str, obj: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from flat(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            yield prefix, obj

    rows = list(flat("", result.get("results", {})))
    width = max((len(k) for k, _ in rows), default=10)
    for key, value in rows:
        out(f"  {key:<{width}}  {_fmt(value)}")
    if result.get("targets"):
        out("targets:")
        for t in result["targets"]:
            mark = "PASS" if t["pass"] else "FAIL"
            out(f"  [{mark}] {t['metric']}: {_fmt(t['value'])} {t['unit']} "
                f"(target {t.get('comparison', '<=')} {_fmt(t['target'])} {t['unit']})")


def takes_broker(run: Callable[..., Any]) -> bool:
    """Whether a benchmark's ``run`` has a ``broker`` parameter (the broker-free ones do not)."""
    return "broker" in inspect.signature(run).parameters


def brokers_of(choice: str) -> list[str]:
    """``tansu``, ``kafka`` or ``both`` as a list of broker kinds."""
    return list(BROKERS) if choice == "both" else [choice]


def cli(run: Callable[..., dict[str, Any]], description: str, default_broker: str = "tansu") -> list[dict[str, Any]]:
    """Parse ``--quick`` and ``--broker``, run (once per broker), print each report, write each
    JSON; return the results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    if takes_broker(run):
        parser.add_argument("--broker", choices=(*BROKERS, "both"), default=default_broker,
                            help=f"tansu: the bundled broker; kafka: a 3-broker Apache Kafka cluster; "
                                 f"both: one after the other (default {default_broker})")
    args = parser.parse_args()
    results = []
    for broker in brokers_of(getattr(args, "broker", "tansu")):
        result = run(quick=args.quick, broker=broker) if takes_broker(run) else run(quick=args.quick)
        if args.quick:  # a smoke run never overwrites the full results
            result = {**result, "name": f"{result['name']}-quick"}
        print_report(result)
        path = write_results(result)
        print(f"results written to {path}")
        results.append(result)
    return results


def synthetic_events(n: int, customers: int = 10_000, *, seed: int = 1, start_ms: int | None = None,
                     step_ms: int = 10, prefix: str = "e") -> list[dict[str, Any]]:
    """``n`` valid contract events over ``customers`` customers (browsing-heavy shop mix)."""
    import random

    rnd = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not a secret
    now = start_ms if start_ms is not None else int(time.time() * 1000) - n * step_ms
    out = []
    for i in range(n):
        kind = EVENT_TYPES_MIX[rnd.randrange(len(EVENT_TYPES_MIX))]
        event: dict[str, Any] = {"event_id": f"{prefix}{i}", "type": kind,
                                 "customer_id": f"c{rnd.randrange(customers)}",
                                 "ts": now + i * step_ms, "category": f"cat{rnd.randrange(30)}"}
        if kind in ("product_view", "add_to_cart"):
            event.update(item_id=f"sku{rnd.randrange(500)}", price=9.5, quantity=1)
        elif kind in ("offer_impression", "offer_click"):
            event.update(offer_id=f"o{rnd.randrange(200)}", decision_id=f"d{i}", position=1, propensity=0.2)
        elif kind == "purchase":
            event.update(order_id=f"ord{i}", total=19.0, channel="web",
                         items=[{"item_id": f"sku{rnd.randrange(500)}", "category": event["category"],
                                 "price": 9.5, "quantity": 2}])
        out.append(event)
    return out


def envelopes(events: Sequence[dict[str, Any]], partition_of: Callable[[str], int],
              size: int = 500) -> list[tuple[int, bytes, bytes]]:
    """Group events by their customer's partition into JSON-array envelopes (order kept).

    Returns ``(partition, key, value)``; the key is the first event's customer id.
    """
    by_partition: dict[int, list[dict[str, Any]]] = {}
    out: list[tuple[int, bytes, bytes]] = []
    for event in events:
        batch = by_partition.setdefault(partition_of(event["customer_id"]), [])
        batch.append(event)
        if len(batch) >= size:
            out.append((partition_of(event["customer_id"]), batch[0]["customer_id"].encode(), orjson.dumps(batch)))
            batch.clear()
    for partition, batch in by_partition.items():
        if batch:
            out.append((partition, batch[0]["customer_id"].encode(), orjson.dumps(batch)))
    return out


def machine() -> dict[str, Any]:
    """A description of the machine the numbers came from."""
    import os

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = math.nan
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "release": platform.release(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}
