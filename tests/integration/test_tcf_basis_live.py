"""``OFFERSTREAM_TCF_BASIS`` reaches every reader of TC strings on a real worker (issue 16, item 2).

The worker runs with ``vendor:12``. The TC string grants every purpose and vendor 12's consent
bit, but vendor 12 is missing from DisclosedVendors (a v2.3 "ghost vendor"): under the default
``purposes`` it would grant, under ``vendor:12`` it grants nothing. The consent call, a ``consent``
event applied by the ingest agent, and a score call carrying the string must all read it as the
worker's setting says, and the consent call's answer names the basis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from models.tcf import PublisherTC, TCString, VendorSet, encode_tc_string
from stream.embedded.process import EmbeddedBroker
from tests.integration.workers import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

CREATED = datetime(2026, 6, 1, tzinfo=UTC)
GHOST = encode_tc_string(TCString(
    created=CREATED, last_updated=CREATED, purpose_consents=frozenset({1, 5, 6, 7, 8, 9, 10}),
    vendor_consents=VendorSet.of([9, 12]), disclosed_vendors=VendorSet.of([9]), publisher_tc=PublisherTC(),
))


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, trained_registry: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(broker.url, tmp_path_factory.mktemp("tcf-basis"), app_id="tcf-basis-live",
                      registry=trained_registry, env={"OFFERSTREAM_TCF_BASIS": "vendor:12"}).start()
    try:
        yield w
    finally:
        w.stop()


def archived(w: WorkerProcess) -> list[dict]:
    files = sorted((w.data_dir / "archive").rglob("*.jsonl"))
    return [orjson.loads(line) for f in files for line in f.read_bytes().splitlines() if line.strip()]


def test_every_reader_of_tc_strings_uses_the_workers_basis(worker: WorkerProcess) -> None:
    call, event, score = (f"tcf-{name}-{uuid.uuid4().hex[:6]}" for name in ("call", "event", "score"))
    answer = worker.client.json("PUT", f"/v1/customers/{call}/consent", {"tcf": GHOST})
    assert answer["tcf_basis"] == "vendor:12"
    assert answer["revoked"] == ["measurement", "personalize", "profile", "training"]
    assert worker.client.json("PUT", f"/v1/customers/{call}/consent",
                              {"flags": {"sharing": True}})["tcf_basis"] is None

    worker.client.json("POST", "/v1/events", {"event_id": f"e-{event}", "type": "consent", "customer_id": event,
                                              "ts": 1_780_000_000_000, "consent": {"tcf": GHOST}}, expect=202)
    wait_until(lambda: worker.client.request("GET", f"/v1/customers/{event}")[0] == 200,
               what="the consent event applied")
    stored = worker.client.json("GET", f"/v1/customers/{event}")["consent"]
    assert stored["flags"]["personalize"] is False and stored["sources"]["personalize"] == "tcf"
    # the archived records (the consent call's and the event's) name the basis too
    def records() -> list[tuple[str, str]]:
        return sorted((r["customer_id"], r.get("tcf_basis") or "-") for r in archived(worker)
                      if r["type"] == "consent" and r["customer_id"] in (call, event))

    wait_until(lambda: len(records()) == 3, what="the consent records in the archive")
    # the TC string's records name the basis; the flags-only call has none to name
    assert records() == sorted([(call, "vendor:12"), (call, "-"), (event, "vendor:12")])

    worker.client.json("PUT", f"/v1/customers/{score}/consent", {"flags": {"profile": True, "personalize": True}})
    plain = worker.client.json("POST", "/v1/score", {"customer_id": score, "k": 1})
    assert plain["consent_basis"]["flags"]["personalize"] is True
    narrowed = worker.client.json("POST", "/v1/score", {"customer_id": score, "k": 1, "consent": {"tcf": GHOST}})
    assert narrowed["consent_basis"]["flags"]["personalize"] is False
