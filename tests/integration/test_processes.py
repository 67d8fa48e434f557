"""``offerstream serve --processes 2``: two worker processes of one host behind one port (issue 17).

Each process owns some partitions and listens on its own port and on the shared one
(``SO_REUSEPORT``). What a client sends to the shared port must behave as with one worker: events
from an outside producer land in the right profile, a consent change governs every answer
whichever process gives it, an erasure removes the customer from both processes and from every
archive file, a killed process is started again with its state, and a restart of the embedded
default restores everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from offerstream.client import ApiClient
from tests.integration.workers import REPO, free_run, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMERS = [f"mp-{i}" for i in range(24)]


class Host:
    """``offerstream serve --processes 2`` in a process group of its own."""

    def __init__(self, data_dir: Path, broker_url: str | None, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.log_path = data_dir.parent / f"host-{time.monotonic_ns()}.log"
        broker = ["--broker", broker_url] if broker_url else []
        env = {**os.environ, "OFFERSTREAM_APP_ID": f"mp-{port}", "OFFERSTREAM_HASH_KEY": "test-hash-key",
               "OFFERSTREAM_LOG_LEVEL": "WARNING"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "offerstream.cli", "serve", "--processes", "2", *broker,
                 "--port", str(port), "--data-dir", str(data_dir), "--partitions", str(PARTITIONS)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.shared = ApiClient(f"http://127.0.0.1:{port}")
        self.own = [ApiClient(f"http://127.0.0.1:{port + i}") for i in (1, 2)]

    def log(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def health(self, client: ApiClient) -> dict[str, Any]:
        try:
            status, body = client.request("GET", "/health")
        except OSError:
            return {}
        return body if status == 200 else {}

    def settled(self) -> bool:
        """Both ready, holding disjoint partitions that cover all."""
        assert self.proc.poll() is None, self.log()
        reports = [self.health(c) for c in self.own]
        held = [set(r.get("assigned_partitions", [])) for r in reports]
        return (all(r.get("ready") for r in reports) and all(held) and not held[0] & held[1]
                and len(held[0] | held[1]) == PARTITIONS)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],  # noqa: S603, S607
                             capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> list[int]:
        """SIGTERM to the host, as an operator would; the worker pids still alive after it exits."""
        workers = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        alive = [pid for pid in workers if _alive(pid)]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        return alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def host_on_broker(broker: Any, tmp_path: Path) -> Iterator[tuple[Host, str]]:
    host = Host(tmp_path / "data", broker.url, free_run(3))
    alive: list[int] = []
    try:
        wait_until(host.settled, timeout=180, what="both worker processes ready")
        yield host, broker.bootstrap
    finally:
        alive = host.stop()
    assert not alive, "worker processes outlived the host"


def _events(customer: str, n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"event_id": f"{customer}-{i}", "type": "add_to_cart", "customer_id": customer, "ts": now - 60_000 + i,
             "item_id": f"sku-{i}", "category": "shoes", "price": 10.0 + i} for i in range(n)]


def _n_events(client: ApiClient, customer: str) -> int:
    status, body = client.request("GET", f"/v1/customers/{customer}")
    return ((body or {}).get("profile") or {}).get("n_events", 0) if status == 200 else -1


def _build(host: Host, bootstrap: str) -> None:
    """Offers and consent through the shared port; events from confluent-kafka, one per message."""
    host.shared.json("PUT", "/v1/offers/shoes-10", {"title": "10% shoes", "category": "shoes",
                                                   "kind": "discount", "discount_pct": 10})
    for customer in CUSTOMERS:
        host.shared.json("PUT", f"/v1/customers/{customer}/consent", {"flags": {"profile": True, "personalize": True}})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})  # its default partitioner
    for customer in CUSTOMERS:
        for event in _events(customer, 3):
            producer.produce("events", orjson.dumps(event), key=customer.encode())
    assert producer.flush(60) == 0
    wait_until(lambda: all(_n_events(host.shared, c) == 3 for c in CUSTOMERS), timeout=90,
               what="every profile built from the outside producer's events")


def test_two_processes_behind_one_port_behave_as_one_worker(host_on_broker: tuple[Host, str]) -> None:
    host, bootstrap = host_on_broker
    _build(host, bootstrap)
    # the kernel spreads new connections over both processes; each forwards what the other owns
    answered_by = {tuple(host.health(host.shared).get("assigned_partitions", [])) for _ in range(40)}
    assert len(answered_by) == 2, answered_by
    assert sum(_forwarded(c) for c in host.own) > 0

    # consent: a revocation through the shared port governs every later answer, from either process
    revoked = CUSTOMERS[0]
    host.shared.json("PUT", f"/v1/customers/{revoked}/consent", {"flags": {"personalize": False}})
    for _ in range(30):
        answer = host.shared.json("POST", "/v1/score", {"customer_id": revoked, "k": 3})
        assert answer["personalized"] is False and answer["consent_basis"]["flags"]["personalize"] is False

    # erasure: gone from both processes, and from every archive file of the host
    gone = CUSTOMERS[1]
    host.shared.json("DELETE", f"/v1/customers/{gone}")
    for client in host.own:
        assert client.request("GET", f"/v1/customers/{gone}")[0] == 404
    archived = b"".join(p.read_bytes() for p in (host.data_dir / "archive").glob("*/part-*.jsonl"))
    assert orjson.dumps(gone) not in archived and orjson.dumps(CUSTOMERS[2]) in archived

    # a killed process is started again by the host, with its state
    victim = host.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in host.worker_pids() and len(host.worker_pids()) == 2, timeout=30,
               what="the killed process started again")
    wait_until(host.settled, timeout=180, what="both processes ready after the restart")
    assert all(_n_events(host.shared, c) == 3 for c in CUSTOMERS[2:])
    assert host.shared.request("GET", f"/v1/customers/{gone}")[0] == 404


def _forwarded(client: ApiClient) -> float:
    _, text = client.request("GET", "/metrics")
    for line in str(text).splitlines():
        if line.startswith("offerstream_requests_forwarded_total "):
            return float(line.split()[1])
    return 0.0


def test_a_restart_of_the_embedded_default_with_two_processes_restores_everything(tmp_path: Path) -> None:
    port = free_run(3)
    host = Host(tmp_path / "data", None, port)
    try:
        wait_until(host.settled, timeout=180, what="both worker processes ready")
        bootstrap = wait_until(lambda: next((line.split(" on ")[1].split()[0] for line in host.log().splitlines()
                                             if "embedded broker on" in line), None), what="the broker's address")
        _build(host, bootstrap)
        host.shared.json("DELETE", f"/v1/customers/{CUSTOMERS[0]}")
    finally:
        assert not host.stop(), "worker processes outlived the host"
    again = Host(tmp_path / "data", None, port)
    try:
        wait_until(again.settled, timeout=180, what="both worker processes ready after the restart")
        assert all(again.health(c)["archive_restored"] for c in again.own)
        assert all(_n_events(again.shared, c) == 3 for c in CUSTOMERS[1:])
        assert again.shared.request("GET", f"/v1/customers/{CUSTOMERS[0]}")[0] == 404
        offers = {o["offer_id"] for o in again.shared.json("GET", "/v1/offers")["offers"]}
        assert offers == {"shoes-10"}
    finally:
        assert not again.stop(), "worker processes outlived the host"


def test_a_worker_that_keeps_failing_at_its_start_stops_the_host(tmp_path: Path) -> None:
    """A wrong setting (here: no broker at --broker) does not make the host restart workers for ever."""
    port = free_run(3)
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "offerstream.cli", "serve", "--processes", "2", "--port", str(port),
         "--broker", f"kafka://127.0.0.1:{free_run(1)}", "--data-dir", str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "OFFERSTREAM_HASH_KEY": "test-hash-key"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "exited 3 times within 15 s of its start; stopping every worker" in result.stderr
    assert "no broker answered at 127.0.0.1" in result.stderr  # each worker's own reason
    assert "worker process" in result.stderr and "exited with code 1" in result.stderr


def test_processes_must_be_at_least_one(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "offerstream.cli", "serve", "--processes", "0", "--data-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--processes must be at least 1, not 0" in result.stderr
