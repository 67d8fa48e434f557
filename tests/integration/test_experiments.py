"""Experiments end to end on a real broker and two real workers (issue 15).

An experiment with a holdout, two registry model versions and popularity; customers with and
without ``personalize`` and ``measurement``; outcomes sent as events; one customer erased. The
results endpoint of either worker equals an offline recount of the same records: the
``decisions`` topic read with a plain Kafka consumer, the events from the workers' archives, the
erasure ledger, counted by :func:`models.experiment_results.results`.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.archive import read_archive
from models.decision import hash_customer_id
from models.experiment_results import Tally, results
from models.experiments import HOLDOUT, NOT_ELIGIBLE, assign, parse_experiment
from models.registry import ModelRegistry
from offerstream import simulation as sim
from tests.integration.workers import WorkerProcess, wait_until

OFFERS = {f"o{i}": {"offer_id": f"o{i}", "title": f"Offer {i}", "category": c, "kind": "discount",
                    "discount_pct": 5 * i}
          for i, c in enumerate(["GROCERY", "PRODUCE", "MEAT", "DRUG GM", "GROCERY"], start=1)}
HASH_KEY = b"test-hash-key"  # tests/integration/workers.py gives every worker this one


def _second_version(registry_root: Path, tmp: Path) -> tuple[str, str]:
    """Register a copy of the promoted bundle under another version name: two versions to test."""
    registry = ModelRegistry(registry_root)
    first = registry.current_version()
    assert first is not None
    bundle = tmp / "bundle-b"
    shutil.copytree(registry.versions_dir / first, bundle)
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    manifest["model_version"] = f"{first}-b"
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))
    return first, registry.register(bundle)


@pytest.fixture(scope="module")
def group(broker: Any, tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> Iterator[tuple]:
    shared = tmp_path_factory.mktemp("shared") / "registry"
    shutil.copytree(trained_registry, shared)
    versions = _second_version(shared, tmp_path_factory.mktemp("bundle"))
    env = {"OFFERSTREAM_REGISTRY": str(shared)}
    a = WorkerProcess(broker.url, tmp_path_factory.mktemp("a"), app_id="exp", env=env).start(timeout=120)
    b = WorkerProcess(broker.url, tmp_path_factory.mktemp("b"), app_id="exp", env=env).start(timeout=120)
    try:
        for offer_id, offer in OFFERS.items():
            a.client.json("PUT", f"/v1/offers/{offer_id}", offer)
        yield broker, a, b, versions
    finally:
        b.stop()
        a.stop()


def _experiment(v1: str, v2: str) -> dict[str, Any]:
    return {"holdout": 0.2, "control": "champion", "attribution_window_s": 3600, "arms": [
        {"name": "champion", "share": 0.4, "policy": {"kind": "model", "version": v1}},
        {"name": "challenger", "share": 0.3, "policy": {"kind": "model", "version": v2}, "exploration": "epsilon:0.5"},
        {"name": "popular", "share": 0.3, "policy": {"kind": "popularity"}}]}


def test_bad_configuration_gets_a_400_naming_the_field(group: tuple) -> None:
    _, a, b, (v1, v2) = group
    good = _experiment(v1, v2)
    cases = [({**good, "arms": good["arms"][:2]}, "arms[].share"),
             ({**good, "control": "nobody"}, "control"),
             ({**good, "arms": [{**good["arms"][0], "policy": {"kind": "model", "version": "nope"}},
                                *good["arms"][1:]]}, "arms[0].policy.version")]
    for body, field in cases:
        status, answer = a.client.request("PUT", "/v1/experiments/bad", body)
        assert status == 400 and answer["field"] == field, answer
    assert a.client.json("GET", "/v1/experiments")["count"] == 0
    a.client.json("PUT", "/v1/experiments/other", {**good, "placement": "checkout"})
    status, answer = b.client.request("PUT", "/v1/experiments/bad", good)  # every placement overlaps it
    assert status == 400 and answer["field"] == "placement" and "'other'" in answer["detail"]
    a.client.json("PUT", "/v1/experiments/other", {**good, "placement": "checkout", "end": 1_000_000_000_000})


def _read_decisions(bootstrap: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition("decisions", p) for p in sorted(consumer.partitions_for_topic("decisions")
                                                                    or await _partitions(consumer))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            out: list[dict[str, Any]] = []
            for _ in range(200):  # until a fetch brings nothing and every position is at the high watermark
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(orjson.loads(r.value) for r in records)
                high = [consumer.highwater(tp) for tp in parts]
                positions = [await consumer.position(tp) for tp in parts]
                if not batch and all(h is not None and p >= h for p, h in zip(positions, high, strict=True)):
                    return out
            raise AssertionError("the decisions topic was not read to its end")
        finally:
            await consumer.stop()

    return asyncio.run(read())


async def _partitions(consumer: AIOKafkaConsumer) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001
    return consumer.partitions_for_topic("decisions") or set()


def _offline(broker: Any, workers: tuple[WorkerProcess, ...], body: dict[str, Any],
             erased: dict[str, int], experiment_id: str = "exp1") -> dict[str, Any]:
    tally = Tally()
    for record in _read_decisions(broker.bootstrap):
        tally.add_decision(record)
    for w in workers:
        for event in read_archive(w.data_dir / "archive"):
            tally.add_event(event["event_id"], event["type"], event["ts"], event)
    return results(tally, parse_experiment(body, experiment_id), erased)


def _customers() -> dict[str, dict[str, bool]]:
    full = dict.fromkeys(("profile", "personalize", "measurement"), True)
    out = {f"c{i}": full for i in range(60)}
    out.update({f"np{i}": {**full, "personalize": False} for i in range(5)})
    out.update({f"nm{i}": {**full, "measurement": False} for i in range(5)})
    return out


def _score_all(a: WorkerProcess, b: WorkerProcess, customers: dict[str, dict[str, bool]],
               body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    experiment = parse_experiment(body, "exp1")
    answers = {}
    for n, (cid, flags) in enumerate(customers.items()):
        (a, b)[n % 2].client.json("PUT", f"/v1/customers/{cid}/consent", {"flags": flags})
        answer = (b, a)[n % 2].client.json("POST", "/v1/score", {"customer_id": cid, "k": 2})
        arm = assign(experiment, cid, personalize=flags["personalize"])
        assert answer["experiment"] == {"id": "exp1", "arm": arm}, (cid, answer)
        if arm == HOLDOUT:
            assert answer["offers"] == []
        else:
            assert answer["offers"], answer
        answers[cid] = answer
    return answers


def _outcomes(answers: dict[str, dict[str, Any]], ts: int) -> list[dict[str, Any]]:
    rng = random.Random(15)  # noqa: S311 - test data
    events = []
    for cid, answer in answers.items():
        for offer in answer["offers"]:
            base = {"customer_id": cid, "offer_id": offer["offer_id"], "decision_id": answer["decision_id"]}
            did = answer["decision_id"][:8]
            events.append({**base, "event_id": f"i-{did}-{offer['offer_id']}", "type": "offer_impression",
                           "ts": ts, "position": offer["rank"] - 1, "propensity": 1.0})
            if rng.random() < 0.4:
                events.append({**base, "event_id": f"c-{did}-{offer['offer_id']}", "type": "offer_click",
                               "ts": ts + 1000})
            if rng.random() < 0.25:
                events.append({**base, "event_id": f"r-{did}-{offer['offer_id']}", "type": "offer_redeem",
                               "ts": ts + 2000, "revenue": 10.0 + rng.randrange(50)})
    late = next(e for e in events if e["type"] == "offer_impression")
    events.append({**late, "event_id": "late-one", "ts": ts + 3_700_000})  # after the window: not counted
    events.append(dict(events[0]))  # the same event_id twice: counted once
    return events


def test_an_experiment_runs_end_to_end_and_its_results_equal_a_recount(group: tuple) -> None:
    broker, a, b, (v1, v2) = group
    body = _experiment(v1, v2)
    a.client.json("PUT", "/v1/experiments/exp1", body)
    # the answering worker has applied it; the others read it from the topic a moment later
    wait_until(lambda: "exp1" in {e["id"] for e in b.client.json("GET", "/v1/experiments")["experiments"]},
               timeout=10, what="the other worker to hold the experiment")
    answers = _score_all(a, b, _customers(), body)
    served = {answers[c]["model_version"] for c in answers if answers[c]["experiment"]["arm"] == "challenger"}
    assert served == {v2}
    assert {answers[c]["model_version"] for c in answers if answers[c]["experiment"]["arm"] == "popular"} == {
        "popularity"}
    events = _outcomes(answers, ts=_now_ms())
    for i in range(0, len(events), 50):
        a.client.json("POST", "/v1/events", events[i:i + 50], expect=202)
    # the offline recount, once both workers have archived every outcome
    wait_until(lambda: sum(1 for w in (a, b) for _ in read_archive(w.data_dir / "archive")
                           if _.get("decision_id")) >= len(events) - 1, timeout=30, what="outcomes archived")
    expected = _offline(broker, (a, b), body, {})
    explored = {(r["experiment"]["arm"], r["exploration"]) for r in _read_decisions(broker.bootstrap)
                if (r.get("experiment") or {}).get("id") == "exp1"}
    assert {mode for arm, mode in explored if arm == "challenger"} == {"epsilon"}  # the arm's own exploration
    assert {mode for arm, mode in explored if arm != "challenger"} == {"greedy"}
    assert expected["not_eligible"] == 5 and expected["not_measured"] == 5
    assert expected["arms"]["champion"]["redemptions"] > 0 and expected["arms"][HOLDOUT]["impressions"] == 0
    for w in (a, b):
        wait_until(lambda w=w: w.client.json("GET", "/v1/experiments/exp1/results") == expected, timeout=30,
                   what=f"{w.url}'s results to equal the offline recount {expected}")
    print("results", orjson.dumps(expected).decode())
    _erasure_leaves_the_counts(broker, a, b, body, answers, expected)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _erasure_leaves_the_counts(broker: Any, a: WorkerProcess, b: WorkerProcess, body: dict[str, Any],
                               answers: dict[str, dict[str, Any]], before: dict[str, Any]) -> None:
    counted = [c for c, ans in answers.items() if c.startswith("c") and ans["experiment"]["arm"] == "champion"]
    victim = counted[0]
    a.client.json("DELETE", f"/v1/customers/{victim}")
    digest = hash_customer_id(HASH_KEY, victim)
    wait_until(lambda: b.client.json("GET", "/v1/experiments/exp1/results")["arms"]["champion"]["customers"]
               == before["arms"]["champion"]["customers"] - 1, timeout=30, what="the erased customer to leave")
    erased_at = {digest: _now_ms()}
    expected = _offline(broker, (a, b), body, erased_at)
    for w in (a, b):
        assert w.client.json("GET", "/v1/experiments/exp1/results") == expected
    assert expected["arms"]["champion"]["decisions"] == before["arms"]["champion"]["decisions"] - 1
    # /metrics shows results counted in the background at most 10 s before: the first scrape starts a count
    decisions = expected["arms"]["champion"]["decisions"]
    line = f'offerstream_experiment_decisions{{experiment="exp1",arm="champion"}} {decisions}'
    wait_until(lambda: line in str(a.client.request("GET", "/metrics")[1]).splitlines(), timeout=30,
               what=f"/metrics to show {line}")
    assert NOT_ELIGIBLE not in expected["arms"]


def test_the_report_is_written_from_a_worker(group: tuple, tmp_path: Path) -> None:
    _, a, _, _ = group
    out = tmp_path / "report"
    command = [sys.executable, "-m", "offerstream.cli", "experiment", "report", "exp1", "--url", a.url,
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr
    final = orjson.loads((out / "results.json").read_bytes())
    assert final == a.client.json("GET", "/v1/experiments/exp1/results")
    series = orjson.loads((out / "series.json").read_bytes())
    assert series and series[-1]["arms"]["champion"]["decisions"] == final["arms"]["champion"]["decisions"]
    assert all(s["period"]["until"] for s in series)
    text = (out / "report.md").read_text()
    assert "| champion |" in text and "![uplift.png](uplift.png)" in text
    assert (out / "rates.png").stat().st_size > 1000 and (out / "uplift.png").stat().st_size > 1000


def test_a_simulated_shop_through_the_broker(group: tuple) -> None:
    """The synthetic shop's customers answer the real workers' offers by the known response model."""
    broker, a, b, (v1, _) = group
    a.client.json("PUT", "/v1/experiments/exp1", {**_experiment(v1, v1), "end": _now_ms()})  # exp1 ends
    offers = {f"sim-o{i}": {"offer_id": f"sim-o{i}", "category": ["GROCERY", "PRODUCE", "MEAT", "DRUG GM"][i % 4],
                            "discount_pct": 5 + i} for i in range(sim.N_OFFERS)}
    for offer_id, offer in offers.items():
        a.client.json("PUT", f"/v1/offers/{offer_id}", offer)
    body = {"holdout": 0.1, "control": "popular", "placement": "sim-shop", "attribution_window_s": 3600, "arms": [
        {"name": "popular", "share": 0.3, "policy": {"kind": "popularity"}},
        {"name": "model", "share": 0.3, "policy": {"kind": "model", "version": v1}},
        {"name": "random", "share": 0.4, "policy": {"kind": "random"}}]}
    b.client.json("PUT", "/v1/experiments/sim", body)
    wait_until(lambda: "sim" in {e["id"] for e in a.client.json("GET", "/v1/experiments")["experiments"]},
               timeout=10, what="both workers to hold the simulation's experiment")
    rng = random.Random(2026)  # noqa: S311 - simulation
    expected: dict[str, list[float]] = {}  # arm -> true redemption probability of each impression
    events, now = [], _now_ms()
    for i in range(300):
        cid = f"sim-c{i}"
        a.client.json("PUT", f"/v1/customers/{cid}/consent", {"flags": dict.fromkeys(
            ("profile", "personalize", "measurement"), True)})
        answer = (a, b)[i % 2].client.json("POST", "/v1/score", {
            "customer_id": cid, "k": sim.K, "candidates": list(offers), "context": {"placement": "sim-shop"}})
        arm, segment, u = answer["experiment"]["arm"], sim.segment_of(cid), sim.customer_propensity(rng)
        for offer in answer["offers"]:
            p = min(1.0, float(sim.P[segment, int(offer["offer_id"].removeprefix("sim-o"))]) * u)
            expected.setdefault(arm, []).append(p)
            base = {"customer_id": cid, "offer_id": offer["offer_id"], "decision_id": answer["decision_id"]}
            events.append({**base, "event_id": f"si-{cid}-{offer['offer_id']}", "type": "offer_impression",
                           "ts": now})
            if rng.random() < p:
                events.append({**base, "event_id": f"sr-{cid}-{offer['offer_id']}", "type": "offer_redeem", "ts": now})
    for i in range(0, len(events), 100):
        b.client.json("POST", "/v1/events", events[i:i + 100], expect=202)
    live = wait_until(lambda: _settled(a, len(events)), timeout=30, what="the live results to count every event")
    assert live == wait_until(lambda: _settled(b, len(events)), timeout=30, what="the other worker to agree")
    # the archive is written by the owners' ingest (synced every second): recount once it has everything
    wait_until(lambda: _offline(broker, (a, b), body, {}, "sim") == live, timeout=30,
               what=f"the offline recount to equal the live results {live}")
    truth = {arm: sum(ps) / len(ps) for arm, ps in expected.items()}
    covered = {}
    for arm in ("model", "random"):
        lo, hi = live["arms"][arm]["uplift"]["ci95"]
        covered[arm] = lo <= truth[arm] - truth["popular"] <= hi
    print("simulated shop through the broker: true rates", truth, "live", {
        n: (r["rate"], r.get("uplift")) for n, r in live["arms"].items()}, "interval holds the truth:", covered)
    assert live["arms"][HOLDOUT]["impressions"] == 0 and live["arms"][HOLDOUT]["customers"] > 0


def _settled(w: WorkerProcess, n_events: int) -> dict[str, Any] | None:
    answer = w.client.json("GET", "/v1/experiments/sim/results")
    counted = sum(r["impressions"] + r["redemptions"] for r in answer["arms"].values())
    return answer if counted == n_events else None


def test_experiments_and_arms_survive_a_restart_of_the_embedded_default(tmp_path: Path,
                                                                         trained_registry: Path) -> None:
    body = {"holdout": 0.3, "control": "popular", "arms": [
        {"name": "popular", "share": 0.5, "policy": {"kind": "popularity"}},
        {"name": "random", "share": 0.5, "policy": {"kind": "random"}}]}
    customers = [f"r{i}" for i in range(12)]
    first = WorkerProcess(None, tmp_path / "data", app_id="exp-restart", registry=trained_registry).start()
    try:
        first.client.json("PUT", "/v1/offers/o1", OFFERS["o1"])
        first.client.json("PUT", "/v1/experiments/kept", body)
        for c in customers:
            first.client.json("PUT", f"/v1/customers/{c}/consent", {"flags": {"profile": True, "personalize": True}})
        before = {c: first.client.json("POST", "/v1/score", {"customer_id": c, "k": 1})["experiment"]
                  for c in customers}
    finally:
        first.stop()
    second = WorkerProcess(None, tmp_path / "data", app_id="exp-restart", port=first.port).start(timeout=90)
    try:
        assert second.client.json("GET", "/health")["experiments_loaded"]
        assert second.client.json("GET", "/v1/experiments")["experiments"] == [
            parse_experiment(body, "kept").to_dict()]
        after = {c: second.client.json("POST", "/v1/score", {"customer_id": c, "k": 1})["experiment"]
                 for c in customers}
        experiment = parse_experiment(body, "kept")
        assert after == before == {c: {"id": "kept", "arm": assign(experiment, c, personalize=True)}
                                   for c in customers}
        assert len({e["arm"] for e in after.values()}) == 3  # holdout and both arms among them
    finally:
        second.stop()
