"""Real worker processes for integration tests: ``python -m offerstream.cli serve`` on a free port."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from offerstream.client import ApiClient
from stream.embedded.host import free_port
from stream.embedded.process import EmbeddedBroker

__all__ = ["BROKER_KINDS", "WorkerProcess", "free_run", "worker_with_offers", "wait_until", "group_settled",
           "worker_group", "broker_and_workers", "running_broker"]

#: The brokers the integration tests run on (``tests/conftest.py``'s ``broker`` fixture).
BROKER_KINDS = ("tansu", "kafka")

REPO = Path(__file__).resolve().parents[2]


def free_run(count: int) -> int:
    """A port ``p`` with ``p`` .. ``p + count - 1`` all free a moment ago (``serve --processes``
    takes ``--port`` and the ports after it)."""
    for _ in range(200):
        base = random.randint(20_000, 40_000)  # noqa: S311 (not a secret)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no run of {count} free ports")


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")


def group_settled(workers: list[WorkerProcess], partitions: int = 4) -> bool:
    """True when every worker is ready and they hold disjoint partition sets covering all."""
    reports = [w.health()[1] or {} for w in workers]
    held = [set(r.get("assigned_partitions", [])) for r in reports]
    union: set[int] = set().union(*held)
    return (all(r.get("ready") for r in reports) and all(held)
            and sum(len(h) for h in held) == len(union) == partitions)


class WorkerProcess:
    """One ``offerstream serve`` worker in its own process and data directory."""

    def __init__(self, broker_url: str | None, data_dir: Path, *, app_id: str, registry: Path | None = None,
                 partitions: int = 4, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"worker-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        if registry is not None and not (data_dir / "models").exists():
            shutil.copytree(registry, data_dir / "models")
        self.env = {**os.environ, "OFFERSTREAM_APP_ID": app_id, "OFFERSTREAM_LOG_LEVEL": "WARNING",
                    "OFFERSTREAM_HASH_KEY": "test-hash-key", **(env or {})}
        broker = ["--broker", broker_url] if broker_url else []  # None: the embedded default
        self.cmd = [sys.executable, "-m", "offerstream.cli", "serve", *broker,
                    "--port", str(self.port), "--data-dir", str(data_dir), "--partitions", str(partitions)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = ApiClient(self.url, api_key=self.env.get("OFFERSTREAM_API_KEY"),
                                score_key=self.env.get("OFFERSTREAM_SCORE_KEY"))

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the process and wait until ``/health`` says ready."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=log,  # noqa: S603
                                     stderr=subprocess.STDOUT)
        log.close()
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
            if self.health()[0] == 200:
                self.ready_after = time.monotonic() - started
                return self
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout} s: {self.log_tail()}")

    def health(self) -> tuple[int, Any]:
        """``GET /health`` (status 0 if the server does not answer yet)."""
        try:
            return self.client.request("GET", "/health")
        except OSError:
            return 0, None

    def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics`` (0 if absent)."""
        _, text = self.client.request("GET", "/metrics")
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def log_tail(self, lines: int = 40) -> str:
        """The end of the worker's output, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop the worker (SIGTERM, then SIGKILL if it does not exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def running_broker(kind: str, workdir: Path) -> Iterator[Any]:
    """A started broker of ``kind`` with its files in ``workdir``; stopped after.

    ``tansu``: the bundled broker (:class:`stream.embedded.process.EmbeddedBroker`); ``kafka``: a
    3-broker Apache Kafka cluster (:class:`tests.kafka_cluster.KafkaCluster`). Both have ``url``
    (for ``--broker``) and ``bootstrap`` (for Kafka clients). A broker that cannot start fails the
    test with why; it is never skipped.
    """
    import pytest

    from tests.kafka_cluster import KafkaCluster

    if kind not in BROKER_KINDS:
        raise ValueError(f"broker kind must be one of {BROKER_KINDS}, not {kind!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    running: Any = (EmbeddedBroker(log_path=workdir / "tansu.log") if kind == "tansu"
                    else KafkaCluster(workdir / "cluster", brokers=3))
    try:
        running.start(timeout=30.0 if kind == "tansu" else 120.0)
    except (RuntimeError, TimeoutError) as exc:
        running.stop()
        pytest.fail(f"the {kind} broker did not start: {exc}", pytrace=False)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def broker_and_workers(n_workers: int = 1, *, app_id: str = "bench", registry: Path | None = None,
                       partitions: int = 4, env: dict[str, str] | None = None,
                       settle_timeout: float = 90.0, broker: str = "tansu") -> Iterator[tuple[Any, list[Any]]]:
    """A fresh broker of kind ``broker`` (:func:`running_broker`) plus ``n_workers`` real
    ``offerstream serve`` processes in one group; yields ``(broker, workers)``.

    The workers are started and the group holds disjoint, complete partition sets before it
    yields. Everything is stopped after.
    """
    with tempfile.TemporaryDirectory(prefix=f"offerstream-{app_id}-") as tmp:
        root = Path(tmp)
        with running_broker(broker, root / "broker") as running:
            workers = [WorkerProcess(running.url, root / f"w{i}", app_id=app_id, registry=registry,
                                     partitions=partitions, env=env) for i in range(n_workers)]
            try:
                for w in workers:
                    w.start(timeout=60.0 if broker == "tansu" else 180.0)
                wait_until(lambda: group_settled(workers, partitions), timeout=settle_timeout, interval=0.3,
                           what=f"a group of {n_workers} worker(s) to settle")
                yield running, workers
            finally:
                for w in reversed(workers):
                    w.stop()


@contextmanager
def worker_group(n_workers: int = 1, *, app_id: str = "bench", registry: Path | None = None,
                 partitions: int = 4, env: dict[str, str] | None = None,
                 settle_timeout: float = 90.0, broker: str = "tansu") -> Iterator[list[Any]]:
    """:func:`broker_and_workers`, yielding only the workers."""
    with broker_and_workers(n_workers, app_id=app_id, registry=registry, partitions=partitions, env=env,
                            settle_timeout=settle_timeout, broker=broker) as (_, workers):
        yield workers


@contextmanager
def worker_with_offers(broker_url: str, data_dir: Path, offers: dict[str, dict[str, Any]], *, app_id: str,
                       registry: Path | None = None, env: dict[str, str] | None = None) -> Iterator[WorkerProcess]:
    """A started worker with ``offers`` (id -> body) put in its catalogue; stopped after."""
    worker = WorkerProcess(broker_url, data_dir, app_id=app_id, registry=registry, env=env).start()
    try:
        for offer_id, offer in offers.items():
            worker.client.json("PUT", f"/v1/offers/{offer_id}", offer)
        yield worker
    finally:
        worker.stop()
