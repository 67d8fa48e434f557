"""Consent benchmark: revocation-to-effect latency on real workers, and TCF decoder speed.

``python -m benchmarks.consent [--quick]`` prints a table and writes
``benchmarks/results/consent.json``.

(a) Revocation to effect. Real ``offerstream serve`` workers on the bundled broker (the fallback
    scorer: no model registry is needed for what is measured). Each customer first gets
    ``profile`` + ``personalize`` and a few events, until a score call answers
    ``personalized: true``. Then, one customer at a time, a racing task scores that customer in a
    tight loop while ``PUT /v1/customers/{id}/consent {"flags": {"personalize": false}}`` is sent;
    as soon as the PUT returns, a second loop scores until it sees ``personalized: false``.
    Measured (client clock, loopback):

    - ``put_rtt_ms``: the revocation PUT's round trip (send -> answer read), with the racing
      score loop running against the same customer;
    - ``tight_effect_ms``: PUT sent -> first ``personalized: false`` answer of the loop started
      after the PUT returned (effective on return means its first answer already is);
    - ``racing_effect_ms``: PUT sent -> first ``personalized: false`` answer of the racing loop
      (can be shorter than the round trip: the change is visible before the answer is read);
    - ``personalized_after_return``: personalized answers to score requests sent after the PUT
      had returned, both loops together. Must be 0.

    Scenario ``one_worker``: one worker answers everything. Scenario ``two_workers`` (full run
    only): PUT to one worker and scores to the other, so for every customer exactly one of them is
    forwarded to the owner; the PUT round trip is split into direct and forwarded.

(b) TCF decoder. ``models.tcf.decode_tc_string`` on a realistic TC string (built with
    ``encode_tc_string``: ~700 vendor consents as a bit field, purposes 1-10, LI, four publisher
    restrictions, a DisclosedVendors segment) and on a range-encoded one, timed per call. Baseline:
    ``base64.urlsafe_b64decode`` plus conversion to a bit string of the same segments, a lower
    bound on any decoder in Python; the ratio shows drift on shared machines.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from benchmarks.common import cli, summarize, target, worker_group

__all__ = ["run", "main", "realistic_tc_strings"]

PUT_P99_TARGET_MS = 50.0
EVENTS_PER_CUSTOMER = 3


# ------------------------------------------------------------------------ (a) revocation latency


class _Client:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, url: str, body: Any) -> tuple[int, Any, float, float]:
        """``(status, json, sent, returned)`` with ``time.perf_counter()`` seconds."""
        sent = time.perf_counter()
        async with self.session.request(method, url, json=body) as resp:
            data = await resp.json(content_type=None)
            status = resp.status
        return status, data, sent, time.perf_counter()

    async def score(self, base: str, customer: str) -> tuple[bool, float, float]:
        status, data, sent, returned = await self.call("POST", base + "/v1/score",
                                                       {"customer_id": customer, "k": 10})
        if status != 200:
            raise RuntimeError(f"score for {customer} answered {status}: {data}")
        return bool(data["personalized"]), sent, returned


async def _prepare(client: _Client, put_url: str, score_url: str, customers: list[str]) -> None:
    """Grant profile + personalize, send events, wait until every customer scores personalized."""
    sem = asyncio.Semaphore(16)
    now = int(time.time() * 1000)

    async def one(customer: str) -> None:
        async with sem:
            status, data, _, _ = await client.call("PUT", f"{put_url}/v1/customers/{customer}/consent",
                                                   {"flags": {"profile": True, "personalize": True}})
            if status != 200:
                raise RuntimeError(f"grant for {customer} answered {status}: {data}")
            events = [{"event_id": f"{customer}-e{i}", "type": "add_to_cart", "customer_id": customer,
                       "ts": now, "item_id": f"shoes-{i}", "category": "shoes", "price": 30.0}
                      for i in range(EVENTS_PER_CUSTOMER)]
            status, data, _, _ = await client.call("POST", f"{put_url}/v1/events", events)
            if status != 202:
                raise RuntimeError(f"events for {customer} answered {status}: {data}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with sem:
                if (await client.score(score_url, customer))[0]:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{customer} never scored personalized after the grant and events")

    await asyncio.gather(*(one(c) for c in customers))


async def _measure_one(client: _Client, put_url: str, score_url: str, customer: str) -> dict[str, Any]:
    put_state: dict[str, float] = {}
    racing: list[tuple[bool, float, float]] = []
    stop = asyncio.Event()
    warmed = asyncio.Event()
    after_return_calls: list[tuple[bool, float, float]] = []

    async def race() -> None:
        while not stop.is_set():
            answer = await client.score(score_url, customer)
            racing.append(answer)
            if answer[0]:
                warmed.set()
            if "returned" in put_state and answer[1] > put_state["returned"]:
                after_return_calls.append(answer)
                if not answer[0] or len(after_return_calls) >= 50:
                    stop.set()  # the effect seen by a request sent after the PUT returned

    racer = asyncio.create_task(race())
    await asyncio.wait_for(warmed.wait(), timeout=10)  # the customer really is personalized now
    status, data, sent, returned = await client.call(
        "PUT", f"{put_url}/v1/customers/{customer}/consent", {"flags": {"personalize": False}})
    put_state.update(sent=sent, returned=returned)
    if status != 200:
        stop.set()
        await racer
        raise RuntimeError(f"revocation for {customer} answered {status}: {data}")
    tight: list[tuple[bool, float, float]] = []
    while True:
        answer = await client.score(score_url, customer)
        tight.append(answer)
        if not answer[0] or len(tight) >= 1000:
            break
    await asyncio.wait_for(racer, timeout=10)
    after_return = [a for a in (*tight, *racing) if a[1] >= returned and a[0]]
    first_racing = next((a for a in racing if not a[0]), None)
    return {
        "put_rtt_ms": (returned - sent) * 1000,
        "tight_effect_ms": (tight[-1][2] - sent) * 1000 if not tight[-1][0] else None,
        "tight_tries": len(tight),
        "racing_effect_ms": (first_racing[2] - sent) * 1000 if first_racing else None,
        "racing_calls": len(racing),
        "racing_inflight_personalized": sum(1 for a in racing if a[0] and a[2] > sent and a[1] < returned),
        "personalized_after_return": len(after_return),
    }


async def _latency_async(urls: list[str], customers: list[str], owners: dict[str, int] | None) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=32)) as session:
        client = _Client(session)
        two = len(urls) > 1

        def routes(i: int) -> tuple[str, str]:
            return (urls[i % 2], urls[1 - i % 2]) if two else (urls[0], urls[0])

        for parity in (0, 1):  # prepare with the same routes as measured
            group = [c for i, c in enumerate(customers) if i % 2 == parity]
            put_url, score_url = routes(parity)
            await _prepare(client, put_url, score_url, group)
        rows = []
        for i, customer in enumerate(customers):
            put_url, score_url = routes(i)
            row = await _measure_one(client, put_url, score_url, customer)
            if owners is not None:
                row["put_forwarded"] = owners[customer] != i % 2
            rows.append(row)
    return _summarize_rows(rows, two)


def _summarize_rows(rows: list[dict[str, Any]], two: bool) -> dict[str, Any]:
    def col(name: str, where: Any = None) -> list[float]:
        return [r[name] for r in rows if r[name] is not None and (where is None or where(r))]

    out: dict[str, Any] = {
        "customers": len(rows),
        "put_rtt_ms": summarize(col("put_rtt_ms")),
        "tight_effect_ms": summarize(col("tight_effect_ms")),
        "racing_effect_ms": summarize(col("racing_effect_ms")),
        "tight_tries_max": max(r["tight_tries"] for r in rows),
        "not_effective_after_return": sum(1 for r in rows if r["tight_effect_ms"] is None),
        "racing_calls": sum(r["racing_calls"] for r in rows),
        "racing_inflight_personalized": sum(r["racing_inflight_personalized"] for r in rows),
        "personalized_after_return": sum(r["personalized_after_return"] for r in rows),
    }
    if two:
        out["put_rtt_direct_ms"] = summarize(col("put_rtt_ms", lambda r: not r["put_forwarded"]))
        out["put_rtt_forwarded_ms"] = summarize(col("put_rtt_ms", lambda r: r["put_forwarded"]))
    return out


def _owners(workers: list[Any], customers: list[str]) -> dict[str, int]:
    """Which worker (index) owns each customer: Kafka's default partitioner on the UTF-8 id."""
    from aiokafka.partitioner import DefaultPartitioner

    held = [set(w.health()[1]["assigned_partitions"]) for w in workers]
    parts = list(range(4))
    partitioner = DefaultPartitioner()
    out = {}
    for c in customers:
        p = partitioner(c.encode(), parts, parts)
        out[c] = next(i for i, h in enumerate(held) if p in h)
    return out


def revocation_latency(n_customers: int, n_workers: int) -> dict[str, Any]:
    """Scenario (a) on a fresh broker with ``n_workers`` workers."""
    started = time.perf_counter()
    with worker_group(n_workers, app_id=f"bench-consent-{n_workers}") as workers:
        ready_s = time.perf_counter() - started
        customers = [f"bench-{n_workers}w-{i}" for i in range(n_customers)]
        owners = _owners(workers, customers) if n_workers > 1 else None
        result = asyncio.run(_latency_async([w.url for w in workers], customers, owners))
    result["group_ready_s"] = round(ready_s, 1)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# ----------------------------------------------------------------------------- (b) TCF decoder


def realistic_tc_strings(seed: int = 7) -> dict[str, str]:
    """A bit-field TC string (~700 vendors) and a range-encoded one, both valid TCF v2.2."""
    from models.tcf import PublisherRestriction, TCString, VendorSet, encode_tc_string

    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not a secret
    bitfield_vendors = VendorSet.of(rng.sample(range(1, 1101), 700))
    blocks, start = [], 1
    while len(blocks) < 40:
        length = rng.randint(5, 30)
        blocks.append((start, start + length - 1))
        start += length + rng.randint(1, 12)
    range_vendors = VendorSet.from_ranges(blocks)
    restrictions = (
        PublisherRestriction(2, 1, VendorSet.from_ranges([(10, 40), (100, 120)])),
        PublisherRestriction(7, 0, VendorSet.of([55, 77, 91, 300])),
        PublisherRestriction(10, 2, VendorSet.from_ranges([(500, 650)])),
        PublisherRestriction(4, 1, VendorSet.of([8, 21])),
    )
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def tc(vendors: VendorSet, li: VendorSet) -> TCString:
        return TCString(
            created=when, last_updated=when, cmp_id=300, cmp_version=4, consent_screen=1,
            consent_language="EN", vendor_list_version=160, tcf_policy_version=4,
            is_service_specific=True, special_feature_optins=frozenset({1}),
            purpose_consents=frozenset(range(1, 11)), purpose_legitimate_interests=frozenset({2, 7, 8, 9, 10}),
            publisher_cc="DE", vendor_consents=vendors,
            vendor_legitimate_interests=li,
            publisher_restrictions=restrictions,
            disclosed_vendors=VendorSet.from_ranges([(1, 1100)]),
        )

    bitfield_li = VendorSet.of(rng.sample(range(1, 1101), 300))
    range_li = VendorSet.from_ranges(blocks[::3])
    return {"bitfield": encode_tc_string(tc(bitfield_vendors, bitfield_li)),
            "range": encode_tc_string(tc(range_vendors, range_li), range_encoding=True)}


def _baseline_decode(tc: str) -> list[str]:
    """base64url -> bytes -> bit string per segment: what any decoder must at least do."""
    out = []
    for segment in tc.split("."):
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        out.append(bin(int.from_bytes(raw, "big"))[2:].zfill(8 * len(raw)))
    return out


def _time_calls(fn: Any, arg: str, n: int) -> tuple[list[float], float]:
    per_call_us, perf = [], time.perf_counter_ns
    for _ in range(min(200, n // 10)):  # warm-up
        fn(arg)
    total_start = perf()
    for _ in range(n):
        t = perf()
        fn(arg)
        per_call_us.append((perf() - t) / 1000)
    return per_call_us, (perf() - total_start) / 1e9


def tcf_speed(n: int) -> dict[str, Any]:
    """Scenario (b): decoder vs. baseline on both strings."""
    from models.tcf import decode_tc_string, tcf_flags

    out: dict[str, Any] = {}
    for name, tc in realistic_tc_strings().items():
        decoded = decode_tc_string(tc)
        assert len(decoded.vendor_consents) >= 600 and len(decoded.publisher_restrictions) == 4
        assert tcf_flags(decoded)["personalize"] is True
        dec_us, dec_total = _time_calls(decode_tc_string, tc, n)
        base_us, base_total = _time_calls(_baseline_decode, tc, n)
        dec, base = summarize(dec_us, 2), summarize(base_us, 2)
        out[name] = {
            "chars": len(tc), "vendor_consents": len(decoded.vendor_consents),
            "decode_us": {k: dec[k] for k in ("p50", "p99", "mean")},
            "decodes_per_s": round(n / dec_total),
            "baseline_us": {k: base[k] for k in ("p50", "p99", "mean")},
            "baseline_per_s": round(n / base_total),
            "ratio_p50_vs_baseline": round(dec["p50"] / base["p50"], 1),
        }
    return out


# -------------------------------------------------------------------------------------- entry


def run(quick: bool = False) -> dict[str, Any]:
    """Run both parts; quick: 50 customers on one worker and 2,000 decodes."""
    n_customers = 50 if quick else 500
    n_decodes = 2_000 if quick else 20_000
    scenarios = (1,) if quick else (1, 2)
    results: dict[str, Any] = {}
    for n_workers in scenarios:
        results["one_worker" if n_workers == 1 else "two_workers"] = revocation_latency(n_customers, n_workers)
    results["tcf"] = tcf_speed(n_decodes)

    one = results["one_worker"]
    after = sum(results[s]["personalized_after_return"] + results[s]["not_effective_after_return"]
                for s in results if s != "tcf")
    targets = [
        target("personalized answers to scores sent after the revocation PUT returned (all scenarios)",
               after, 0, "count"),
        target("revocation PUT round trip p99, one worker, loopback, racing score loop running",
               one["put_rtt_ms"]["p99"], PUT_P99_TARGET_MS, "ms"),
    ]
    if "two_workers" in results:
        targets.append(target("revocation PUT round trip p99, two workers, forwarded to the owner",
                              results["two_workers"]["put_rtt_forwarded_ms"]["p99"], PUT_P99_TARGET_MS, "ms"))
    return {
        "name": "consent",
        "settings": {"quick": quick, "customers": n_customers, "decodes": n_decodes,
                     "scenarios": ["one_worker", "two_workers"][: len(scenarios)],
                     "events_per_customer": EVENTS_PER_CUSTOMER, "scorer": "fallback (no registry)",
                     "revocation": {"flags": {"personalize": False}}, "partitions": 4},
        "results": results,
        "targets": targets,
    }


def main() -> None:
    cli(run, "consent benchmark: revocation-to-effect latency and TCF decoder speed")


if __name__ == "__main__":
    main()
