"""offerstream through a SASL_SSL listener of a real 3-broker Apache Kafka cluster (issue 13, item 4).

``KafkaCluster(sasl_ssl=True)`` makes its own CA and server certificate and a user with PLAIN and
SCRAM-SHA-256/512 credentials. On it:

- ``offerstream topics`` creates every topic as that user over PLAIN;
- a worker authenticating with SCRAM-SHA-512 over TLS detects Apache Kafka, becomes ready, and a
  consent call, an event (over HTTP, and one more by ``offerstream produce`` with SCRAM-SHA-256)
  and a score call reach the profile and the decision;
- the password appears nowhere in the worker's output, ``/health`` or ``/metrics``;
- a wrong password and an untrusted CA each make ``offerstream serve`` exit non-zero with one
  line naming what to check, within seconds, not a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import orjson
import pytest

from tests.integration.workers import REPO, WorkerProcess, wait_until
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration

#: What a failed start may take, end to end (the CLI bounds the first connection to 10 s).
FAIL_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(tmp_path_factory.mktemp("kafka") / "cluster", brokers=3, sasl_ssl=True) as running:
        yield running


def _url(cluster: KafkaCluster) -> str:
    return ",".join(f"kafka://{address}" for address in cluster.sasl_ssl_bootstrap.split(","))


def _env(cluster: KafkaCluster, mechanism: str, **changes: str) -> dict[str, str]:
    assert cluster.security is not None
    env = {"OFFERSTREAM_BROKER_SECURITY_PROTOCOL": "SASL_SSL", "OFFERSTREAM_BROKER_SASL_MECHANISM": mechanism,
           "OFFERSTREAM_BROKER_USER": cluster.security.username,
           "OFFERSTREAM_BROKER_PASSWORD": cluster.security.password,
           "OFFERSTREAM_BROKER_CA_FILE": str(cluster.security.ca_file)}
    env.update(changes)
    return env


def _cli(cluster: KafkaCluster, tmp: Path, env: dict[str, str], *argv: str,
         timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "offerstream.cli", *argv, "--broker", _url(cluster), "--data-dir", str(tmp)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OFFERSTREAM_APP_ID": "sec",
             "OFFERSTREAM_HASH_KEY": "k", **env})
    return done, time.monotonic() - started


def test_topics_are_created_as_a_plain_user_over_tls(cluster: KafkaCluster, tmp_path: Path) -> None:
    done, _ = _cli(cluster, tmp_path, _env(cluster, "PLAIN"), "topics")
    assert done.returncode == 0, done.stderr
    assert "created  events" in done.stdout and "created  sec-profiles-changelog" in done.stdout
    checked, _ = _cli(cluster, tmp_path, _env(cluster, "SCRAM-SHA-256"), "topics", "--check")
    assert checked.returncode == 0 and "missing" not in checked.stdout, checked


def test_a_worker_walks_over_sasl_ssl_with_scram(cluster: KafkaCluster, tmp_path: Path) -> None:
    assert cluster.security is not None
    password = cluster.security.password
    worker = WorkerProcess(_url(cluster), tmp_path / "w", app_id="secw",
                           env={**_env(cluster, "SCRAM-SHA-512"), "OFFERSTREAM_LOG_LEVEL": "INFO"})
    try:
        worker.start(timeout=120)
        log = worker.log_path.read_text()
        assert "broker kind kafka" in log
        worker.client.json("PUT", "/v1/offers/shoes-10", {"title": "10% off shoes", "category": "shoes",
                                                          "kind": "discount", "discount_pct": 10})
        flags = {"profile": True, "personalize": True, "marketing": True}
        worker.client.json("PUT", "/v1/customers/sec-1/consent", {"flags": flags})
        event = {"event_id": "sec-ev-1", "type": "product_view", "customer_id": "sec-1",
                 "ts": int(time.time() * 1000), "item_id": "sku-1", "category": "shoes", "price": 40.0}
        assert worker.client.json("POST", "/v1/events", [event], expect=202) == {"accepted": 1, "rejected": []}

        def n_events() -> int:
            status, body = worker.client.request("GET", "/v1/customers/sec-1")
            return (body.get("profile") or {}).get("n_events", 0) if status == 200 else 0

        wait_until(lambda: n_events() == 1, timeout=60, interval=0.3, what="the event in the profile")
        # a second event through `offerstream produce` (aiokafka producer, SCRAM-SHA-256)
        events = tmp_path / "events.jsonl"
        events.write_text(orjson.dumps({**event, "event_id": "sec-ev-2"}).decode() + "\n")
        produced = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "offerstream.cli", "produce", str(events), "--broker", _url(cluster)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_env(cluster, "SCRAM-SHA-256")})
        assert produced.returncode == 0 and "produced 1 events" in produced.stdout, produced
        wait_until(lambda: n_events() == 2, timeout=60, interval=0.3, what="the produced event in the profile")
        answer = worker.client.json("POST", "/v1/score", {"customer_id": "sec-1", "k": 3})
        assert answer["personalized"] is True and answer["consent_basis"]["flags"]["profile"] is True
        assert answer["offers"][0]["offer_id"] == "shoes-10"

        health = worker.client.request("GET", "/health")[1]
        metrics = worker.client.request("GET", "/metrics")[1]
        assert health["ready"] and health["broker_reachable"]
        for shown in (str(health), str(metrics), worker.log_path.read_text()):
            assert password not in shown
    finally:
        worker.stop()
    assert password not in worker.log_path.read_text()


@pytest.mark.parametrize(("change", "reason"), [
    ({"OFFERSTREAM_BROKER_PASSWORD": "not-the-password"}, "OFFERSTREAM_BROKER_PASSWORD"),
    ({"OFFERSTREAM_BROKER_CA_FILE": certifi.where()}, "OFFERSTREAM_BROKER_CA_FILE"),
], ids=["wrong-password", "untrusted-ca"])
def test_refused_credentials_stop_serve_at_once(cluster: KafkaCluster, tmp_path: Path,
                                                change: dict[str, str], reason: str) -> None:
    assert cluster.security is not None
    done, seconds = _cli(cluster, tmp_path, _env(cluster, "SCRAM-SHA-512", **change), "serve", "--port", "0",
                         timeout=FAIL_WITHIN_S + 30)
    print(f"offerstream serve exited {done.returncode} after {seconds:.1f} s: {done.stderr.strip()}")
    assert done.returncode != 0
    assert seconds < FAIL_WITHIN_S
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("offerstream: cannot authenticate to the broker:") and reason in last, done.stderr
    assert "Traceback" not in done.stderr
    assert cluster.security.password not in done.stdout + done.stderr
