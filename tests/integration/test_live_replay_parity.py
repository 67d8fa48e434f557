"""Live and replay agree: the same events through a real worker and through ``training.replay``.

The worker applies them with the ingest agent over its write-behind tables; the replay applies
them over dicts. Both call the one event rule (:func:`models.customer_state.apply_event`), and this
test shows it by their results, not by a third copy: every customer's stored profile and consent
as ``GET /v1/customers/{id}`` reports it equal the replay's, redelivery included. An erased
customer follows the one erasure rule on both sides: events stamped at or before the erasure are
never applied, events after it are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.ledger import LEDGER_FILE, ErasureLedger
from models.profile import HOUR_MS
from tests.integration.workers import WorkerProcess, wait_until
from tests.parity.test_online_offline import OFFERS, _event_log
from training.replay import replay

pytestmark = pytest.mark.integration

HASH_KEY = "parity-hash-key"


@pytest.fixture()
def worker(broker: Any, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker of its own (data dir, consumer group) on the module's broker, each kind in turn."""
    w = WorkerProcess(broker.url, tmp_path / "data", app_id=f"parity-{tmp_path.name}",
                      env={"OFFERSTREAM_HASH_KEY": HASH_KEY})
    w.start(timeout=120)
    try:
        yield w
    finally:
        w.stop()


def _returning_customer(t_erase: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """c4's events before its erasure, and those sent after it (stamped before and after it)."""
    def ev(i: int, ts: int, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"c4-{i}", "customer_id": "c4", "ts": ts, **fields}

    grant = {"type": "consent", "consent": {"flags": {"profile": True, "personalize": True}}}
    view = {"type": "page_view", "url": "/tea", "category": "food"}
    before = [ev(0, t_erase - 5 * HOUR_MS, **grant), ev(1, t_erase - 4 * HOUR_MS, **view)]
    after = [ev(2, t_erase - 3 * HOUR_MS, **view),             # late copy of an old visit: blocked
             ev(3, t_erase + HOUR_MS, **grant), ev(4, t_erase + 2 * HOUR_MS, **view)]  # back again
    return before, after


def _stored(worker: WorkerProcess, customer: str) -> dict[str, Any]:
    """What the worker stores about a customer; nothing (404) as no profile and no consent."""
    status, body = worker.client.request("GET", f"/v1/customers/{customer}")
    assert status in (200, 404), body
    return body if status == 200 else {"profile": None, "consent": {"flags": {}}}


def test_a_real_worker_and_the_replay_store_the_same_state(worker: WorkerProcess) -> None:
    log = _event_log()
    c4_before, c4_after = _returning_customer(int(time.time() * 1000))
    worker.client.json("POST", "/v1/events", log + c4_before, expect=202)
    worker.client.json("POST", "/v1/events", log, expect=202)  # redelivered: must not count twice
    wait_until(lambda: (_stored(worker, "c4").get("profile") or {}).get("n_events") == 1
               and (_stored(worker, "c1").get("profile") or {}).get("n_events") == 9, timeout=30,
               what="the log applied")
    worker.client.json("DELETE", "/v1/customers/c4")
    worker.client.json("POST", "/v1/events", c4_after, expect=202)
    wait_until(lambda: (_stored(worker, "c4").get("profile") or {}).get("n_events") == 1
               and _stored(worker, "c4")["consent"]["flags"].get("profile"), timeout=30,
               what="c4's events after its erasure applied")
    time.sleep(1.0)  # anything still in flight would show up as a difference below

    ledger = ErasureLedger(worker.data_dir / LEDGER_FILE, HASH_KEY.encode())
    offline = replay(sorted(log + log + c4_before + c4_after, key=lambda e: e["ts"]), OFFERS, erased=ledger)
    for customer in ("c1", "c2", "c3", "c4"):
        live = _stored(worker, customer)
        want = offline.profiles.get(customer)
        assert live["profile"] == (orjson.loads(orjson.dumps(want.to_dict())) if want else None), customer
        granted = {f for f, v in offline.consents[customer].flags.items() if v} if customer in offline.consents else set()
        assert {f for f, v in live["consent"]["flags"].items() if v} == granted, customer
    assert offline.profiles["c4"].n_events == 1 and offline.counts["skipped_erased"] == 3
